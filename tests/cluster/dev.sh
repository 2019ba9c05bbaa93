#!/usr/bin/env bash
# `make dev`: the local control plane, the CRDs, the examples and the operator in the
# foreground.
#
# On a machine that can run the real node (root, the Debian packages containerd, runc,
# containernetworking-plugins, iptables, iproute2, buildah and postgresql): a real Colony OS.
# PostgreSQL and the colonies server run in real containers on the real node
# (examples/real-node/), the operator (on the host) deploys and probes the server, the colony,
# the bee's executor and a user are set up with the colonies CLI, and a FinanceBee whose
# container is a real executor (tests/cluster/node/bee) takes work.
#
# Elsewhere, or with REAL_NODE=0: the kwok tier only, with examples/ (no container runs on a
# kwok node, so the example ColonyServer never becomes healthy), and a message naming what is
# missing for the real one.
. "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"
start=$SECONDS
export PATH="$BIN_DIR:$PATH"
export KUBECONFIG="$KUBECONFIG_PATH"
cargo_target="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
operator=(env RUST_LOG="${RUST_LOG:-info,kube=warn}" "$cargo_target/debug/colony-operator" run --admin-addr 127.0.0.1:8080)

# What the real Colony OS needs that this machine lacks, one a line (the kubelet and
# kube-proxy are not among them: up.sh builds them).
real_missing() {
  node_missing | grep -vF "$BIN_DIR/" || true
  compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null \
    || echo "the PostgreSQL server in /usr/lib/postgresql/*/bin (apt-get install -y postgresql)"
}

apply_crds() {
  kubectl apply --server-side --force-conflicts -f "$REPO_ROOT/crds/" >/dev/null
  kubectl wait --for=condition=Established -f "$REPO_ROOT/crds/" --timeout=60s >/dev/null
}

missing=
if [ "${REAL_NODE:-}" = 0 ]; then
  kwok_only="REAL_NODE=0"
else
  missing=$(real_missing | paste -sd, - | sed 's/,/, /g')
  kwok_only="no real Colony OS on this machine; missing: $missing (as root: apt-get install -y containerd runc containernetworking-plugins iptables iproute2 buildah postgresql)"
fi

if [ "${REAL_NODE:-}" = 0 ] || [ -n "$missing" ]; then
  log "make dev: $kwok_only"
  log "make dev: the kwok tier only, with examples/: no container runs on a kwok node, so the example ColonyServer fails its health checks and its fallback turns on"
  "$CLUSTER_DIR/up.sh"
  (cd "$REPO_ROOT" && cargo build -q -p colony-operator) || die "step 'cargo build' failed"
  apply_crds
  kubectl apply --server-side --force-conflicts -f "$REPO_ROOT/examples/" >/dev/null
  exec "${operator[@]}"
fi

REAL_NODE=1 "$CLUSTER_DIR/up.sh"

