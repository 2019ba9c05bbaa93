#!/usr/bin/env bash
# Builds the local control plane from published Go modules into $BIN_DIR, only what is
# missing. Needs Go and the Go module proxy; downloads no release binaries.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v go >/dev/null || die "step 'toolchain': no Go toolchain on PATH (install Go >= 1.26)"
mkdir -p "$BIN_DIR"
SRC_DIR="$CACHE_ROOT/$CACHE_KEY/src"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

need() { for b in "$@"; do [ -x "$BIN_DIR/$b" ] || return 0; done; return 1; }

# build_kubernetes BINARY...: builds the named commands of k8s.io/kubernetes (cmd/<name>).
build_kubernetes() {
  need "$@" || return 0
  log "building $* $KUBERNETES_VERSION"
  local dir="$SRC_DIR/kubernetes" minor="${KUBERNETES_VERSION#v1.}"
  local staging_version="v0.${minor}"
  mkdir -p "$dir" && cd "$dir"
  # The tag's own go.mod names its staging modules; each is published as v0.<minor>.<patch>.
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p') \
    || die "step 'kubernetes download': go mod download k8s.io/kubernetes@$KUBERNETES_VERSION failed"
  [ -f "$gomod" ] || die "step 'kubernetes download': no go.mod for k8s.io/kubernetes@$KUBERNETES_VERSION"
  local goversion
  goversion=$(sed -n 's/^go \(.*\)/\1/p' "$gomod")
  {
    echo "module colony-operator/cluster/kubernetes"
    echo
    echo "go $goversion"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 '"$staging_version"'#p' "$gomod"
    echo ")"
  } > go.mod
  # Every command this script builds, so one `go mod tidy` serves the control plane and the
  # real node's kubelet and kube-proxy alike.
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  go mod tidy >tidy.log 2>&1 || { tail -20 tidy.log >&2; die "step 'kubernetes go mod tidy' failed (see $dir/tidy.log)"; }
  local pkg=k8s.io/component-base/version cgv=k8s.io/client-go/pkg/version
  local flags="-s -w"
  for p in $pkg $cgv; do
    flags="$flags -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=${minor%%.*}"
    flags="$flags -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  local pkgs=() b
  for b in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  go build -trimpath -ldflags "$flags" -o "$BIN_DIR/" "${pkgs[@]}" \
    || die "step 'kubernetes build' failed for $* $KUBERNETES_VERSION"
}

build_etcd() {
  need etcd || return 0
  log "building etcd $ETCD_VERSION"
  local dir="$SRC_DIR/etcd"
  mkdir -p "$dir" && cd "$dir"
  # etcd's server module carries replace directives, so `go install` refuses it; a wrapper
  # module that requires it builds its root main package.
  printf 'module colony-operator/cluster/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
  go mod tidy >tidy.log 2>&1 || { tail -20 tidy.log >&2; die "step 'etcd go mod tidy' failed (see $dir/tidy.log)"; }
  go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd" go.etcd.io/etcd/server/v3 \
    || die "step 'etcd build' failed for $ETCD_VERSION"
}

go_install() { # binary, package@version
  need "$1" || return 0
  log "building $1 from $2"
  GOBIN="$BIN_DIR" go install -trimpath -ldflags "-s -w" "$2" || die "step '$1 build' failed: go install $2"
}

build_colonies() {
  need colonies || return 0
  log "building colonies $COLONIES_VERSION (the real ColonyOS server and CLI)"
  local start=$SECONDS dir="$SRC_DIR/colonies"
  # `go install ...@version` also asks the proxy for the module's version list, which the
  # proxy refuses for this module; the exact version downloads fine, so build from its copy.
  local moddir
  moddir=$(go mod download -json "github.com/colonyos/colonies@$COLONIES_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p') \
    || die "step 'colonies download': go mod download github.com/colonyos/colonies@$COLONIES_VERSION failed"
  [ -d "$moddir" ] || die "step 'colonies download': no source directory for colonies@$COLONIES_VERSION"
  rm -rf "$dir" && mkdir -p "$(dirname "$dir")"
  cp -r "$moddir" "$dir" && chmod -R u+w "$dir"
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/colonies" ./cmd) \
    || die "step 'colonies build' failed for $COLONIES_VERSION"
  log "colonies built in $((SECONDS - start))s"
}

# Arguments name the components to build (kubernetes, etcd, kwok, helm, colonies, node); none
# means all of them but `node` (the real node's kubelet and kube-proxy, which
# `up.sh` builds only with REAL_NODE=1).
components=("$@")
[ ${#components[@]} -gt 0 ] || components=(kubernetes etcd kwok helm colonies)
for c in "${components[@]}"; do
  case "$c" in
    kubernetes) build_kubernetes kube-apiserver kube-controller-manager kube-scheduler kubectl ;;
    node) build_kubernetes kubelet kube-proxy ;;
    etcd) build_etcd ;;
    kwok) go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
          go_install kwokctl "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION" ;;
    helm) go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" ;;
    colonies) build_colonies ;;
    *) die "unknown component '$c' (kubernetes, etcd, kwok, helm, colonies, node)" ;;
  esac
done
log "binaries ready in $BIN_DIR"
