# herdwatch: `make test` runs the whole suite, `make demo` runs herdwatch.
# Build caches live outside the clone so a fresh clone (CI) starts warm.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

HERDWATCH_CACHE ?= $(HOME)/.cache/herdwatch
export HERDWATCH_CACHE
export CARGO_TARGET_DIR ?= $(HERDWATCH_CACHE)/target
# rustup's stable toolchain for user space; the eBPF build calls Debian's by absolute path.
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all toolchain build test lint fmt-check clippy unit-test ebpf-test crd-check bench demo \
	demo-down images cluster-up chart-test rules-test chart-install prometheus-up e2e-test shellcheck

all: build

toolchain:
	@scripts/install-ebpf-toolchain.sh

build: toolchain
	cargo build --release --workspace

fmt-check:
	cargo fmt --all --check
	cd node-agent-ebpf && cargo fmt --check

# The CRDs in crds/ and the chart are generated from crates/api; fail when they drift.
crd-check:
	cargo run -q -p herdwatch-api --bin crdgen -- --check

clippy: toolchain
	cargo clippy --workspace --all-targets -- -D warnings

# Every shell script of the repository (the cluster, the demo, the install and test scripts).
shellcheck:
	@bash -c 'source e2e/cluster/lib/common.sh && ensure_debs shellcheck:shellcheck'
	git ls-files -z '*.sh' | xargs -0 shellcheck -x

lint: fmt-check clippy shellcheck

# The end-to-end tests need the local cluster: they run in e2e-test, not here. The kernel
# tests run a real runc container (runc, and busybox-static for its rootfs) and the pods'
# static pause program (gcc and libc6-dev build it).
unit-test: toolchain
	@bash -c 'source e2e/cluster/lib/common.sh && ensure_debs /usr/sbin/runc:runc /bin/busybox:busybox-static gcc:gcc /usr/lib/x86_64-linux-gnu/libc.a:libc6-dev'
	cargo test --workspace --exclude herdwatch-e2e

# The whole suite: lints, generated-file drift, unit and kernel tests (as root), the chart,
# the alerting rules, and the end-to-end scenarios on the local cluster (built and started when missing).
test: lint crd-check unit-test chart-test rules-test e2e-test
	@echo "make test: all suites passed"

# Benchmarks (figures in README.md, "Performance"). bench/operator.sh: the operator holding
# 1,000 profiles and merging 100 simulated nodes' observations, on a private API server.
bench:
	bench/operator.sh

# ---- local cluster, images, chart, end-to-end tests, demo (e2e/, scripts/) -------------
CLUSTER := bash e2e/cluster/cluster.sh

# The cluster's pinned helm (built by `cluster.sh build` into the cache).
HELM := $(shell bash -c 'source e2e/cluster/lib/common.sh && cached_bin helm')

$(HELM):
	$(CLUSTER) build

# Builds (what is missing of) the pinned Kubernetes components and starts the cluster.
cluster-up:
	$(CLUSTER) build
	$(CLUSTER) up

# herdwatch/agent:dev, herdwatch/operator:dev and the test workload, imported into the
# cluster's containerd when it runs.
images: toolchain
	scripts/images.sh

chart-test: $(HELM)
	scripts/chart-test.sh

# The alerting rules: promtool check and unit tests, and the chart's PrometheusRule renders
# the same groups (installs Debian's Prometheus for promtool when missing).
rules-test: $(HELM)
	scripts/rules-test.sh

chart-install:
	scripts/install-chart.sh e2e/values.yaml

# Prometheus (with the chart's rules) and Alertmanager next to the cluster, scraping
# herdwatch through the API server (e2e/prometheus/prometheus.sh; idempotent).
prometheus-up:
	bash e2e/prometheus/prometheus.sh up

# ab (apache2-utils) is the attack suite's load generator for its normal-day scenario.
e2e-test: cluster-up images chart-install prometheus-up
	@bash -c 'source e2e/cluster/lib/common.sh && ensure_debs ab:apache2-utils'
	HERDWATCH_KUBECONFIG=$$($(CLUSTER) kubeconfig) \
	  cargo test -p herdwatch-e2e --no-fail-fast -- --test-threads=1 --nocapture

demo:
	scripts/demo.sh

demo-down:
	scripts/demo.sh down
