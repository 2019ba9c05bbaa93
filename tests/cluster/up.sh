#!/usr/bin/env bash
# Starts the local control plane (idempotent: a running cluster is reused) and writes its
# kubeconfig to target/cluster/kubeconfig.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$CLUSTER_DIR/build.sh"
export PATH="$BIN_DIR:$PATH"
mkdir -p "$STATE_DIR"

healthy() {
  [ -f "$KUBECONFIG_PATH" ] && kubectl --kubeconfig "$KUBECONFIG_PATH" --request-timeout=5s get --raw /readyz >/dev/null 2>&1
}

if healthy; then
  log "cluster '$CLUSTER_NAME' already running; kubeconfig: $KUBECONFIG_PATH"
  exit 0
fi

if kwokctl get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  log "cluster '$CLUSTER_NAME' exists but does not answer; recreating it"
  kwokctl delete cluster --name "$CLUSTER_NAME" >/dev/null 2>&1 || true
fi

log "creating cluster '$CLUSTER_NAME' (Kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION)"
rm -f "$KUBECONFIG_PATH"
kwokctl create cluster \
  --name "$CLUSTER_NAME" \
  --runtime binary \
  --config "$CLUSTER_DIR/kwok.yaml" \
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
