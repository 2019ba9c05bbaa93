#!/usr/bin/env bash
# `make image`: the operator's image, built with buildah (no Docker engine). The release binary
# is built on the host, statically linked, and the Containerfile's final stage copies it into
# an image FROM scratch. Also writes target/image/colony-operator.tar (docker-archive) for
# importing into a node's container runtime.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/colony-operator/Chart.yaml)
IMAGE="${IMAGE:-ghcr.io/zyeute/colony-operator:$app_version}"
log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] error: %s\n' "$*" >&2; exit 1; }

command -v buildah >/dev/null || die "buildah is missing: apt-get install -y buildah podman runc"
[ -f /etc/ssl/certs/ca-certificates.crt ] || die "/etc/ssl/certs/ca-certificates.crt is missing: apt-get install -y ca-certificates"
target_dir="${CARGO_TARGET_DIR:-target}"
triple=x86_64-unknown-linux-gnu

log "building the static release binary"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -p colony-operator --target "$triple" \
  || die "step 'cargo build --release' failed"
mkdir -p target/image
cp "$target_dir/$triple/release/colony-operator" target/image/colony-operator
# Symbols are not needed at run time (panics still name their source lines).
if command -v strip >/dev/null; then strip target/image/colony-operator; fi
cp /etc/ssl/certs/ca-certificates.crt target/image/ca-certificates.crt
if command -v ldd >/dev/null && ldd target/image/colony-operator 2>&1 | grep -q '=>'; then
  die "target/image/colony-operator is not statically linked: $(ldd target/image/colony-operator | tr '\n' ' ')"
fi

log "building $IMAGE"
buildah bud --quiet --isolation chroot --layers=false --build-arg BINARY_FROM=local -t "$IMAGE" -f Containerfile . >/dev/null \
  || die "step 'buildah bud' failed"
rm -f target/image/colony-operator.tar
buildah push --quiet "$IMAGE" "docker-archive:target/image/colony-operator.tar:$IMAGE" >/dev/null \
  || die "step 'buildah push' to target/image/colony-operator.tar failed"
size=$(buildah images --format '{{.Size}}' "$IMAGE" | head -1)
log "built $IMAGE ($size); archive: target/image/colony-operator.tar"
echo "$IMAGE" > target/image/name
