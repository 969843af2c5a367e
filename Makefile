# Entry points for people and CI. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# Control-plane binaries: $KUBEBUILDER_ASSETS when set, else built once per pinned
# version into ~/.cache/keyward by hack/test-bins.sh.
ASSETS = $(if $(KUBEBUILDER_ASSETS),$(KUBEBUILDER_ASSETS),$(shell hack/test-bins.sh))

.PHONY: help
help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the keyward binary.
	cargo build --bin keyward

.PHONY: crds
crds: ## Regenerate crds/ from the Rust types.
	cargo run --quiet --bin keyward -- crds > crds/keyward.yaml

.PHONY: bins
bins: ## Build (or find cached) etcd, Kubernetes and kwok binaries for the tests.
	@hack/test-bins.sh

.PHONY: test
test: argocd ## The Argo CD health checks, unit tests, then integration tests against a real control plane.
	@assets="$(ASSETS)"; test -n "$$assets" || { echo "no control-plane binaries" >&2; exit 1; }; \
	  KUBEBUILDER_ASSETS="$$assets" cargo test --all-targets

.PHONY: argocd
argocd: ## Run the Argo CD health checks in docs/argocd/ on their sample objects (Go).
	cd docs/argocd && go test ./...

.PHONY: chaos
chaos: ## The rotation chaos test at length: 50 rotations, the operator SIGKILLed at every step.
	@assets="$(ASSETS)"; test -n "$$assets" || { echo "no control-plane binaries" >&2; exit 1; }; \
	  KUBEBUILDER_ASSETS="$$assets" KEYWARD_CHAOS_ROTATIONS=50 \
	  cargo test --test integration rotations_survive -- --nocapture

.PHONY: lint
lint: ## rustfmt and clippy, warnings as errors.
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

.PHONY: demo
demo: ## Start a local control plane, apply crds/ and examples/, run the operator.
	@hack/demo.sh up

.PHONY: demo-down
demo-down: ## Stop what `make demo` started.
	@hack/demo.sh down

.PHONY: fuzz
fuzz: ## Fuzz the envelope and verifier-record parsers for a minute each (nightly + cargo-fuzz).
	cargo +nightly fuzz run envelope_parse -- -max_total_time=60
	cargo +nightly fuzz run verifier_record -- -max_total_time=60
