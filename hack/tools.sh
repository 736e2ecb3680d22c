#!/usr/bin/env bash
# Builds (once) and prints the paths of the pinned local control-plane tools:
#   kube  - kube-apiserver / kube-controller-manager / kube-scheduler / kubectl, one multi-call
#           binary from hack/controlplane (k8s.io/kubernetes at KUBE_VERSION)
#   kubectl - that binary's kubectl (the tests' kubectl: the machine's may be another release)
#   kwok  - the KWOK controller that plays kubelet for fake nodes
#   helm  - for chart lint/template
#   ocitool - writes and validates OCI image layouts (hack/ocitool, go-containerregistry)
#   versitygw - an S3-compatible object server (posix backend) for the preflight artifact tests
#   argocd-lua - QuantizedModel's Argo CD health script and actions under Argo CD's own Lua setup
#                (hack/argocd-lua); argocd-src - that Argo CD release's source, to check the copy
#   kstatus - what sigs.k8s.io/cli-utils' kstatus (Flux's health checks) computes for objects
#   promop-crds - the prometheus-operator release's CRDs (its Go module's example/prometheus-operator-crd)
#   promsd - Prometheus' own Kubernetes service discovery (hack/promsd), as file_sd targets
# Everything lands under $QR_CACHE (default ~/.cache/quantrollout), keyed by version and by a
# hash of the Go module that built it, so a second run builds nothing.
#
# usage: hack/tools.sh [kube|kubectl|kwok|helm|gateway-crds|ocitool|versitygw|argocd-lua|argocd-src|kstatus|promop-crds|promsd|all]   (prints KEY=path lines for what it ensured)
set -euo pipefail

KUBE_VERSION=v1.33.13
KWOK_VERSION=v0.7.0
HELM_VERSION=v3.21.4
GATEWAY_API_VERSION=v1.3.0
VERSITYGW_VERSION=v1.8.0
ARGOCD_VERSION=v3.5.7  # the Argo CD release whose util/lua hack/argocd-lua copies
PROMETHEUS_OPERATOR_VERSION=v0.85.0  # whose CRDs the chart's monitoring objects are checked against

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${QR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quantrollout}
mkdir -p "$cache/bin"

die() { echo "hack/tools.sh: $*" >&2; exit 1; }

# The official Go tarball's default location, for shells whose PATH lacks it.
go_fallback=${QR_GO_FALLBACK_DIR-/usr/local/go/bin}
if ! command -v go >/dev/null 2>&1 && [ -x "$go_fallback/go" ]; then PATH="$PATH:$go_fallback"; fi

need_go() {
  command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH (needed once to build the local control plane; install Go >= 1.24)"
}

# go_install PKG@VERSION NAME DEST_DIR: `go install` into a private GOBIN, then move in atomically.
go_install() {
  local pkg=$1 name=$2 dest=$3 tmp
  [ -x "$dest/$name" ] && return 0
  need_go
  tmp=$(mktemp -d "$cache/bin/.build.XXXXXX")
  echo "building $name ($pkg), once per machine..." >&2
  if ! CGO_ENABLED=0 GOBIN="$tmp" GOFLAGS=-trimpath go install -ldflags="-s -w" "$pkg" >"$tmp/build.log" 2>&1; then
    local why; why=$(tail -n 1 "$tmp/build.log"); rm -rf "$tmp"
    die "building $pkg failed: $why"
  fi
  mkdir -p "$dest" && mv "$tmp/$name" "$dest/$name" && rm -rf "$tmp"
}

