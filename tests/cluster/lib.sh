# Shared settings for the cluster scripts. Sourced, not run.
set -euo pipefail
CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_DIR/../.." && pwd)"
# shellcheck source=versions.env
. "$CLUSTER_DIR/versions.env"
CACHE_KEY="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}_colonies-${COLONIES_VERSION}"
CACHE_ROOT="${COLONY_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/colony-operator}"
BIN_DIR="$CACHE_ROOT/$CACHE_KEY/bin"
CLUSTER_NAME="${COLONY_CLUSTER_NAME:-colony}"
STATE_DIR="$REPO_ROOT/target/cluster"
KUBECONFIG_PATH="$STATE_DIR/kubeconfig"
export KWOK_WORKDIR="$STATE_DIR/kwok"
log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }
