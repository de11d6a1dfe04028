# kaws developer entry points. `make test` is what CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: build crds test lint sandbox sandbox-down tools chart-test deploy

build:
	$(CARGO) build --workspace --all-targets

## Regenerate crds/ from the code.
crds:
	$(CARGO) run -q -p kaws --bin kaws -- crds --out-dir crds

## Chart and manifest tests: helm lint/template matrix, offline schema validation, drift, bad values.
chart-test: tools
	./tests/packaging/chart-test.sh

## Regenerate charts/kaws/crds and deploy/ from crds/ and the chart (after `make crds`).
deploy: tools
	./scripts/render-deploy.sh

## Install test tools (moto in .tools/venv, kubectl if missing).
tools:
	./scripts/install-tools.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## The whole test suite: lint, CRD drift, unit, integration and end-to-end tests.
test: tools lint
	$(CARGO) build --workspace --all-targets
	$(MAKE) chart-test
	$(CARGO) test --workspace --no-fail-fast

sandbox: tools
	./scripts/sandbox.sh up

sandbox-down:
	./scripts/sandbox.sh down
