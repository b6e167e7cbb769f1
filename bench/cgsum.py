#!/usr/bin/env python3
"""Summarise a callgrind output file per request (bench/cost.sh).

Prints the total instructions, the calls to the allocator (the C library's:
malloc, calloc, realloc, posix_memalign, aligned_alloc; and mimalloc's
entry points, for a build that uses it: mi_malloc_aligned,
mi_zalloc_aligned, mi_realloc_aligned) and to free (free, mi_free), each
divided by the request count, then the inclusive instructions per request of the
functions whose names contain one of the --where patterns.

    cgsum.py callgrind.out N [--where weft_service::service::Service::dispatch ...]
"""

import re
import subprocess
import sys

# With mimalloc as the global allocator (measured in the sixth round of
# issue #18, not kept) Rust's allocations reach it through these three (the
# mimalloc crate's GlobalAlloc). Internal calls of either allocator have
# other names, so nothing is counted twice.
ALLOC = {"mi_malloc_aligned", "mi_zalloc_aligned", "mi_realloc_aligned", "malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign"}
FREE = {"mi_free", "free"}


def parse_calls(path):
    names = {}
    calls = {}
    total = None
    cfn = None
    name_re = re.compile(r"^c?fn=\((\d+)\)(?: (.*))?$")
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(("fn=", "cfn=")):
                m = name_re.match(line.rstrip("\n"))
                if m:
                    i, name = m.group(1), m.group(2)
                    if name is not None:
                        names[i] = name
                    if line.startswith("cfn="):
                        cfn = i
                continue
            if line.startswith("calls=") and cfn is not None:
                n = int(line.split("=", 1)[1].split()[0])
                calls[cfn] = calls.get(cfn, 0) + n
                continue
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    by_name = {}
    for i, n in calls.items():
        name = names.get(i, "?")
        by_name[name] = by_name.get(name, 0) + n
    return total, by_name


def inclusive(path, patterns):
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
        capture_output=True, text=True, check=False,
    ).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(?:\S+:)?(.*)$", line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        fn = m.group(2)
        for p in patterns:
            if p in fn:
                rows.append((p, ir, fn))
                break
    best = {}
    for p, ir, fn in rows:
        # The outermost (largest) match per pattern.
        if p not in best or ir > best[p][0]:
            best[p] = (ir, fn)
    return best


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        print(__doc__)
        sys.exit(2)
    path, n = args[0], int(args[1])
    patterns = []
    if "--where" in args:
        patterns = args[args.index("--where") + 1:]
    total, calls = parse_calls(path)
    allocs = sum(v for k, v in calls.items() if k.split("'")[0] in ALLOC)
    frees = sum(v for k, v in calls.items() if k.split("'")[0] in FREE)
    print(f"instructions/request {total / n:,.0f}  (total {total:,}, requests {n})")
    print(f"allocations/request  {allocs / n:.2f}  frees/request {frees / n:.2f}")
    for k in sorted(calls, key=lambda k: -calls[k]):
        if k.split("'")[0] in ALLOC:
            print(f"  {k}: {calls[k] / n:.2f}/request")
    for p, (ir, fn) in sorted(inclusive(path, patterns).items(), key=lambda kv: -kv[1][0]):
        print(f"  {ir / n:>10,.0f}  {p}   [{fn[:110]}]")


if __name__ == "__main__":
    main()
