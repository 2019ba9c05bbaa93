#!/usr/bin/env bash
# Adds one real node to the running local control plane (`make cluster-up REAL_NODE=1`):
# containerd with a private config, root, state and socket; runc; a bridge CNI network; a real
# kubelet and kube-proxy (iptables mode) built from the pinned Kubernetes module. The node is
# tainted, so only pods that tolerate `colony.zyeute.io/real-node` land there; the kwok
# controller keeps managing only the fake nodes. `node-down.sh` undoes all of it.
. "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"
start=$SECONDS

node_preflight
export PATH="$BIN_DIR:$PATH"
kc() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }
kc get --raw /readyz >/dev/null 2>&1 || die "step 'real node': the local control plane does not answer (run tests/cluster/up.sh)"

if [ -f "$NODE_DIR/up" ] && node_running && kc get node "$NODE_NAME" >/dev/null 2>&1; then
  log "real node '$NODE_NAME' already running"
  exit 0
fi
if [ -e "$NODE_DIR" ] || [ -e "$NODE_RUN" ]; then
  log "a stale real node is left over; tearing it down first"
  "$CLUSTER_DIR/node-down.sh"
fi

log "adding the real node '$NODE_NAME'"
mkdir -p "$NODE_DIR"/{containerd,cni/net.d,cni/ipam,kubelet,logs,pods} "$NODE_RUN"
# What teardown restores: the kernel settings the kubelet, the bridge plugin and kube-proxy may
# change, and which fixed host paths existed before.
for s in "${NODE_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done > "$NODE_DIR/sysctls"
for p in "${NODE_FIXED_PATHS[@]}"; do [ -e "$p" ] && echo "$p"; done > "$NODE_DIR/existing-paths" || true

# The cluster must have been made for a real node (up.sh REAL_NODE=1): the kwok controller
# manages only the fake nodes, and the API server reaches kubelets by their InternalIP.
grep -q 'manage-nodes-with-annotation-selector' "$KWOK_WORKDIR/clusters/$CLUSTER_NAME/kwok.yaml" 2>/dev/null \
  || die "step 'real node': cluster '$CLUSTER_NAME' was not made for a real node (REAL_NODE=1 tests/cluster/up.sh recreates it)"

# --- containerd
cat > "$NODE_DIR/containerd/config.toml" <<EOF
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_RUN/containerd"
oom_score = 0
[grpc]
  address = "$NODE_SOCK"
[ttrpc]
  address = "$NODE_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which this machine's root lacks.
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$NODE_DIR/cni/net.d"
    max_conf_num = 1
EOF
cat > "$NODE_DIR/cni/net.d/10-colony.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "colony-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$POD_CIDR" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$NODE_DIR/cni/ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "loopback" }
  ]
}
EOF
# The bridge exists from the start, with the pods' gateway address, so host services for
# the pods (a test's PostgreSQL) can listen on it; the bridge plugin adopts it.
ip link add "$NODE_BRIDGE" type bridge 2>/dev/null || true
ip addr replace "$NODE_GATEWAY/${POD_CIDR#*/}" dev "$NODE_BRIDGE"
ip link set "$NODE_BRIDGE" up
setsid containerd --config "$NODE_DIR/containerd/config.toml" >"$NODE_DIR/logs/containerd.log" 2>&1 < /dev/null &
echo $! > "$NODE_DIR/containerd.pid"
for _ in $(seq 100); do
  ctr --address "$NODE_SOCK" version >/dev/null 2>&1 && break
  kill -0 "$(cat "$NODE_DIR/containerd.pid")" 2>/dev/null || { tail -20 "$NODE_DIR/logs/containerd.log" >&2; die "step 'containerd' failed to start (log: $NODE_DIR/logs/containerd.log)"; }
  sleep 0.1
done
ctr --address "$NODE_SOCK" version >/dev/null 2>&1 || die "step 'containerd': no answer on $NODE_SOCK"

# --- the sandbox image: a static binary FROM scratch, built here (no registry is reachable)
# (kept in target/cluster/images, rebuilt when its source changes)
images="$STATE_DIR/images"
mkdir -p "$images/pause"
if [ ! -f "$images/pause.tar" ] || [ -n "$(find "$CLUSTER_DIR/node/pause" -newer "$images/pause.tar")" ]; then
  (cd "$CLUSTER_DIR/node/pause" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags '-s -w' -o "$images/pause/pause" .) \
    || die "step 'pause image': go build failed"
  build_image "$PAUSE_IMAGE" "$CLUSTER_DIR/node/pause/Containerfile" "$images/pause" "$images/pause.tar"
fi
node_import "$images/pause.tar"

# --- test images, the same way (static binaries FROM scratch)
mkdir -p "$images/testbee" "$images/colonies"
if [ ! -f "$images/testbee.tar" ] || [ -n "$(find "$CLUSTER_DIR/node/testbee" -newer "$images/testbee.tar")" ]; then
  (cd "$CLUSTER_DIR/node/testbee" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags '-s -w' -o "$images/testbee/testbee" .) \
    || die "step 'testbee image': go build failed"
  build_image "$TESTBEE_CRASH_IMAGE" "$CLUSTER_DIR/node/testbee/Containerfile" "$images/testbee" "$images/testbee-crash.tar" --build-arg BEE_EXIT_CODE=1
  build_image "$TESTBEE_IMAGE" "$CLUSTER_DIR/node/testbee/Containerfile" "$images/testbee" "$images/testbee.tar"
