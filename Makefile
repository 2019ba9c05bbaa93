# colony-operator: the two everyday commands are `make dev` and `make test`.
SHELL := /bin/bash
KUBECONFIG_PATH := $(CURDIR)/target/cluster/kubeconfig
BIN_DIR = $(shell bash -c '. tests/cluster/lib.sh && echo $$BIN_DIR')

.PHONY: help build unit-test e2e-test test chaos bench image dev crds cluster-build tools-build cluster-up cluster-down fmt lint

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## Build the operator binary
	cargo build -p colony-operator

crds: ## Regenerate crds/ from the Rust types, and the Helm chart's copy of them
	UPDATE_CRDS=1 cargo test -p colony-operator --lib api::tests::crds_are_up_to_date -- --exact --quiet
	mkdir -p charts/colony-operator/crds
	rm -f charts/colony-operator/crds/*.yaml
	cp crds/*.yaml charts/colony-operator/crds/

unit-test: ## Unit tests only (no cluster)
	cargo test -p colony-operator -p kubectl-colony

cluster-build: ## Build the local control plane binaries into the cache (only what is missing)
	tests/cluster/build.sh

tools-build: ## Build promtool and actionlint into the cache (only what is missing)
	tests/tools/build.sh

cluster-up: ## Start the local control plane (reuses a running one); REAL_NODE=1 adds a real node (containerd + kubelet)
	tests/cluster/up.sh

cluster-down: ## Stop and delete the local control plane and the real node; the host is left as it was
	tests/cluster/down.sh

e2e-test: cluster-up ## End-to-end tests against the running local control plane
	cargo build -p colony-operator -p kubectl-colony
	tools_bin=$$(tests/tools/build.sh) && KUBECONFIG=$(KUBECONFIG_PATH) PATH="$(BIN_DIR):$$tools_bin:$$PATH" cargo test -p colony-e2e -- --test-threads=4

test: ## Every test: unit, then end-to-end on a fresh local control plane (taken down at the end)
	tests/run-all.sh

chaos: cluster-up ## The fault suite in its long form (faults injected into the local cluster and the operator), one table
	cargo build -p colony-operator
	rm -rf target/chaos
	CHAOS_LONG=1 KUBECONFIG=$(KUBECONFIG_PATH) PATH="$(BIN_DIR):$$PATH" cargo test -p colony-e2e -- --test-threads=2 chaos
	tests/chaos-table.sh

bench: ## The operator at fleet scale (release build, own cluster `bench`): target/bench/report.md; SMALL=1 for a tenth
	cargo build --release -p colony-operator
	cargo build -p colony-bench
	COLONY_CLUSTER_NAME=$${COLONY_CLUSTER_NAME:-bench} COLONY_AUDIT_POLICY=$(CURDIR)/tests/cluster/audit-policy-bench.yaml tests/cluster/up.sh
	COLONY_CLUSTER_NAME=$${COLONY_CLUSTER_NAME:-bench} KUBECONFIG=$(KUBECONFIG_PATH) PATH="$(BIN_DIR):$$PATH" SMALL=$(SMALL) \
	  COLONY_BENCH_OPERATOR=$${CARGO_TARGET_DIR:-target}/release/colony-operator $${CARGO_TARGET_DIR:-target}/debug/colony-bench

image: ## The operator's container image (buildah, no Docker engine): static binary FROM scratch
	tests/image/build.sh

dev: ## A real Colony OS on the real node (server, PostgreSQL, a working bee) + the operator in the foreground; the kwok tier where the real node cannot run (or REAL_NODE=0)
	tests/cluster/dev.sh

fmt: ## Format the code
	cargo fmt --all

lint: ## Clippy with warnings as errors
	cargo clippy --workspace --all-targets -- -D warnings
