#!/usr/bin/env bash
# `make test`: unit tests, then the end-to-end tests against a local control plane that this
# script brings up and always takes down again, also when a test fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. tests/cluster/lib.sh

echo "== unit tests"
cargo test -p colony-operator
cargo build -p colony-operator

echo "== local control plane"
tests/cluster/up.sh
trap 'tests/cluster/down.sh' EXIT

echo "== end-to-end tests"
export KUBECONFIG="$KUBECONFIG_PATH" PATH="$BIN_DIR:$PATH"
cargo test -p colony-e2e -- --test-threads=4