fi
if [ ! -f "$images/bee.tar" ] || [ -n "$(find "$CLUSTER_DIR/node/bee" -newer "$images/bee.tar")" ]; then
  mkdir -p "$images/bee"
  (cd "$CLUSTER_DIR/node/bee" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags '-s -w' -o "$images/bee/bee" .) \
    || die "step 'bee image': go build failed (the colonies Go module at $COLONIES_VERSION must be in the Go module cache or reachable through the module proxy)"
  build_image "$BEE_IMAGE" "$CLUSTER_DIR/node/bee/Containerfile" "$images/bee" "$images/bee.tar"
fi
if [ ! -f "$images/colonies.tar" ] || [ "$BIN_DIR/colonies" -nt "$images/colonies.tar" ] || [ "$CLUSTER_DIR/node/colonies/Containerfile" -nt "$images/colonies.tar" ]; then
  [ -x "$BIN_DIR/colonies" ] || die "step 'colonies image': no $BIN_DIR/colonies (tests/cluster/build.sh colonies)"
  cp "$BIN_DIR/colonies" "$images/colonies/colonies"
  mkdir -p "$images/colonies/tmp"
  build_image "$COLONIES_IMAGE" "$CLUSTER_DIR/node/colonies/Containerfile" "$images/colonies" "$images/colonies.tar"
  rm -f "$images/colonies/colonies"
fi
for t in testbee testbee-crash bee colonies; do node_import "$images/$t.tar"; done

# --- kubelet
node_ip=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
[ -n "$node_ip" ] || node_ip=$(hostname -I | awk '{print $1}')
[ -n "$node_ip" ] || die "step 'kubelet': no IPv4 address for the node"
echo "$node_ip" > "$NODE_DIR/node-ip"
cat > "$NODE_DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
failCgroupV1: false
protectKernelDefaults: false
readOnlyPort: 0
port: $KUBELET_PORT
healthzPort: 0
address: $node_ip
podLogsDir: $NODE_DIR/pods
staticPodPath: ""
containerRuntimeEndpoint: unix://$NODE_SOCK
# The API server has no kubelet client certificate (kwokctl gives it none).
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 1Mi
  nodefs.available: 1%
  imagefs.available: 1%
registerWithTaints:
  - key: $NODE_TAINT
    value: "true"
    effect: NoSchedule
serializeImagePulls: false
maxPods: 50
EOF
setsid kubelet \
  --config "$NODE_DIR/kubelet/config.yaml" \
  --kubeconfig "$KUBECONFIG_PATH" \
  --root-dir "$NODE_DIR/kubelet/root" \
  --hostname-override "$NODE_NAME" \
  --node-ip "$node_ip" \
  --node-labels "$NODE_TAINT=true" \
  --v 1 >"$NODE_DIR/logs/kubelet.log" 2>&1 < /dev/null &
echo $! > "$NODE_DIR/kubelet.pid"
for _ in $(seq 120); do
  [ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] && break
  kill -0 "$(cat "$NODE_DIR/kubelet.pid")" 2>/dev/null || { tail -20 "$NODE_DIR/logs/kubelet.log" >&2; die "step 'kubelet' exited (log: $NODE_DIR/logs/kubelet.log)"; }
  sleep 0.5
done
[ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] \
  || { tail -20 "$NODE_DIR/logs/kubelet.log" >&2; die "step 'kubelet': node $NODE_NAME not Ready within 60 s (log: $NODE_DIR/logs/kubelet.log)"; }

# --- kube-proxy (iptables mode): makes ClusterIP Services, the in-cluster API address
# included, work from real pods. It changes no kernel setting: no conntrack tuning, no
# localhost node ports.
cat > "$NODE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
bindAddress: $node_ip
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
clientConnection:
  kubeconfig: $KUBECONFIG_PATH
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
iptables:
  localhostNodePorts: false
  masqueradeAll: false
nodePortAddresses: ["$node_ip/32"]
EOF
setsid kube-proxy --config "$NODE_DIR/kube-proxy.yaml" --v 1 >"$NODE_DIR/logs/kube-proxy.log" 2>&1 < /dev/null &
echo $! > "$NODE_DIR/kube-proxy.pid"
for _ in $(seq 60); do
  iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -q 'default/kubernetes:https' && break
  kill -0 "$(cat "$NODE_DIR/kube-proxy.pid")" 2>/dev/null || { tail -20 "$NODE_DIR/logs/kube-proxy.log" >&2; die "step 'kube-proxy' exited (log: $NODE_DIR/logs/kube-proxy.log)"; }
  sleep 0.5
done
iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -q 'default/kubernetes:https' \
  || { tail -20 "$NODE_DIR/logs/kube-proxy.log" >&2; die "step 'kube-proxy': no rule for the kubernetes Service within 30 s"; }

touch "$NODE_DIR/up"
log "real node '$NODE_NAME' Ready in $((SECONDS - start))s (containerd socket $NODE_SOCK; import images with tests/cluster/node-import.sh FILE.tar)"
