# kaws developer entry points. `make test` is what CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: build crds test lint sandbox sandbox-down tools chart-test helm-install-test least-privilege deploy chaos chaos-quick chaos

build:
	$(CARGO) build --workspace --all-targets

## Regenerate crds/ from the code.
crds:
	$(CARGO) run -q -p kaws --bin kaws -- crds --out-dir crds

## Chart and manifest tests: helm lint/template matrix, offline schema validation, drift, bad values.
chart-test: tools
	./tests/packaging/chart-test.sh

## helm install / upgrade / uninstall with the real Helm into the test API server.
helm-install-test: tools
	$(CARGO) build -p kaws-testserver
	./tests/packaging/helm-install.sh

## IAM and RBAC least privilege: what the e2e suite saw kaws use (recorded by `make test` in
## target/e2e-record) against deploy/iam/policy.json and the chart's rules. Needs a full e2e run.
least-privilege: tools
	.tools/venv/bin/python tests/packaging/check-iam.py target/e2e-record deploy/iam/policy.json
	.tools/bin/helm template kaws charts/kaws --namespace kaws-system --set leaderElection.enabled=true >target/e2e-record/chart.yaml
	.tools/venv/bin/python tests/packaging/check-rbac.py target/e2e-record target/e2e-record/chart.yaml

## Regenerate charts/kaws/files/crds and deploy/ from crds/ and the chart (after `make crds`).
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
	$(MAKE) helm-install-test
	rm -rf target/e2e-record
	KAWS_E2E_RECORD_DIR=$(CURDIR)/target/e2e-record $(CARGO) test --workspace --no-fail-fast
	$(MAKE) least-privilege

## Chaos suite, full variant (more objects, kills and longer windows; `make test` runs the bounded
## one): AWS throttling/5xx/resets through tests/e2e/fault_proxy.py, kill -9 storms, a paused
## leader, same-name races, shared Secrets, API-server faults. Prints a figures table (also
## target/chaos/report.json); fails on any leaked, duplicated, foreign-modified or stuck count.
chaos: tools
	$(CARGO) build -p kaws
	KAWS_CHAOS=full $(CARGO) test -p kaws-e2e --test chaos -- --nocapture --include-ignored

## The bounded chaos variant (a few minutes).
chaos-quick: tools
	$(CARGO) build -p kaws
	$(CARGO) test -p kaws-e2e --test chaos -- --nocapture --include-ignored

sandbox: tools
	./scripts/sandbox.sh up

sandbox-down:
	./scripts/sandbox.sh down
