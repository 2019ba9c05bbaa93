#!/usr/bin/env bash
# Starts the local control plane (idempotent: a running cluster is reused) and writes its
# kubeconfig to target/cluster/kubeconfig. With REAL_NODE=1 it also adds one real node
# (containerd + kubelet + kube-proxy, node-up.sh) beside the fake ones.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

real_node="${REAL_NODE:-0}"
if [ "$real_node" = 1 ]; then
  # Before anything is built or started: name what this machine lacks.
  . "$CLUSTER_DIR/node-lib.sh"
  "$CLUSTER_DIR/build.sh" kubernetes etcd kwok helm colonies node
  node_preflight
else
  "$CLUSTER_DIR/build.sh"
fi
export PATH="$BIN_DIR:$PATH"
mkdir -p "$STATE_DIR"

healthy() {
  [ -f "$KUBECONFIG_PATH" ] && kubectl --kubeconfig "$KUBECONFIG_PATH" --request-timeout=5s get --raw /readyz >/dev/null 2>&1
}
# A cluster made for a real node runs the kwok controller on fake nodes only.
made_for_real_node() {
  grep -q 'manage-nodes-with-annotation-selector' "$KWOK_WORKDIR/clusters/$CLUSTER_NAME/kwok.yaml" 2>/dev/null
}

if healthy && { [ "$real_node" != 1 ] || made_for_real_node; }; then
  log "cluster '$CLUSTER_NAME' already running; kubeconfig: $KUBECONFIG_PATH"
  [ "$real_node" = 1 ] && exec "$CLUSTER_DIR/node-up.sh"
  exit 0
fi
if healthy; then
  log "cluster '$CLUSTER_NAME' runs without the real-node settings; recreating it"
fi

if kwokctl get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  log "cluster '$CLUSTER_NAME' exists but does not answer; recreating it"
  kwokctl delete cluster --name "$CLUSTER_NAME" >/dev/null 2>&1 || true
fi

log "creating cluster '$CLUSTER_NAME' (Kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION)"
rm -f "$KUBECONFIG_PATH"
config="$CLUSTER_DIR/kwok.yaml"
if [ "$real_node" = 1 ]; then
  # kwok.yaml plus the real node's component patches (kwok-real-node.yaml) in its first
  # document: the kwok controller manages only the nodes annotated as fake (every node made
  # by `kwokctl scale node`), and the API server reaches kubelets by their InternalIP.
  config="$STATE_DIR/kwok-real-node.yaml"
  awk -v patches="$CLUSTER_DIR/kwok-real-node.yaml" '
    !done && /^---$/ { while ((getline line < patches) > 0) if (line !~ /^#/) print line; done = 1 }
    { print }' "$CLUSTER_DIR/kwok.yaml" > "$config"
fi
kwokctl create cluster \
  --name "$CLUSTER_NAME" \
  --runtime binary \
  --config "$config" \
  --kubeconfig "$KUBECONFIG_PATH" \
  --kube-apiserver-binary "$BIN_DIR/kube-apiserver" \
  --kube-controller-manager-binary "$BIN_DIR/kube-controller-manager" \
  --kube-scheduler-binary "$BIN_DIR/kube-scheduler" \
  --kwok-controller-binary "$BIN_DIR/kwok" \
  --etcd-binary "$BIN_DIR/etcd" \
  --kube-authorization \
  --kube-admission \
  --kube-audit-policy "${COLONY_AUDIT_POLICY:-$CLUSTER_DIR/audit-policy.yaml}" \
  --wait 120s >"$STATE_DIR/kwokctl-create.log" 2>&1 \
  || { tail -20 "$STATE_DIR/kwokctl-create.log" >&2; die "step 'kwokctl create cluster' failed (logs: $KWOK_WORKDIR/clusters/$CLUSTER_NAME/logs)"; }

kwokctl scale node --name "$CLUSTER_NAME" --replicas 2 >>"$STATE_DIR/kwokctl-create.log" 2>&1 || die "step 'kwokctl scale node' failed"
kubectl --kubeconfig "$KUBECONFIG_PATH" wait --for=condition=Ready node --all --timeout=120s >/dev/null \
  || die "step 'nodes ready' failed: nodes did not become Ready"
# Pods need a ServiceAccount; the token controller creates `default` shortly after start.
for _ in $(seq 60); do
  kubectl --kubeconfig "$KUBECONFIG_PATH" get serviceaccount default -n default >/dev/null 2>&1 && break
  sleep 1
done
log "cluster ready; export KUBECONFIG=$KUBECONFIG_PATH"
[ "$real_node" = 1 ] && exec "$CLUSTER_DIR/node-up.sh"
exit 0
