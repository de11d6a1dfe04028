# kaws developer entry points. `make test` is what CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: bench bench-quick symbol-order build crds test test-cluster lint sandbox sandbox-down tools chart-test helm-install-test least-privilege deploy chaos chaos-quick chaos

build:
	$(CARGO) build --workspace --all-targets

## Regenerate crds/ and the chart's per-kind data (files/kinds.yaml) from the code. Runs the
## binary `make build` made: a `-p kaws` build would recompile the AWS SDKs with other features.
crds: build
	$${CARGO_TARGET_DIR:-target}/debug/kaws crds --out-dir crds
	$${CARGO_TARGET_DIR:-target}/debug/kaws kinds > charts/kaws/files/kinds.yaml

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

## The e2e suite against the cluster in KAWS_TEST_KUBECONFIG (use a disposable one, e.g. kind).
## Tests install crds/ themselves (once per test binary, server-side apply) and clean up after
## themselves; tests in a `needs_fault_injection` module need the test API server and are skipped.
## Prints pass/skip/fail counts, fails on any failure or on a namespace left behind, and removes
## the kaws CRDs afterwards unless the cluster had them before.
test-cluster: tools
	@if [ -z "$$KAWS_TEST_KUBECONFIG" ]; then \
	  echo "make test-cluster: set KAWS_TEST_KUBECONFIG to the kubeconfig of a disposable cluster" >&2; exit 2; fi
	$(CARGO) build -p kaws -p kaws-e2e --tests
	@set -uo pipefail; export KUBECONFIG="$$KAWS_TEST_KUBECONFIG"; \
	mkdir -p target; log=target/test-cluster.log; \
	crds=$$(for f in crds/*.yaml; do basename "$$f" .yaml; done); \
	had_crds=$$(kubectl get crd -o name $$crds 2>/dev/null | sed 's|.*/||'); \
	ns_before=$$(kubectl get namespaces -o name) || exit 1; \
	skipped=$$($(CARGO) test -q -p kaws-e2e --tests -- --list needs_fault_injection:: 2>/dev/null | sed -n 's/: test$$//p'); \
	ignored=$$($(CARGO) test -q -p kaws-e2e --tests -- --list --ignored 2>/dev/null | sed -n 's/: test$$//p'); \
	$(CARGO) test -p kaws-e2e --tests --no-fail-fast -- --skip needs_fault_injection:: 2>&1 | tee $$log; \
	status=$$?; \
	ns_left=$$(comm -13 <(echo "$$ns_before" | sort) <(kubectl get namespaces -o name | sort)); \
	for c in $$crds; do grep -qx "$$c" <<<"$$had_crds" || kubectl delete crd "$$c" --ignore-not-found >/dev/null; done; \
	echo; echo "== make test-cluster against $$(kubectl config current-context)"; \
	for t in $$skipped; do echo "skipped (needs the test API server's fault injection): $$t"; done; \
	for t in $$ignored; do echo "skipped (#[ignore], as in make test): $$t"; done; \
	grep '^kaws-e2e cleanup:' $$log || true; \
	if [ -n "$$ns_left" ]; then echo "left behind: $$ns_left"; status=1; fi; \
	awk -v skipped=$$(( $$(wc -w <<<"$$skipped") + $$(wc -w <<<"$$ignored") )) \
	  '/^test result:/ { for (i = 1; i <= NF; i++) { if ($$i ~ /^passed/) p += $$(i-1); if ($$i ~ /^failed/) f += $$(i-1) } } \
	   END { printf "%d passed, %d failed, %d skipped\n", p, f, skipped }' $$log; \
	exit $$status

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
	$(MAKE) bench-quick

## Performance figures (docs/performance.md): the release binary (a release build takes ~25 min
## here from clean), 200 Buckets and 100 Tables against a plain SDK loop making the same calls,
## steady-state calls, status writes and CPU, RSS at 1,000 and 10,000 objects, start-up time.
## Prints tables, writes target/bench/bench.json.
bench: tools
	$(CARGO) build --release --locked -p kaws --bin kaws -p kaws-sdk-loop --bin kaws-sdk-loop
	$(CARGO) build --workspace --all-targets
	KAWS_BINARY=$(CURDIR)/target/release/kaws BENCH=full $${CARGO_TARGET_DIR:-target}/debug/examples/bench

## The bounded variant `make test` runs (~1 min, debug binary): small N, same tables.
bench-quick: tools
	$(CARGO) build --workspace --all-targets
	$${CARGO_TARGET_DIR:-target}/debug/examples/bench

## Regenerate controller/symbol-order.txt, the link-time order of kaws' functions (start-up and
## reconciling code packed together: ~10 MiB less resident code, docs/performance.md). Profiles
## the quick bench under callgrind; run after a toolchain or dependency update. Needs valgrind.
symbol-order: tools
	./scripts/symbol-order.sh

## Chaos suite, full variant (more objects, kills and longer windows; `make test` runs the bounded
## one): AWS throttling/5xx/resets through tests/e2e/fault_proxy.py, kill -9 storms, a paused
## leader, same-name races, shared Secrets, API-server faults. Prints a figures table (also
## target/chaos/report.json); fails on any leaked, duplicated, foreign-modified or stuck count.
chaos: tools
	$(CARGO) build --workspace --all-targets
	KAWS_CHAOS=full $(CARGO) test --workspace --test chaos -- --nocapture

## The bounded chaos variant (~2.5 min here), the one `make test` runs. Builds with the same
## `--workspace` selection as `make test`: a `-p` selection recompiles the AWS SDKs with other
## features (10+ minutes).
chaos-quick: tools
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --test chaos -- --nocapture

sandbox: tools
	./scripts/sandbox.sh up

sandbox-down:
	./scripts/sandbox.sh down
