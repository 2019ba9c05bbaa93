#!/usr/bin/env bash
# `make test`: unit tests, then the end-to-end tests against a local control plane that this
# script brings up and always takes down again, also when a test fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. tests/cluster/lib.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== unit tests"
cargo test -p colony-operator -p kubectl-colony 2>&1 | tee -a "$log"
cargo build -p colony-operator -p kubectl-colony

echo "== image"
tests/image/build.sh

echo "== local control plane"
tests/cluster/up.sh
trap 'tests/cluster/down.sh; rm -f "$log"' EXIT

echo "== checking tools (promtool, actionlint)"
tools_bin=$(tests/tools/build.sh)

echo "== end-to-end tests"
export KUBECONFIG="$KUBECONFIG_PATH" PATH="$BIN_DIR:$tools_bin:$PATH"
rm -rf "$REPO_ROOT/target/chaos"
cargo test -p colony-e2e -- --test-threads=4 2>&1 | tee -a "$log"

echo "== fault suite (short form; \`make chaos\` runs the long form)"
tests/chaos-table.sh 2>&1 | tee -a "$log"

# One closing line for the whole run (unit and end-to-end).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