# --- the PostgreSQL image: the host's Debian PostgreSQL server FROM scratch (rebuilt when
# its sources or the host's PostgreSQL change)
images="$STATE_DIR/images"
pg_bin=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -1)
pg_root=${pg_bin%/bin}
pg_version=${pg_root##*/}
if [ ! -f "$images/postgres.tar" ] || [ -n "$(find "$CLUSTER_DIR/node/postgres" "$pg_bin/postgres" -newer "$images/postgres.tar")" ]; then
  t=$SECONDS
  ctx="$images/postgres"
  rm -rf "$ctx"
  mkdir -p "$ctx/rootfs"/{bin,etc,tmp,var/lib/postgresql}
  rootfs="$ctx/rootfs"
  (cd "$CLUSTER_DIR/node/postgres" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags '-s -w' -o "$rootfs/pg-entry" .) \
    || die "step 'postgres image': go build failed"
  # (tar, not cp --parents: the paths keep their place under rootfs/, symlinks followed)
  copy() { tar -C / -chf - "${@#/}" | tar -C "$rootfs" -xf -; }
  copy "$pg_bin/postgres" "$pg_bin/initdb" "$pg_root/lib" "/usr/share/postgresql/$pg_version" /usr/share/zoneinfo
  rm -rf "$rootfs$pg_root/lib/bitcode" "$rootfs$pg_root"/lib/llvmjit*
  cp -L /bin/dash "$rootfs/bin/sh"
  # The shared libraries all of it loads, and the dynamic loader.
  for f in "$rootfs$pg_bin"/* "$rootfs$pg_root"/lib/*.so /bin/dash; do
    ldd "$f" 2>/dev/null | awk '$3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
  done | sort -u | while read -r lib; do copy "$lib"; done
  echo "postgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/false" > "$rootfs/etc/passwd"
  echo "postgres:x:999:" > "$rootfs/etc/group"
  chmod 1777 "$rootfs/tmp"
  chown 999:999 "$rootfs/var/lib/postgresql"
  build_image localhost/postgres:local "$CLUSTER_DIR/node/postgres/Containerfile" "$ctx" "$images/postgres.tar" --build-arg "PGBIN=$pg_bin"
  log "postgres image (PostgreSQL $pg_version) built in $((SECONDS - t))s: $(du -h "$images/postgres.tar" | cut -f1)"
fi
node_import "$images/postgres.tar"

# --- the operator, the CRDs, the examples for the real node
(cd "$REPO_ROOT" && cargo build -q -p colony-operator) || die "step 'cargo build' failed"
apply_crds
kubectl apply --server-side --force-conflicts -f "$REPO_ROOT/examples/real-node/" >/dev/null
log "examples/real-node applied; starting the operator (log below)"
"${operator[@]}" &
op_pid=$!
trap 'kill "$op_pid" 2>/dev/null || true; wait "$op_pid" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM

wait_until() { # DESCRIPTION SECONDS COMMAND...: polls COMMAND every second
  local what=$1 limit=$2 i
  shift 2
  for ((i = 0; i < limit; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$op_pid" 2>/dev/null || die "the operator exited while waiting for $what"
    sleep 1
  done
  die "no $what within ${limit}s"
}
condition_true() { # KIND NAME TYPE
  [ "$(kubectl get "$1" "$2" -o jsonpath="{.status.conditions[?(@.type==\"$3\")].status}")" = True ]
}
secret() { kubectl get secret "$1" -o "jsonpath={.data.${2//./\\.}}" | base64 -d; }

# The operator's Service for the server; its ClusterIP becomes the endpoint the operator
# probes and the bee's COLONIES_SERVER_HOST (no cluster DNS here).
wait_until "Service colonies-server" 60 kubectl get service colonies-server
ip=$(kubectl get service colonies-server -o jsonpath='{.spec.clusterIP}')
port=$(kubectl get colonyserver colonies-server -o jsonpath='{.spec.port}')
kubectl patch colonyserver colonies-server --type merge -p "{\"spec\":{\"endpoint\":\"http://$ip:$port\"}}" >/dev/null
# The server answers (its pod is Ready: /health); the operator's probes, which also call the
# API as a colony user, pass only once the colony is set up below.
server_ready() {
  kubectl get pods -l app.kubernetes.io/instance=colonies-server \
    -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}' | grep -qw True
}
wait_until "Ready pod of the colonies server" 180 server_ready

# The colony, the bee's executor and a user, as the runbook's setup does: signed by the
# server owner and the colony owner (keys from examples/real-node/secrets.yaml). Each is
# added only when the server does not know it yet.
colony=$(kubectl get financebee finance-bee -o jsonpath='{.spec.colonyName}')
executor_type=$(kubectl get financebee finance-bee -o jsonpath='{.spec.executorType}')
server_key=$(secret colonies-server-key prvkey)
colony_key=$(secret colony-dev-keys colony.prvkey)
user_key=$(secret colony-dev-keys user.prvkey)
executor_key=$(secret finance-bee-executor-key prvkey)
id_of() { colonies security id --prvkey "$1" 2>&1 | sed -n 's/.*Id=\([0-9a-f]*\).*/\1/p'; }
cli() { env COLONIES_SERVER_HOST="$ip" COLONIES_SERVER_PORT="$port" COLONIES_TLS=false COLONIES_COLONY_NAME="$colony" "$@"; }
as_server=(COLONIES_SERVER_PRVKEY="$server_key" COLONIES_PRVKEY="$server_key")
if ! cli "${as_server[@]}" colonies colony ls 2>/dev/null | grep -qw -- "$colony"; then
  cli "${as_server[@]}" colonies colony add --name "$colony" --colonyid "$(id_of "$colony_key")" >/dev/null \
    || die "step 'colony setup': adding the colony '$colony' failed"
fi
if ! cli COLONIES_PRVKEY="$executor_key" colonies executor ls >/dev/null 2>&1; then
  cli COLONIES_COLONY_PRVKEY="$colony_key" COLONIES_PRVKEY="$colony_key" colonies executor add --name finance-bee \
    --type "$executor_type" --executorid "$(id_of "$executor_key")" --approve >/dev/null \
    || die "step 'colony setup': adding the bee's executor failed"
fi
if ! cli COLONIES_PRVKEY="$user_key" colonies executor ls >/dev/null 2>&1; then
  cli COLONIES_COLONY_PRVKEY="$colony_key" COLONIES_PRVKEY="$colony_key" colonies user add --name dev \
    --email dev@localhost --phone 0 --userid "$(id_of "$user_key")" >/dev/null \
    || die "step 'colony setup': adding the user failed"
fi
wait_until "healthy ColonyServer" 120 condition_true colonyserver colonies-server Healthy
log "ColonyServer colonies-server Healthy at http://$ip:$port after $((SECONDS - start))s"
wait_until "Ready FinanceBee" 120 condition_true financebee finance-bee Ready
# The fallback went on while the server was starting; it goes off after spec.fallback.recoverAfter.
use_colony_os() { [ "$(kubectl get configmap colonies-server-fallback -o jsonpath='{.data.USE_COLONY_OS}')" = true ]; }
wait_until "USE_COLONY_OS=true (fallback off)" 120 use_colony_os
log "a healthy Colony OS in $((SECONDS - start))s: colony '$colony' on http://$ip:$port, FinanceBee finance-bee Ready, USE_COLONY_OS=true. In another shell:"
log "  eval \"\$(tests/cluster/dev-env.sh)\"   # KUBECONFIG, PATH, and the colonies CLI as the colony's dev user"
log "  kubectl get colony   # then README.md, 'make dev': submit work to the bee, and break it"
wait "$op_pid"
