# Where tests/tools/build.sh puts its binaries. Sourced, not run.
set -euo pipefail
TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$TOOLS_DIR/versions.env"
TOOLS_CACHE_ROOT="${COLONY_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/colony-operator}"
TOOLS_BIN_DIR="$TOOLS_CACHE_ROOT/tools_promtool-${PROMETHEUS_VERSION}-nosd_actionlint-${ACTIONLINT_VERSION}/bin"
