# kaws developer entry points. `make test` is what CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: build crds test lint sandbox sandbox-down tools

build:
	$(CARGO) build --workspace --all-targets

## Regenerate crds/ from the code.
crds:
	$(CARGO) run -q -p kaws --bin kaws -- crds --out-dir crds

## Install test tools (moto in .tools/venv, kubectl if missing).
tools:
	./scripts/install-tools.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## The whole test suite: lint, CRD drift, unit, integration and end-to-end tests.
test: tools lint
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --no-fail-fast

sandbox: tools
	./scripts/sandbox.sh up

sandbox-down:
	./scripts/sandbox.sh down
