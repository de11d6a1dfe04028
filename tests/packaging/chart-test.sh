#!/usr/bin/env bash
# Chart and manifest tests (`make chart-test`): helm lint, helm template over a values matrix,
# offline schema validation of every rendered object, RBAC/env assertions per case, drift of
# charts/kaws/files/crds and deploy/, and bad values refused by values.schema.json.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
HELM=${HELM:-$root/.tools/bin/helm}
PY=$root/.tools/venv/bin/python
VALIDATE=$root/.tools/venv/bin/kubernetes-validate
KAWS_BIN=${KAWS_BIN:-$root/target/debug/kaws}
chart=$root/charts/kaws
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "chart-test: FAIL: $*" >&2; exit 1; }

echo "== helm lint"
"$HELM" lint --strict "$chart" >/dev/null || "$HELM" lint --strict "$chart" || fail "helm lint"

# name | helm flags | expectations checked by assert.py
cases=(
  "defaults||"
  "bucket-only|--set kinds={bucket}|"
  "namespaced|--set watchNamespaces={team-a,team-b}|"
  "credentials|--set aws.credentials.secretName=aws-creds --set aws.region=eu-west-1 --set aws.endpointUrl=https://s3.example.test --set clusterId=prod-1|"
  "leader-election|--set replicas=3 --set leaderElection.leaseDuration=20s|"
  "no-crds|--set crds.install=false|"
  "extras|--set serviceMonitor.enabled=true --set podDisruptionBudget.enabled=true --set networkPolicy.enabled=true --set serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/kaws|"
)
for c in "${cases[@]}"; do
  IFS='|' read -r name flags _ <<<"$c"
  echo "== helm template: $name"
  # shellcheck disable=SC2086
  "$HELM" template kaws "$chart" --namespace kaws-system $flags >"$tmp/$name.yaml" \
    || fail "helm template ($name)"
  "$VALIDATE" --strict --quiet "$tmp/$name.yaml" >"$tmp/$name.validate" 2>&1 \
    || { cat "$tmp/$name.validate"; fail "schema validation ($name)"; }
  "$PY" "$root/tests/packaging/assert_render.py" "$name" "$tmp/$name.yaml" "$root/crds" \
    || fail "assertions ($name)"
done

echo "== bad values are refused"
bad=(
  "--set replicas=-1|replicas"
  "--set leaderElection.leaseDuration=1500ms|leaseDuration"
  "--set deletionPolicy=Sometimes|deletionPolicy"
  "--set concurrency=0|concurrency"
  "--set resyncPeriod=soon|resyncPeriod"
  "--set fullReadEvery=0|fullReadEvery"
  "--set log.format=xml|format"
  "--set kinds={buckets}|unknown kind"
  "--set notAValue=1|notAValue"
)
for b in "${bad[@]}"; do
  IFS='|' read -r flags want <<<"$b"
  # shellcheck disable=SC2086
  if out=$("$HELM" template kaws "$chart" $flags 2>&1); then fail "accepted bad value: $flags"; fi
  grep -q -- "$want" <<<"$out" || { echo "$out"; fail "no clear message for $flags (want '$want')"; }
done

echo "== drift: charts/kaws/files/crds"
[ ! -e "$chart/crds" ] || fail "charts/kaws/crds/ is back: Helm would install every CRD there whatever kinds says; the chart's CRDs live in files/crds (scripts/render-deploy.sh)"
diff -r "$root/crds" "$chart/files/crds" || fail "charts/kaws/files/crds differs from crds/: run scripts/render-deploy.sh"
if [ -x "$KAWS_BIN" ]; then
  mkdir "$tmp/crds"
  "$KAWS_BIN" crds --out-dir "$tmp/crds" >/dev/null
  diff -r "$tmp/crds" "$chart/files/crds" || fail "charts/kaws/files/crds differs from \`kaws crds\`: run make crds && scripts/render-deploy.sh"
else
  echo "   ($KAWS_BIN not built: compared with crds/ only, whose own drift test runs in cargo test)"
fi
echo "== drift: deploy/"
HELM=$HELM "$root/scripts/render-deploy.sh" --check || fail "deploy/ drift"
kubectl kustomize "$root/deploy" >"$tmp/kustomize.yaml" || fail "kubectl kustomize deploy"
"$VALIDATE" --strict --quiet "$tmp/kustomize.yaml" || fail "schema validation (deploy/)"
"$PY" -m json.tool "$root/deploy/iam/policy.json" >/dev/null || fail "deploy/iam/policy.json is not JSON"
echo "chart-test: ok"
