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

echo "== local control plane, with the real node (containerd + kubelet + kube-proxy)"
# What the host looks like before the real node exists; teardown must put it back.
mkdir -p "$STATE_DIR"
tests/cluster/host-state.sh > "$STATE_DIR/host-before"
start=$SECONDS
REAL_NODE=1 tests/cluster/up.sh
echo "cluster and real node up in $((SECONDS - start))s"
trap 'tests/cluster/down.sh; rm -f "$log"' EXIT

echo "== checking tools (promtool, actionlint)"
tools_bin=$(tests/tools/build.sh)

echo "== end-to-end tests"
export KUBECONFIG="$KUBECONFIG_PATH" PATH="$BIN_DIR:$tools_bin:$PATH"
rm -rf "$REPO_ROOT/target/chaos"
cargo test -p colony-e2e -- --test-threads=4 2>&1 | tee -a "$log"

echo "== fault suite (short form; \`make chaos\` runs the long form)"
tests/chaos-table.sh 2>&1 | tee -a "$log"

echo "== teardown"
trap 'rm -f "$log"' EXIT
start=$SECONDS
tests/cluster/down.sh
echo "cluster and real node down in $((SECONDS - start))s"
host_ok=true
tests/cluster/host-state.sh check "$STATE_DIR/host-before" 2>&1 | tee -a "$log" || host_ok=false

# One closing line for the whole run (unit, end-to-end, and the host check after teardown).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     /^host state after real-node teardown: PASS/ { p++ } /^host state after real-node teardown: FAIL/ { f++ }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
$host_ok