ensure_kube() {
  local key dest tmp ld
  key=$(cat "$here/controlplane/go.mod" "$here/controlplane/go.sum" "$here/controlplane/main.go" | sha256sum | cut -c1-12)
  dest="$cache/bin/kube-$KUBE_VERSION-$key"
  if [ ! -x "$dest/kube" ]; then
    need_go
    tmp=$(mktemp -d "$cache/bin/.build.XXXXXX")
    echo "building kube $KUBE_VERSION (apiserver, controller-manager, scheduler, kubectl): 10-20 min the first time..." >&2
    local major=${KUBE_VERSION#v}; major=${major%%.*}
    local minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
    ld="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld="$ld -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    if ! (cd "$here/controlplane" && CGO_ENABLED=0 go build -trimpath -ldflags="$ld" -o "$tmp/kube" .) >"$tmp/build.log" 2>&1; then
      local why; why=$(grep -m1 -E 'error|cannot|undefined' "$tmp/build.log" || tail -n 1 "$tmp/build.log"); rm -rf "$tmp"
      die "building the control plane failed: $why"
    fi
    mkdir -p "$dest" && mv "$tmp/kube" "$dest/kube" && rm -rf "$tmp"
  fi
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do ln -sf kube "$dest/$c"; done
  echo "KUBE_BIN_DIR=$dest"
}

ensure_kubectl() {
  local dir
  dir=$(ensure_kube | sed -n 's/^KUBE_BIN_DIR=//p')
  echo "KUBECTL=$dir/kubectl"
}

ensure_kwok() {
  go_install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" kwok "$cache/bin/kwok-$KWOK_VERSION"
  echo "KWOK=$cache/bin/kwok-$KWOK_VERSION/kwok"
}

ensure_helm() {
  go_install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" helm "$cache/bin/helm-$HELM_VERSION"
  echo "HELM=$cache/bin/helm-$HELM_VERSION/helm"
}

ensure_ocitool() {
  local key dest tmp
  key=$(cat "$here/ocitool/go.mod" "$here/ocitool/go.sum" "$here/ocitool/main.go" | sha256sum | cut -c1-12)
  dest="$cache/bin/ocitool-$key"
  if [ ! -x "$dest/ocitool" ]; then
    need_go
    tmp=$(mktemp -d "$cache/bin/.build.XXXXXX")
    echo "building ocitool (go-containerregistry), once per machine..." >&2
    if ! (cd "$here/ocitool" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$tmp/ocitool" .) >"$tmp/build.log" 2>&1; then
      local why; why=$(tail -n 1 "$tmp/build.log"); rm -rf "$tmp"
      die "building hack/ocitool failed: $why"
    fi
    mkdir -p "$dest" && mv "$tmp/ocitool" "$dest/ocitool" && rm -rf "$tmp"
  fi
  echo "OCITOOL=$dest/ocitool"
}

ensure_versitygw() {
  go_install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" versitygw "$cache/bin/versitygw-$VERSITYGW_VERSION"
  echo "VERSITYGW=$cache/bin/versitygw-$VERSITYGW_VERSION/versitygw"
}

# build_module NAME: `go build` of the small module hack/NAME into a directory keyed by a hash of
# its files, so an edit rebuilds it and a rerun builds nothing.
build_module() {
  local name=$1 src="$here/$1" key dest tmp
  key=$(cd "$src" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 cat | sha256sum | cut -c1-12)
  dest="$cache/bin/$name-$key"
  if [ ! -x "$dest/$name" ]; then
    need_go
    tmp=$(mktemp -d "$cache/bin/.build.XXXXXX")
    echo "building $name (hack/$name), once per change..." >&2
    if ! (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$tmp/$name" .) >"$tmp/build.log" 2>&1; then
      local why; why=$(grep -m1 -E 'error|cannot|undefined' "$tmp/build.log" || tail -n 1 "$tmp/build.log"); rm -rf "$tmp"
      die "building hack/$name failed: $why"
    fi
    mkdir -p "$dest" && mv "$tmp/$name" "$dest/$name" && rm -rf "$tmp"
  fi
  echo "$dest/$name"
}

# mod_dir MODULE@VERSION: a Go module's source from the module proxy (a download, no build).
mod_dir() {
  local dir
  need_go
  dir=$(cd /tmp && go mod download -json "$1" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$dir" ] || die "could not download $1"
  echo "$dir"
}

ensure_argocd_lua() { echo "ARGOCD_LUA=$(build_module argocd-lua)"; }
ensure_promop_crds() {
  local dir
  dir=$(mod_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
  echo "PROMOP_CRDS=$dir/example/prometheus-operator-crd"
}
ensure_promsd() { echo "PROMSD=$(build_module promsd)"; }
ensure_kstatus() { echo "KSTATUS=$(build_module kstatus)"; }
ensure_argocd_src() { echo "ARGOCD_SRC=$(mod_dir "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION")"; }

# The Gateway API CRDs (standard channel) from the Go module proxy: a download, no build.
ensure_gateway_crds() {
  local dir
  need_go
  dir=$(cd /tmp && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$dir/config/crd/standard" ] || die "could not download sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION"
  echo "GATEWAY_CRDS=$dir/config/crd/standard"
}

case "${1:-all}" in
  kube) ensure_kube ;;
  kubectl) ensure_kubectl ;;
  kwok) ensure_kwok ;;
  helm) ensure_helm ;;
  gateway-crds) ensure_gateway_crds ;;
  ocitool) ensure_ocitool ;;
  versitygw) ensure_versitygw ;;
  argocd-lua) ensure_argocd_lua ;;
  argocd-src) ensure_argocd_src ;;
  kstatus) ensure_kstatus ;;
  promop-crds) ensure_promop_crds ;;
  promsd) ensure_promsd ;;
  all) ensure_kube; ensure_kwok; ensure_helm; ensure_ocitool; ensure_versitygw; ensure_argocd_lua; ensure_kstatus; ensure_promsd ;;
  *) die "unknown tool '$1' (kube|kubectl|ocitool|versitygw|kwok|helm|gateway-crds|argocd-lua|argocd-src|kstatus|promop-crds|promsd|all)" ;;
esac
