#!/usr/bin/env bash
# Removes the real node and leaves the host as it was before node-up.sh: pods are deleted
# through the API first (so the CNI plugins release their addresses and rules), then the
# kubelet stops, then containerd (its containers and shims with it); kube-proxy removes its
# iptables rules; the bridge, the node's mounts and directories go; kernel settings are put
# back. Safe to run when no real node exists.
. "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"
start=$SECONDS
export PATH="$BIN_DIR:$PATH"
if [ ! -e "$NODE_DIR" ] && [ ! -e "$NODE_RUN" ]; then
  log "no real node to remove"
  exit 0
fi
kc() { kubectl --kubeconfig "$KUBECONFIG_PATH" --request-timeout=10s "$@"; }
api=false
[ -f "$KUBECONFIG_PATH" ] && kc get --raw /readyz >/dev/null 2>&1 && api=true

stop_pid() { # name, grace seconds
  local f="$NODE_DIR/$1.pid" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $(( $2 * 10 ))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# 1. Pods away through the API, while the kubelet still runs (it stops the containers and
#    CNI DEL releases each pod's address and port mappings).
if $api && [ -f "$NODE_DIR/kubelet.pid" ] && kill -0 "$(cat "$NODE_DIR/kubelet.pid")" 2>/dev/null; then
  kc cordon "$NODE_NAME" >/dev/null 2>&1 || true
  kc delete pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" --wait=false >/dev/null 2>&1 || true
  for _ in $(seq 60); do
    [ -z "$(kc get pods -A --field-selector "spec.nodeName=$NODE_NAME" -o name 2>/dev/null)" ] && break
    sleep 0.5
  done
fi
# 2. kube-proxy, then its rules; 3. the kubelet; the Node object.
stop_pid kube-proxy 5
if [ -x "$BIN_DIR/kube-proxy" ]; then
  "$BIN_DIR/kube-proxy" --cleanup >"$NODE_DIR/logs/kube-proxy-cleanup.log" 2>&1 || log "kube-proxy --cleanup reported an error"
fi
stop_pid kubelet 10
$api && kc delete node "$NODE_NAME" --wait=false >/dev/null 2>&1 || true
# 4. Whatever sandboxes are left (the API was gone, or a pod did not finish): stop them
#    through the CRI, so CNI DEL runs, then containerd.
if [ -S "$NODE_SOCK" ] && command -v crictl >/dev/null; then
  crictl --runtime-endpoint "unix://$NODE_SOCK" rmp -fa >/dev/null 2>&1 || true
fi
if [ -S "$NODE_SOCK" ]; then
  for c in $(ctr --address "$NODE_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$NODE_SOCK" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
  done
fi
stop_pid containerd 10
# Shims outlive containerd; they belong to this node when their socket or state is ours.
for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $NODE_SOCK" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
sleep 0.2

# 5. Host leftovers: the kubelet's iptables chains, CNI's nat chains, the bridge, mounts.
for t in filter nat mangle; do
  for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT KUBE-PROXY-CANARY; do
    iptables -t "$t" -S "$chain" >/dev/null 2>&1 || continue
    while read -r rule; do
      eval "iptables -t $t ${rule/-A /-D }" 2>/dev/null || true
    done < <(iptables -t "$t" -S | grep -E -- "-j $chain( |$)")
    iptables -t "$t" -F "$chain" 2>/dev/null || true
    iptables -t "$t" -X "$chain" 2>/dev/null || true
  done
done
for chain in $(iptables -t nat -S 2>/dev/null | sed -n 's/^-N \(CNI-[0-9a-f]*\)$/\1/p'); do
  while read -r rule; do eval "iptables -t nat ${rule/-A /-D }" 2>/dev/null || true; done \
    < <(iptables -t nat -S | grep -E -- "-j $chain( |$)")
  iptables -t nat -F "$chain" 2>/dev/null || true
  iptables -t nat -X "$chain" 2>/dev/null || true
done
ip link del "$NODE_BRIDGE" >/dev/null 2>&1 || true
for m in $(awk '{print $5}' /proc/self/mountinfo | grep -E "^($NODE_DIR|$NODE_RUN|/run/containerd|/var/lib/kubelet|/run/netns/cni-)" | sort -r || true); do
  umount -l "$m" 2>/dev/null || true
done
# 6. Kernel settings and fixed host paths back as they were.
if [ -f "$NODE_DIR/sysctls" ]; then
  while IFS='=' read -r k v; do
    [ "$(sysctl -n "$k" 2>/dev/null)" = "$v" ] || sysctl -q -w "$k=$v" >/dev/null 2>&1 || log "could not restore $k=$v"
  done < "$NODE_DIR/sysctls"
fi
if [ -f "$NODE_DIR/existing-paths" ]; then
  for p in "${NODE_FIXED_PATHS[@]}"; do
    grep -qx "$p" "$NODE_DIR/existing-paths" || rm -rf "$p"
  done
fi
# The node's logs stay for a look afterwards (target/cluster/node-logs).
rm -rf "$STATE_DIR/node-logs"
[ -d "$NODE_DIR/logs" ] && mv "$NODE_DIR/logs" "$STATE_DIR/node-logs"
rm -rf "$NODE_RUN" "$NODE_DIR"
log "real node '$NODE_NAME' removed in $((SECONDS - start))s"
