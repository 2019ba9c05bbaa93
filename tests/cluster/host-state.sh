#!/usr/bin/env bash
# Prints what a real node changes on the host, normalized so that two snapshots compare with
# diff: iptables rules and chains (no counters), network links, network namespaces, mounts,
# the node's processes, the kernel settings it may change, and its fixed host paths.
# `host-state.sh check BEFORE` compares the host now with an earlier snapshot: one PASS or
# FAIL line, and the differences.
. "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

snapshot() {
  set +e +o pipefail # a section with nothing in it is an empty section, not an error
  local t
  for t in filter nat mangle raw; do
    echo "## iptables $t"
    iptables-save -t "$t" 2>/dev/null | grep -v '^#' | sed 's/ \[[0-9]*:[0-9]*\]$//' | sort
  done
  echo "## links"
  ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
  echo "## netns"
  ip netns list 2>/dev/null | awk '{print $1}' | sort
  echo "## mounts"
  # Where the node mounts: its own directories, the kubelet's and containerd's, the netns.
  awk '{print $5, $(NF-2)}' /proc/self/mountinfo \
    | { grep -E "^($NODE_DIR|$NODE_RUN|/run/containerd|/var/lib/kubelet|/var/lib/cni|/run/netns|/var/run/netns)" || true; } | sort
  echo "## processes"
  # Only this tier's processes (other clusters on the machine run their own control planes).
  ps -eo comm= | grep -E '^(containerd|containerd-shim|containerd-shim-runc-v2|kubelet|kube-proxy|pause)$' | sort
  echo "## sysctls"
  for s in "${NODE_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s" 2>/dev/null || echo absent)"; done
  echo "## paths"
  for p in "${NODE_FIXED_PATHS[@]}" "$NODE_RUN" "$NODE_DIR"; do [ -e "$p" ] && echo "$p"; done
  return 0
}

case "${1:-snapshot}" in
  snapshot) snapshot ;;
  check)
    [ -f "${2:-}" ] || die "usage: host-state.sh check BEFORE-SNAPSHOT"
    if diff -u "$2" <(snapshot) > "$STATE_DIR/host-state.diff"; then
      echo "host state after real-node teardown: PASS (iptables, links, netns, mounts, processes, sysctls, paths as before)"
    else
      echo "host state after real-node teardown: FAIL; differences (- before, + after):"
      grep -E '^[-+][^-+]' "$STATE_DIR/host-state.diff"
      exit 1
    fi ;;
  *) die "usage: host-state.sh [snapshot | check BEFORE-SNAPSHOT]" ;;
esac
