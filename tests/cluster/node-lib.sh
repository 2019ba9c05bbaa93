# Shared settings of the real node scripts (node-up.sh, node-down.sh, node-import.sh,
# host-state.sh). Sourced, not run. One real node per machine: the fixed host paths below
# (/var/lib/kubelet/device-plugins, /var/lib/cni, /run/containerd) cannot be moved.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
NODE_NAME=real-node
NODE_TAINT=colony.zyeute.io/real-node
NODE_DIR="$STATE_DIR/node"
# Sockets have a short length limit, so runtime state lives under /run.
NODE_RUN="/run/colony-node-$CLUSTER_NAME"
NODE_SOCK="$NODE_RUN/containerd.sock"
NODE_BRIDGE=colnode0
POD_CIDR=10.244.77.0/24
# The bridge's address: the pods' gateway, and the host as the pods see it.
NODE_GATEWAY=10.244.77.1
KUBELET_PORT=10250
KUBE_PROXY_HEALTHZ_PORT=10256
KUBE_PROXY_METRICS_PORT=10249
PAUSE_IMAGE=localhost/pause:local
# Test images (tests/cluster/node/): a workload that logs its key's fingerprint and runs, the
# same crashing at once (exit 1), and the real ColonyOS server.
TESTBEE_IMAGE=localhost/colony-testbee:1
TESTBEE_CRASH_IMAGE=localhost/colony-testbee:crash
COLONIES_IMAGE="localhost/colonies:$COLONIES_VERSION"
# A real ColonyOS executor (node/bee: the colonies Go SDK at COLONIES_VERSION) that assigns
# processes and closes them successful: the FinanceBee of `make dev` and of the e2e tests.
BEE_IMAGE=localhost/colony-bee:1
CNI_BIN_DIR="${CNI_BIN_DIR:-/usr/lib/cni}"
# Kernel settings the kubelet (protectKernelDefaults: false), the bridge plugin (isGateway)
# or kube-proxy may change; teardown puts back what was there.
NODE_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
  net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables)
NODE_FIXED_PATHS=(/var/lib/kubelet /var/lib/cni /run/containerd /opt/cni /etc/cni/net.d /var/log/pods /var/log/containers)

# Prints, one a line, what the real node needs that this machine lacks.
node_missing() {
  [ "$(id -u)" = 0 ] || echo "root (the real node runs containerd, runc and a kubelet as root)"
  for c in containerd ctr runc iptables iptables-save ip buildah go; do
    command -v "$c" >/dev/null || echo "$c"
  done
  for p in bridge host-local loopback portmap; do
    [ -x "$CNI_BIN_DIR/$p" ] || echo "CNI plugin $CNI_BIN_DIR/$p"
  done
  for b in kubelet kube-proxy; do
    [ -x "$BIN_DIR/$b" ] || echo "$BIN_DIR/$b (tests/cluster/build.sh node)"
  done
}

# Names everything the real node needs that this machine lacks, and stops.
node_preflight() {
  local missing
  missing=$(node_missing | paste -sd, - | sed 's/,/, /g')
  if [ -n "$missing" ]; then
    die "the real node cannot run on this machine; missing: $missing. Debian packages: apt-get install -y containerd runc containernetworking-plugins iptables iproute2 buildah"
  fi
}

node_running() {
  local f
  for f in containerd kubelet kube-proxy; do
    [ -f "$NODE_DIR/$f.pid" ] && kill -0 "$(cat "$NODE_DIR/$f.pid")" 2>/dev/null || return 1
  done
}

# build_image NAME CONTAINERFILE CONTEXT ARCHIVE [BUILDAH-ARGS...]: buildah (no Docker
# engine), then a docker-archive for `ctr images import`.
build_image() {
  buildah bud --quiet --isolation chroot --layers=false "${@:5}" -t "$1" -f "$2" "$3" >/dev/null \
    || die "step 'image $1': buildah bud failed"
  rm -f "$4"
  buildah push --quiet "$1" "docker-archive:$4:$1" >/dev/null || die "step 'image $1': buildah push failed"
}

node_import() {
  ctr --address "$NODE_SOCK" -n k8s.io images import "$1" >/dev/null \
    || die "step 'import $1' into the real node's containerd failed"
}
