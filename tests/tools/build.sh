#!/usr/bin/env bash
# Builds the checking tools from their published Go modules into the cache, only what is
# missing: promtool (`promtool check rules`, `promtool test rules` on the chart's alerts) and
# actionlint (the GitHub workflows). Prints the bin dir on stdout. Needs Go and the Go
# module proxy; downloads no release binaries.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
log() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] error: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "no Go toolchain on PATH (install Go >= 1.26)"
mkdir -p "$TOOLS_BIN_DIR"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

go_install() { # binary, package@version, [build tags]
  [ -x "$TOOLS_BIN_DIR/$1" ] && return 0
  log "building $1 from $2"
  local start=$SECONDS
  GOBIN="$TOOLS_BIN_DIR" go install -trimpath -tags "${3:-}" -ldflags "-s -w" "$2" || die "building $1 failed: go install $2"
  log "$1 built in $((SECONDS - start))s"
}

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(promtool actionlint)
for c in "${components[@]}"; do
  case "$c" in
    # remove_all_sd leaves out the cloud service discoveries (AWS, Azure, GCE, ...): only
    # `check rules` and `test rules` are used, and the build is much smaller.
    promtool) go_install promtool "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" remove_all_sd ;;
    actionlint) go_install actionlint "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION" ;;
    *) die "unknown tool '$c' (promtool, actionlint)" ;;
  esac
done
echo "$TOOLS_BIN_DIR"
