# Entry points for people and CI. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# Control-plane binaries (and helm, which the chart's tests run, and the sealed-secrets
# controller, the benchmark's peer): $KUBEBUILDER_ASSETS when set, else built once per
# pinned version into ~/.cache/keyward by hack/test-bins.sh.
ASSETS = $(if $(KUBEBUILDER_ASSETS),$(KUBEBUILDER_ASSETS),$(shell hack/test-bins.sh --with-helm --with-sealed-secrets))

# keyward's version, from Cargo.toml: the image's tag and the chart's appVersion.
version := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
IMAGE ?= ghcr.io/keyward/keyward:$(version)
# The container engine `make image` uses: podman, else docker.
ENGINE ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)

.PHONY: help
help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the keyward binary.
	cargo build --bin keyward

.PHONY: crds
crds: ## Regenerate crds/ and the chart's copy from the Rust types.
	cargo run --quiet --bin keyward -- crds > crds/keyward.yaml
	cp crds/keyward.yaml charts/keyward/files/crds.yaml

.PHONY: bins
bins: ## Build (or find cached) etcd, Kubernetes, kwok, helm and sealed-secrets for the tests.
	@hack/test-bins.sh --with-helm --with-sealed-secrets

.PHONY: test
test: argocd kstatus alerts ## Argo CD health checks, the kstatus probe, alert rule tests, unit tests, integration tests, and the quick benchmark.
	@assets="$(ASSETS)"; test -n "$$assets" || { echo "no control-plane binaries" >&2; exit 1; }; \
	  KUBEBUILDER_ASSETS="$$assets" cargo test --all-targets

# `cargo test` runs bench targets too, without `--bench`: benches/scale then takes its
# quick mode (N = 200, the debug build), and benches/database its own (10,000 rows), so
# `make test` runs them and they never rot.
.PHONY: bench-quick
bench-quick: ## The scale benchmark's quick mode alone (N = 200; part of `make test`).
	@assets="$(ASSETS)"; test -n "$$assets" || { echo "no control-plane binaries" >&2; exit 1; }; \
	  KUBEBUILDER_ASSETS="$$assets" cargo test --bench scale

.PHONY: bench
bench: ## Both full benchmarks (release build): scale, then WSO2 database; rewrites docs/benchmarks.md.
	@assets="$(ASSETS)"; test -n "$$assets" || { echo "no control-plane binaries" >&2; exit 1; }; \
	  KUBEBUILDER_ASSETS="$$assets" cargo bench --bench scale -- --write-doc docs/benchmarks.md
	$(MAKE) bench-database

# The scale benchmark writes the whole page but keeps the database benchmark's section,
# which this one replaces on its own.
.PHONY: bench-database
bench-database: ## The WSO2 database benchmark alone (release, 100,000 and 1,000,000 rows in PostgreSQL).
	cargo bench --bench database -- --write-doc docs/benchmarks.md

.PHONY: argocd
argocd: ## Run the Argo CD health checks in docs/argocd/ on their sample objects (Go).
	cd docs/argocd && go test ./...

.PHONY: kstatus
kstatus: ## Test the kstatus probe in docs/kstatus/ (Go, cli-utils), which the integration tests run.
	cd docs/kstatus && go vet ./... && go test ./...

.PHONY: alerts
alerts: ## The chart's Prometheus alerts: promtool checks them and runs tests/alerts/ against them.
	hack/alert-tests.sh

.PHONY: chaos
chaos: ## The rotation chaos test at length: 50 rotations, the operator SIGKILLed at every step.
	@assets="$(ASSETS)"; test -n "$$assets" || { echo "no control-plane binaries" >&2; exit 1; }; \
	  KUBEBUILDER_ASSETS="$$assets" KEYWARD_CHAOS_ROTATIONS=50 \
	  cargo test --test integration rotations_survive -- --nocapture

.PHONY: lint
lint: ## rustfmt, clippy (warnings as errors) and the chart checks that need no cluster.
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	hack/chart-lint.sh

.PHONY: chart
chart: ## The chart checks alone: helm lint, README, CRD copy, refused values.
	hack/chart-lint.sh

.PHONY: chart-docs
chart-docs: ## Regenerate charts/keyward/README.md from its template and values.yaml.
	@assets=$$(hack/test-bins.sh --with-helm-docs) && \
	  "$$assets/helm-docs" --chart-search-root charts/keyward --log-level warning

.PHONY: release
release: ## The release build (as the image's): dist/keyward.
	hack/release-build.sh dist

.PHONY: image
image: ## Build the image ghcr.io/keyward/keyward:VERSION (or IMAGE=…) with podman or docker.
	@test -n "$(ENGINE)" || { echo "make image needs podman or docker (or ENGINE=/path/to/engine)" >&2; exit 1; }
	$(ENGINE) build -f Containerfile -t $(IMAGE) .

.PHONY: demo
demo: ## Start a local control plane, apply crds/ and examples/, run the operator.
	@hack/demo.sh up

.PHONY: demo-down
demo-down: ## Stop what `make demo` started.
	@hack/demo.sh down

.PHONY: fuzz
fuzz: ## Fuzz the envelope, verifier-record and WSO2 ciphertext parsers for a minute each (nightly + cargo-fuzz).
	cargo +nightly fuzz run envelope_parse -- -max_total_time=60
	cargo +nightly fuzz run verifier_record -- -max_total_time=60
	cargo +nightly fuzz run wso2_parse -- -max_total_time=60
