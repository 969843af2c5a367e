#!/usr/bin/env bash
# Builds the control-plane binaries the integration tests run (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, kwok) from their Go modules at
# pinned versions, caches them outside the repository keyed by version, and prints the
# directory that holds them all (the layout of envtest's KUBEBUILDER_ASSETS).
#
# --with-helm adds helm (the chart's tests render it); --with-helm-docs adds helm-docs
# (the chart lint checks that charts/keyward/README.md is what it generates);
# --with-sealed-secrets adds the sealed-secrets controller and kubeseal (the benchmark
# measures that controller's memory beside keyward's) and its SealedSecret CRD.
#
# A second run finds the cache and builds nothing. Override the cache root with
# KEYWARD_CACHE (default: ${XDG_CACHE_HOME:-~/.cache}/keyward).
set -euo pipefail

KUBERNETES_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.7.0
HELM_VERSION=v3.19.5
HELM_DOCS_VERSION=v1.14.2
SEALED_SECRETS_VERSION=v0.40.0

cache=${KEYWARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keyward}
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

log() { echo "test-bins: $*" >&2; }

# A throwaway module under $dir/src that requires what we build. Kubernetes and etcd
# carry `replace` directives that only apply when they are the main module, so a plain
# `go install pkg@version` refuses them; a module of our own that requires them (plus
# the replaces they need) builds them as dependencies.
new_module() {
  local dir=$1
  local src=$dir/src
  rm -rf "$src" && mkdir -p "$src" "$dir/bin"
  (cd "$src" && go mod init keyward-test-bins >/dev/null 2>&1)
  echo "$src"
}

build_kubernetes() {
  local dir=$cache/kubernetes-$KUBERNETES_VERSION
  [ -x "$dir/bin/kube-apiserver" ] && [ -x "$dir/bin/kubectl" ] \
    && [ -x "$dir/bin/kube-controller-manager" ] && [ -x "$dir/bin/kube-scheduler" ] && return
  log "building Kubernetes $KUBERNETES_VERSION (several minutes on a cold cache)"
  local src minor patch gomod
  src=$(new_module "$dir")
  minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
  patch=$(echo "$KUBERNETES_VERSION" | cut -d. -f3)
  cd "$src"
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  # k8s.io/kubernetes points its staging modules at ./staging; pin them to their tags.
  sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod" | sort -u \
    | while read -r module; do
        go mod edit -replace="$module=$module@v0.$minor.$patch"
      done
  go get "k8s.io/kubernetes@$KUBERNETES_VERSION" >/dev/null 2>&1
  local version_pkg=k8s.io/component-base/version
  local ldflags="-s -w -X $version_pkg.gitVersion=$KUBERNETES_VERSION \
    -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$minor \
    -X $version_pkg.gitTreeState=clean"
  local cmd
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    go get "k8s.io/kubernetes/cmd/$cmd@$KUBERNETES_VERSION" >/dev/null 2>&1 || true
  done
  go build -trimpath -ldflags "$ldflags" -o "$dir/bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  cd - >/dev/null
}

build_etcd() {
  local dir=$cache/etcd-$ETCD_VERSION
  [ -x "$dir/bin/etcd" ] && return
  log "building etcd $ETCD_VERSION"
  local src
  src=$(new_module "$dir")
  cd "$src"
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
  go build -trimpath -ldflags "-s -w" -o "$dir/bin/etcd" go.etcd.io/etcd/server/v3
  cd - >/dev/null
}

build_kwok() {
  local dir=$cache/kwok-$KWOK_VERSION
  [ -x "$dir/bin/kwok" ] && return
  log "building kwok $KWOK_VERSION"
  GOBIN=$dir/bin go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
}

build_helm() {
  local dir=$cache/helm-$HELM_VERSION
  # A helm built without the release ldflags reports version "v3.19" and renders
  # for Kubernetes 1.20; such a build (an older cache) is replaced.
  [ -x "$dir/bin/helm" ] \
    && [ "$("$dir/bin/helm" version --template '{{.Version}}')" = "$HELM_VERSION" ] && return
  log "building helm $HELM_VERSION"
  local src client_go minor
  src=$(new_module "$dir")
  cd "$src"
  go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >/dev/null 2>&1
  # As helm's own Makefile does: the version, and the Kubernetes version `helm template`
  # and `helm lint` assume, taken from the client-go helm is built with.
  client_go=$(go list -m -f '{{.Version}}' k8s.io/client-go)
  minor=$(echo "$client_go" | cut -d. -f2)
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  go build -trimpath -ldflags "$ldflags" -o "$dir/bin/helm" helm.sh/helm/v3/cmd/helm
  cd - >/dev/null
}

