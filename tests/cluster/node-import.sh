#!/usr/bin/env bash
# Imports image archives (docker-archive or oci-archive .tar) into the real node's containerd,
# so pods with `imagePullPolicy: Never` can use them.
. "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"
[ $# -gt 0 ] || die "usage: node-import.sh FILE.tar..."
[ -S "$NODE_SOCK" ] || die "no real node is running (make cluster-up REAL_NODE=1)"
for f in "$@"; do
  [ -f "$f" ] || die "no image archive $f"
  node_import "$f"
  log "imported $f into the real node"
done
