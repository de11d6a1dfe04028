"""RBAC least privilege: every API request the end-to-end suite saw kaws make is allowed by the
ClusterRole and Roles the chart renders for all kinds (leader election on), and every verb on
every resource they grant was used, except the documented exceptions below.

usage: check-rbac.py RECORD_DIR RENDERED.yaml   (RECORD_DIR/kube-requests/*.json from the test
API server's per-token audit: verb, group, resource, subresource, namespace)
"""

import glob
import json
import os
import sys

import yaml

record_dir, rendered = sys.argv[1:3]

# Granted without a request of that verb in the e2e suite, each with the reason.
EXCEPTIONS = {
    # The e2e suite sets --cluster-id; the default reads kube-system's UID once at start.
    ("get", "", "namespaces"): "default cluster id (clusterId unset)",
    # kube-apiserver authorises a server-side apply that creates an object as `create` too
    # (the test API server does not): connection Secrets are created that way.
    ("create", "", "secrets"): "server-side apply creating a connection Secret",
}
# Checked by admission, never requested: setting blockOwnerDeletion in an owner reference (the
# Secrets kaws writes) needs `update` on the owner's finalizers subresource
# (OwnerReferencesPermissionEnforcement).
FINALIZERS = "finalizers"

files = glob.glob(os.path.join(record_dir, "kube-requests", "*.json"))
if not files:
    sys.exit(f"check-rbac: no recorded requests in {record_dir}/kube-requests")
used = set()
for f in files:
    for a in json.load(open(f)):
        resource = a["resource"] + (f"/{a['subresource']}" if a["subresource"] else "")
        used.add((a["verb"], a["group"], resource))

docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
rules = [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d.get("rules", [])]
granted = {(v, g, res) for r in rules for g in r.get("apiGroups", []) for res in r.get("resources", [])
           for v in r["verbs"]}

missing = sorted(used - granted)
unused = sorted(g for g in granted - used - set(EXCEPTIONS)
                if not (g[0] == "update" and g[2].endswith("/" + FINALIZERS)))
for v, g, res in missing:
    print(f"check-rbac: MISSING: kaws did {v} on {res} (group '{g}'), which the chart does not grant",
          file=sys.stderr)
for v, g, res in unused:
    print(f"check-rbac: UNUSED: the chart grants {v} on {res} (group '{g}'), never used in the e2e suite",
          file=sys.stderr)
print(f"check-rbac: {len(used)} (verb, resource) pairs used, {len(granted)} granted; "
      f"{len(missing)} missing, {len(unused)} unused")
sys.exit(1 if missing or unused else 0)
