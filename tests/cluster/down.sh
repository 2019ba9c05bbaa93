#!/usr/bin/env bash
# Stops and deletes the local control plane (and the real node, if any). Safe to run when nothing is running.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export PATH="$BIN_DIR:$PATH"
# The real node first (its pods are deleted through the API while that still answers).
"$CLUSTER_DIR/node-down.sh"
if command -v kwokctl >/dev/null && kwokctl get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  kwokctl delete cluster --name "$CLUSTER_NAME" >/dev/null 2>&1 || log "kwokctl delete cluster reported an error"
  log "cluster '$CLUSTER_NAME' deleted"
else
  log "no cluster '$CLUSTER_NAME' to delete"
fi
rm -f "$KUBECONFIG_PATH"