build_helm_docs() {
  local dir=$cache/helm-docs-$HELM_DOCS_VERSION
  [ -x "$dir/bin/helm-docs" ] && return
  log "building helm-docs $HELM_DOCS_VERSION"
  GOBIN=$dir/bin go install -trimpath -ldflags "-s -w" \
    "github.com/norwoodj/helm-docs/cmd/helm-docs@$HELM_DOCS_VERSION"
}

build_sealed_secrets() {
  local dir=$cache/sealed-secrets-$SEALED_SECRETS_VERSION
  [ -x "$dir/bin/sealed-secrets-controller" ] && [ -x "$dir/bin/kubeseal" ] \
    && [ -f "$dir/bin/sealed-secrets-crd.yaml" ] && return
  log "building sealed-secrets $SEALED_SECRETS_VERSION"
  # Its go.mod names the module github.com/bitnami/sealed-secrets, which the proxy does
  # not serve, so `go install` refuses it; built as the main module from a copy of its
  # source, it also gets its own replace directives and go.sum.
  local module=github.com/bitnami-labs/sealed-secrets source
  rm -rf "$dir/src" && mkdir -p "$dir/bin"
  source=$(cd "$dir" && go mod download -json "$module@$SEALED_SECRETS_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$source" ] || { log "cannot download $module@$SEALED_SECRETS_VERSION"; exit 1; }
  cp -r "$source" "$dir/src" && chmod -R u+w "$dir/src"
  cd "$dir/src"
  go build -trimpath -ldflags "-s -w -X main.VERSION=$SEALED_SECRETS_VERSION" \
    -o "$dir/bin/sealed-secrets-controller" ./cmd/controller
  go build -trimpath -ldflags "-s -w -X main.VERSION=$SEALED_SECRETS_VERSION" \
    -o "$dir/bin/kubeseal" ./cmd/kubeseal
  cp helm/sealed-secrets/crds/bitnami.com_sealedsecrets.yaml "$dir/bin/sealed-secrets-crd.yaml"
  cd - >/dev/null
  rm -rf "$dir/src"
}

with_helm=false
with_helm_docs=false
with_sealed_secrets=false
for arg in "$@"; do
  case $arg in
    --with-helm) with_helm=true ;;
    --with-helm-docs) with_helm_docs=true ;;
    --with-sealed-secrets) with_sealed_secrets=true ;;
    *) log "unknown argument $arg (expected --with-helm, --with-helm-docs, --with-sealed-secrets)"; exit 2 ;;
  esac
done

# One directory with every binary, named by all the versions it holds.
assets=$cache/assets-k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION
if [ ! -x "$assets/kube-apiserver" ] || [ ! -x "$assets/etcd" ] || [ ! -x "$assets/kwok" ]; then
  build_etcd
  build_kubernetes
  build_kwok
  mkdir -p "$assets"
  ln -sf "$cache/kubernetes-$KUBERNETES_VERSION/bin/"* "$assets/"
  ln -sf "$cache/etcd-$ETCD_VERSION/bin/etcd" "$assets/etcd"
  ln -sf "$cache/kwok-$KWOK_VERSION/bin/kwok" "$assets/kwok"
fi
if $with_helm; then
  build_helm
  ln -sf "$cache/helm-$HELM_VERSION/bin/helm" "$assets/helm"
fi
if $with_helm_docs; then
  build_helm_docs
  ln -sf "$cache/helm-docs-$HELM_DOCS_VERSION/bin/helm-docs" "$assets/helm-docs"
fi
if $with_sealed_secrets; then
  build_sealed_secrets
  for file in sealed-secrets-controller kubeseal sealed-secrets-crd.yaml; do
    ln -sf "$cache/sealed-secrets-$SEALED_SECRETS_VERSION/bin/$file" "$assets/$file"
  done
fi
echo "$assets"
