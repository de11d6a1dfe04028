"""IAM least privilege: every AWS action the end-to-end suite saw kaws call is in
deploy/iam/policy.json, and every action in the policy was called (or is allowed by
tests/packaging/iam-actions.txt with a reason).

usage: check-iam.py RECORD_DIR POLICY_JSON   (RECORD_DIR/aws-calls/*.txt: "<service> <Operation>")
"""

import glob
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
record_dir, policy_path = sys.argv[1:3]

mapping, allowed, untested = {}, {}, {}
for line in open(os.path.join(here, "iam-actions.txt")):
    words = line.split()
    if not words or words[0].startswith("#"):
        continue
    if words[0] == "map":
        mapping[(words[1], words[2])] = words[3:]
    elif words[0] == "allow":
        allowed[words[1]] = " ".join(words[2:])
    elif words[0] == "untested":
        untested[words[1]] = " ".join(words[2:])
    else:
        sys.exit(f"iam-actions.txt: cannot read {line!r}")

files = glob.glob(os.path.join(record_dir, "aws-calls", "*.txt"))
if not files:
    sys.exit(f"check-iam: no recorded calls in {record_dir}/aws-calls (run the e2e suite with KAWS_E2E_RECORD_DIR)")
calls = set()
for f in files:
    for line in open(f):
        if line.strip():
            service, op = line.split()
            calls.add((service, op))

needed = {}
for service, op in sorted(calls):
    for action in mapping.get((service, op), [f"{service}:{op}"]):
        needed.setdefault(action, []).append(f"{service} {op}")

policy = json.load(open(policy_path))
granted = set()
for st in policy["Statement"]:
    if st.get("Effect") != "Allow":
        continue
    actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
    granted.update(actions)

missing = sorted(set(needed) - granted)
unused = sorted(granted - set(needed) - set(allowed) - set(untested))
stale_allow = sorted(a for a in list(allowed) + list(untested) if a not in granted)
now_tested = sorted(a for a in untested if a in needed)
for a in missing:
    print(f"check-iam: MISSING from the policy: {a} (called: {', '.join(needed[a])})", file=sys.stderr)
for a in unused:
    print(f"check-iam: UNUSED in the policy: {a} (never called in the e2e suite)", file=sys.stderr)
for a in stale_allow:
    print(f"check-iam: iam-actions.txt lists {a}, which the policy does not grant", file=sys.stderr)
for a in now_tested:
    print(f"check-iam: {a} is called now: drop its `untested` line from iam-actions.txt", file=sys.stderr)
for a, path in sorted(untested.items()):
    if a not in needed:
        print(f"check-iam: not covered by an e2e test yet: {a} ({path})")
print(f"check-iam: {len(calls)} operations called, {len(granted)} actions granted, "
      f"{len(allowed)} allowed without a call, {len(untested)} not reached by a test; "
      f"{len(missing)} missing, {len(unused)} unused")
sys.exit(1 if missing or unused or stale_allow or now_tested else 0)
