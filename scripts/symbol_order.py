#!/usr/bin/env python3
"""Writes the link-time function order of the kaws binary (controller/symbol-order.txt) from
callgrind profiles of it (scripts/symbol-order.sh takes them).

usage: symbol_order.py BINARY PROFILE...

BINARY is the unstripped release build that was profiled. The PROFILEs are given in time order:
the numbered dumps of the first kaws (every 2 s, each with the counters of its interval) and its
final one, then those of the kaws that ran after it. A function's place is the first profile it
shows up in (start-up first), the hottest first within one; only functions of BINARY's text are
listed. What the kernel maps of the binary is then about what ran, in the order it was needed.
"""

import collections
import subprocess
import sys


def text_symbols(binary):
    """Name → size of every function in BINARY's symbol table."""
    out = subprocess.run(
        ["nm", "--print-size", "--defined-only", binary],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sizes = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "tTwW":
            sizes[fields[3]] = int(fields[1], 16)
    return sizes


def costs(profile):
    """Function → its own instructions in one callgrind profile (`--compress-strings=no`);
    functions only called from it (`cfn=`) count too, with no cost of their own. The cost line
    after a `calls=` line is the call's inclusive cost, not the caller's own, and is skipped."""
    cost = collections.Counter()
    current = None
    call_cost_next = False
    with open(profile, errors="replace") as lines:
        for line in lines:
            if line.startswith("fn="):
                current = line[3:].strip()
                cost[current] += 0
            elif line.startswith("cfn="):
                cost[line[4:].strip()] += 0
            elif line.startswith("calls="):
                call_cost_next = True
            elif current and line[:1].isdigit():
                if call_cost_next:
                    call_cost_next = False
                    continue
                fields = line.split()
                if len(fields) >= 2 and fields[1].isdigit():
                    cost[current] += int(fields[1])
    return cost


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sizes = text_symbols(sys.argv[1])
    seen, order = set(), []
    for profile in sys.argv[2:]:
        cost = costs(profile)
        new = [name for name in sorted(cost, key=lambda n: -cost[n]) if name in sizes and name not in seen]
        seen.update(new)
        order += new
    total = sum(sizes.values())
    ran = sum(sizes[name] for name in order)
    print(
        f"{len(order)} of {len(sizes)} functions ran: {ran / 2**20:.1f} of {total / 2**20:.1f} MiB of text",
        file=sys.stderr,
    )
    print("\n".join(order))


if __name__ == "__main__":
    main()
