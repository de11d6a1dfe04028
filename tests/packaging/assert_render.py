"""Assertions on one `helm template` render of charts/kaws (called by chart-test.sh).

usage: assert_render.py CASE RENDERED.yaml CRDS_DIR
"""

import glob
import sys

import yaml

case, rendered, crds_dir = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
errors = []


def check(ok, msg):
    if not ok:
        errors.append(msg)


def of_kind(kind):
    return [d for d in docs if d["kind"] == kind]


# (group, plural) of every generated CRD: a group may hold several kinds (iam.kaws.io).
crds = set()
for path in glob.glob(f"{crds_dir}/*.yaml"):
    crd = yaml.safe_load(open(path))
    crds.add((crd["spec"]["group"], crd["spec"]["names"]["plural"]))
crd_groups = {g for g, _ in crds}

(deploy,) = of_kind("Deployment")
pod = deploy["spec"]["template"]["spec"]
(container,) = pod["containers"]
env = {e["name"]: e for e in container.get("env", [])}
sc = container["securityContext"]
check(pod["securityContext"].get("runAsNonRoot") is True, "pod runAsNonRoot")
check(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation")
check(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities drop ALL")
check(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp RuntimeDefault")
check(container["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness on /healthz")
check(container["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness on /readyz")
check(container["resources"]["limits"].get("memory"), "memory limit")

rules = [(r, d) for d in of_kind("ClusterRole") + of_kind("Role") for r in d["rules"]]
for r, d in rules:
    for field in ("apiGroups", "resources", "verbs"):
        check("*" not in r.get(field, []), f"wildcard in {d['kind']} {d['metadata']['name']}")
    if "secrets" in r["resources"]:
        check(set(r["verbs"]) <= {"get", "list", "watch", "create", "patch"}, "secret verbs")
    if "namespaces" in r["resources"]:
        check(r.get("resourceNames") == ["kube-system"], "namespaces limited to kube-system")

kinds = env["KAWS_KINDS"]["value"].split(",")
kind_groups = {g for r, _ in rules for g in r["apiGroups"] if g.endswith(".kaws.io")}
secrets_granted = any("secrets" in r["resources"] for r, _ in rules)
has_ns_rule = any("namespaces" in r["resources"] for r, _ in rules)
included_crds = {c["spec"]["group"] for c in of_kind("CustomResourceDefinition")}
if case != "no-crds":
    # `kinds` selects the CRDs too: exactly the enabled kinds' groups.
    # (The enabled kinds are the kaws groups kaws may patch; referenced kinds are read-only.)
    managed = {g for r, _ in rules for g in r["apiGroups"]
               if g.endswith(".kaws.io") and "patch" in r["verbs"]}
    check(included_crds == managed,
          f"rendered CRDs {sorted(included_crds)} != enabled kinds {sorted(managed)}")
    for c in of_kind("CustomResourceDefinition"):
        check(c["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep",
              f"{c['metadata']['name']} kept on uninstall")
leader_env = "KAWS_LEADER_ELECTION" in env
lease_rules = [r for r, _ in rules if "leases" in r["resources"]]
check(bool(lease_rules) == leader_env, "Lease RBAC exactly when leader election is on")
if case != "leader-election":
    check(not leader_env, "leader election off by default")
    check(deploy["spec"]["strategy"]["type"] == "Recreate", "Recreate without leader election")

if case == "defaults":
    # Every generated CRD must have its line in kaws.kinds (the one-line registry).
    for group, plural in sorted(crds):
        check(any(group in r["apiGroups"] and plural in r["resources"] for r, _ in rules),
              f"no RBAC for {plural}.{group}: add it to kaws.kinds in templates/_helpers.tpl")
    check(len(kinds) == len(crds), f"KAWS_KINDS {kinds} does not cover crds/ {sorted(crds)}")
    check(secrets_granted, "DBInstance needs Secrets")
    check(has_ns_rule, "default cluster id needs kube-system get")
    check(not of_kind("Role"), "no Roles without watchNamespaces")
    check(env["KAWS_LOG_FORMAT"]["value"] == "json", "json logs by default")
    check("AWS_ACCESS_KEY_ID" not in env, "no static credentials by default")
    check(deploy["spec"]["replicas"] == 1, "one replica")
    check(included_crds == crd_groups, f"rendered CRDs {sorted(included_crds)} != crds/ {sorted(crd_groups)}")
elif case == "bucket-only":
    check(kinds == ["bucket"], f"KAWS_KINDS {kinds}")
    check(kind_groups == {"s3.kaws.io"}, f"groups {kind_groups}")
    check(not secrets_granted, "no Secrets access without dbinstance")
elif case == "namespaced":
    check(env["KAWS_WATCH_NAMESPACES"]["value"] == "team-a,team-b", "KAWS_WATCH_NAMESPACES")
    roles = {d["metadata"]["namespace"] for d in of_kind("Role")}
    bindings = {d["metadata"]["namespace"] for d in of_kind("RoleBinding")}
    check(roles == bindings == {"team-a", "team-b"}, f"Roles in {roles}, bindings in {bindings}")
    for d in of_kind("ClusterRole"):
        check(all(r["resources"] == ["namespaces"] for r in d["rules"]),
              "only the kube-system read is cluster-wide")
elif case == "credentials":
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        ref = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef", {})
        check(ref.get("name") == "aws-creds", f"{name} from Secret aws-creds")
    check(env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"].get("optional") is True,
          "session token optional")
    check(env["KAWS_AWS_REGION"]["value"] == "eu-west-1", "region")
    check(env["KAWS_AWS_ENDPOINT_URL"]["value"] == "https://s3.example.test", "endpoint")
    check(env["KAWS_CLUSTER_ID"]["value"] == "prod-1", "cluster id")
    check(not has_ns_rule, "no Namespace read when clusterId is set")
elif case == "leader-election":
    check(deploy["spec"]["replicas"] == 3, "replicas")
    check(env.get("KAWS_LEADER_ELECTION", {}).get("value") == "true", "forced on by replicas > 1")
    check(env["KAWS_LEADER_ELECTION_LEASE_DURATION"]["value"] == "20s", "lease duration")
    check(env["KAWS_LEADER_ELECTION_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"]
          == "metadata.namespace", "lease in the pod's namespace")
    check(deploy["spec"]["strategy"]["type"] == "RollingUpdate", "rolling updates with a standby")
    (role,) = [d for d in of_kind("Role") if d["metadata"]["name"].endswith("-leader-election")]
    check(role["metadata"]["namespace"] == "kaws-system", "Lease Role in the release namespace")
    for r in role["rules"]:
        check(r["resources"] == ["leases"], "only leases")
        check("resourceNames" in r or r["verbs"] == ["create"], "get/update/list/watch limited to the Lease")
    check(not any("leases" in r["resources"] for d in of_kind("ClusterRole") for r in d["rules"]),
          "no cluster-wide Lease access")
elif case == "no-crds":
    check(not included_crds, "crds.install=false renders no CRD")
elif case == "extras":
    check(len(of_kind("ServiceMonitor")) == 1, "ServiceMonitor")
    check(len(of_kind("PodDisruptionBudget")) == 1, "PodDisruptionBudget")
    check(len(of_kind("NetworkPolicy")) == 1, "NetworkPolicy")
    (sa,) = of_kind("ServiceAccount")
    check(sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn")
          == "arn:aws:iam::123456789012:role/kaws", "IRSA annotation")
else:
    errors.append(f"unknown case {case}")

for e in errors:
    print(f"  {case}: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
