#!/usr/bin/env bash
# `helm install` / `upgrade` / `uninstall` of charts/kaws with the real Helm into the repository's
# test API server (target/debug/kaws-testserver; nothing runs the Deployment's pods there), checked
# with the real kubectl: CRDs of the enabled kinds only, RBAC as rendered, values applied on
# upgrade (CRDs of newly enabled kinds added), objects gone and CRDs kept after uninstall;
# `kubectl get aws` and `kubectl explain <kind>.spec` for every kind.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
HELM=${HELM:-$root/.tools/bin/helm}
KUBECTL=${KUBECTL:-$(command -v kubectl || echo "$root/.tools/bin/kubectl")}
SERVER=${KAWS_TESTSERVER_BIN:-$root/target/debug/kaws-testserver}
tmp=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "helm-install: FAIL: $*" >&2; exit 1; }
[ -x "$SERVER" ] || fail "$SERVER is missing: cargo build -p kaws-testserver"

export KUBECONFIG=$tmp/kubeconfig HELM_CACHE_HOME=$tmp/helm/cache HELM_CONFIG_HOME=$tmp/helm/config HELM_DATA_HOME=$tmp/helm/data
"$SERVER" --kubeconfig "$KUBECONFIG" >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do [ -s "$KUBECONFIG" ] && "$KUBECTL" get ns >/dev/null 2>&1 && break; sleep 0.1; done
"$KUBECTL" get ns >/dev/null || { cat "$tmp/server.log"; fail "test API server did not start"; }
k() { "$KUBECTL" "$@"; }
ns=kaws-system
release=kaws

echo "== helm install (kinds: bucket, table)"
"$HELM" install "$release" "$root/charts/kaws" --namespace "$ns" --create-namespace \
  --set 'kinds={bucket,table}' --set aws.region=eu-west-1 >"$tmp/install.out" \
  || { cat "$tmp/install.out" "$tmp/server.log" | tail -40; fail "helm install"; }
crds=$(k get crd -o jsonpath='{.items[*].metadata.name}')
[ "$crds" = "buckets.s3.kaws.io tables.dynamodb.kaws.io" ] || fail "CRDs after install: '$crds' (want only the enabled kinds')"
k get crd buckets.s3.kaws.io -o jsonpath='{.metadata.annotations.helm\.sh/resource-policy}' | grep -qx keep \
  || fail "CRDs are not kept on uninstall"
k get clusterrole kaws -o json >"$tmp/cr.json" || fail "ClusterRole kaws"
k get clusterrolebinding kaws -o jsonpath='{.subjects[0].name}/{.subjects[0].namespace}' | grep -qx "kaws/$ns" \
  || fail "ClusterRoleBinding subject"
groups=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["rules"]; print(" ".join(sorted({g for x in r for g in x["apiGroups"] if g.endswith(".kaws.io")})))' "$tmp/cr.json")
[ "$groups" = "dynamodb.kaws.io s3.kaws.io" ] || fail "ClusterRole grants kaws groups '$groups'"
k -n "$ns" get serviceaccount kaws >/dev/null || fail "ServiceAccount"
k -n "$ns" get service kaws-metrics >/dev/null || fail "Service"
k -n "$ns" get deployment kaws -o jsonpath='{.spec.replicas}' | grep -x 1 >/dev/null || fail "Deployment replicas"
if k -n "$ns" get roles.rbac.authorization.k8s.io kaws-leader-election >/dev/null 2>&1; then fail "Lease Role without leader election"; fi

echo "== kubectl get aws / explain for every installed kind"
for kind in bucket table; do
  k explain "$kind.spec" >"$tmp/explain" || fail "kubectl explain $kind.spec"
  grep -q "DESCRIPTION" "$tmp/explain" || fail "kubectl explain $kind.spec has no description"
done
k create namespace demo >/dev/null
k -n demo apply -f - >/dev/null <<YAML
apiVersion: s3.kaws.io/v1alpha1
kind: Bucket
metadata: {name: logs}
spec: {bucketName: demo-logs-bucket}
---
apiVersion: dynamodb.kaws.io/v1alpha1
kind: Table
metadata: {name: orders}
spec:
  tableName: demo-orders
  attributeDefinitions: [{attributeName: id, attributeType: S}]
  keySchema: [{attributeName: id, keyType: HASH}]
YAML
aws=$(k -n demo get aws -o name)
grep -q "bucket.s3.kaws.io/logs" <<<"$aws" && grep -q "table.dynamodb.kaws.io/orders" <<<"$aws" \
  || fail "kubectl get aws lists: $aws"

echo "== helm upgrade (all kinds: their CRDs added; replicas 2: leader election, Lease Role)"
"$HELM" upgrade "$release" "$root/charts/kaws" --namespace "$ns" --reuse-values --set replicas=2 \
  --set-json 'kinds=[]' >/dev/null || { tail -20 "$tmp/server.log"; fail "helm upgrade"; }
all=$(cd "$root/crds" && ls -- *.yaml | sed 's/\.yaml$//' | sort | tr '\n' ' ')
crds=$(k get crd -o jsonpath='{.items[*].metadata.name}' | tr ' ' '\n' | sort | tr '\n' ' ')
[ "$crds" = "$all" ] || fail "CRDs after upgrade to all kinds: '$crds' (want '$all')"
for crd in $crds; do
  kind=$(k get crd "$crd" -o jsonpath='{.spec.names.singular}')
  [ "$(k get crd "$crd" -o jsonpath='{.spec.names.categories}')" = '["aws"]' ] || fail "$crd is not in the category aws"
  # The group too: a kind's name may also be a built-in's (iam.kaws.io Role, RBAC Role).
  gv="$(k get crd "$crd" -o jsonpath='{.spec.group}')/$(k get crd "$crd" -o jsonpath='{.spec.versions[0].name}')"
  k explain "$kind.spec" --api-version="$gv" >"$tmp/explain" || fail "kubectl explain $kind.spec ($gv)"
  grep -q "DESCRIPTION" "$tmp/explain" || fail "kubectl explain $kind.spec has no description"
done
k -n "$ns" get deployment kaws -o jsonpath='{.spec.replicas}' | grep -x 2 >/dev/null || fail "replicas not upgraded"
k -n "$ns" get deployment kaws -o json | grep '"KAWS_LEADER_ELECTION"' >/dev/null || fail "leader election env not set"
k -n "$ns" get roles.rbac.authorization.k8s.io kaws-leader-election -o json | grep '"leases"' >/dev/null || fail "Lease Role missing after upgrade"
k -n "$ns" get rolebinding kaws-leader-election >/dev/null || fail "Lease RoleBinding missing"
"$HELM" history "$release" -n "$ns" | grep deployed >/dev/null || fail "helm history"

echo "== helm uninstall"
"$HELM" uninstall "$release" --namespace "$ns" >/dev/null || fail "helm uninstall"
for obj in "-n $ns deployment/kaws" "-n $ns serviceaccount/kaws" "-n $ns service/kaws-metrics" \
  "clusterrole/kaws" "clusterrolebinding/kaws" "-n $ns role/kaws-leader-election"; do
  # shellcheck disable=SC2086
  if k get $obj >/dev/null 2>&1; then fail "$obj still exists after uninstall"; fi
done
crds=$(k get crd -o jsonpath='{.items[*].metadata.name}' | tr ' ' '\n' | sort | tr '\n' ' ')
[ "$crds" = "$all" ] || fail "CRDs after uninstall: '$crds' (want all kept)"
k -n demo get bucket logs >/dev/null || fail "objects survive uninstall"
echo "helm-install: ok"
