#!/usr/bin/env bash
# Prints the shell settings for working with `make dev`'s cluster from another shell:
#   eval "$(tests/cluster/dev-env.sh)"
# KUBECONFIG, PATH (kubectl and the colonies CLI of the local control plane's bin dir) and,
# when the real Colony OS of examples/real-node runs, the colonies CLI's settings with the
# dev user's key (COLONIES_PRVKEY), so `colonies function submit` and `colonies process ...`
# work as that colony user.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PATH="$BIN_DIR:$PATH"
echo "export KUBECONFIG=$KUBECONFIG_PATH PATH=$BIN_DIR:\$PATH"
kc() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@" 2>/dev/null; }
ip=$(kc get service colonies-server -o jsonpath='{.spec.clusterIP}') || exit 0
port=$(kc get colonyserver colonies-server -o jsonpath='{.spec.port}') || exit 0
colony=$(kc get financebee finance-bee -o jsonpath='{.spec.colonyName}') || exit 0
user_key=$(kc get secret colony-dev-keys -o jsonpath='{.data.user\.prvkey}' | base64 -d) || exit 0
[ -n "$ip" ] && [ -n "$user_key" ] || exit 0
echo "export COLONIES_SERVER_HOST=$ip COLONIES_SERVER_PORT=$port COLONIES_TLS=false COLONIES_COLONY_NAME=$colony COLONIES_PRVKEY=$user_key"
