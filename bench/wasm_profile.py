#!/usr/bin/env python3
"""Instructions per request by wasm function: what callgrind cannot say inside Envoy.

Envoy's binary is stripped and V8's JIT code has no symbols, so `make bench-profile` only
sees the wasm as anonymous addresses. This runs the same filter in Node's V8 instead, driven
by bench/wasm_host.mjs (a minimal proxy-wasm host), under callgrind, twice (N1 and N2
requests), and attributes the JIT code to wasm functions: calls between wasm functions go
through V8's jump table, so callgrind charges each function's body to the jump-table slot it
was called through, and Node's perf map (`--perf-basic-prof`) names the functions by index.
The difference of the two runs divided by N2 - N1 is per request, start-up excluded.

  python3 bench/wasm_profile.py --variant e [--n1 1000 --n2 4000] [--top 40]

`--no-liftoff` makes V8 compile everything with TurboFan (the tier Envoy's hot code runs in);
Node's V8 counted (e)'s wasm within about 10 % of Envoy's JIT instructions. Assumes V8's x64
jump table (slots of 5 bytes, 12 to a 64-byte line), as in Node 20.
"""
import argparse
import collections
import glob
import os
import re
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
WASM = os.path.join(HERE, "..", "target/wasm32-wasip1/release/tenant_quota.wasm")


def leb(b, i):
    r = s = 0
    while True:
        x = b[i]
        i += 1
        r |= (x & 0x7F) << s
        s += 7
        if x < 0x80:
            return r, i


def module_shape(path):
    """(imported functions, declared functions) of a wasm module."""
    b = open(path, "rb").read()
    i, imports, funcs = 8, 0, 0
    while i < len(b):
        sid = b[i]
        size, i = leb(b, i + 1)
        if sid == 2:
            n, j = leb(b, i)
            for _ in range(n):
                for _ in range(2):
                    ln, j = leb(b, j)
                    j += ln
                kind = b[j]
                j += 1
                if kind == 0:
                    _, j = leb(b, j)
                    imports += 1
                elif kind == 1:
                    j += 1
                    flags, j = leb(b, j)
                    _, j = leb(b, j)
                    if flags & 1:
                        _, j = leb(b, j)
                elif kind == 2:
                    flags, j = leb(b, j)
                    _, j = leb(b, j)
                    if flags & 1:
                        _, j = leb(b, j)
                else:
                    j += 2
        elif sid == 3:
            funcs, _ = leb(b, i)
        i += size
    return imports, funcs


def run(variant, n, work):
    out = os.path.join(work, f"cg-{n}.out")
    for m in glob.glob(os.path.join(work, "perf-*.map")):
        os.remove(m)
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "node", "--perf-basic-prof",
                    "--no-wasm-lazy-compilation", "--no-liftoff", os.path.join(HERE, "wasm_host.mjs"),
                    "--variant", variant, "--requests", str(n)], cwd=work, check=True, capture_output=True)
    maps = glob.glob(f"/tmp/perf-*.map")
    newest = max(maps, key=os.path.getmtime)
    pmap = os.path.join(work, f"perf-{n}.txt")
    os.replace(newest, pmap)
    return out, pmap


def attribute(cg, pmap, imports, funcs):
    names, lo = {}, None
    for line in open(pmap):
        a, _, nm = line.rstrip("\n").split(" ", 2)
        m = re.match(r"JS:(.*)-(\d+)-(liftoff|turbofan)$", nm)
        if m:
            names[int(m.group(2))] = m.group(1)
            a = int(a, 16)
            lo = a if lo is None or a < lo else lo
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", cg], capture_output=True, text=True).stdout
    anon = [int(x, 16) for x in re.findall(r"\?\?\?:0x([0-9a-f]+)\S*\s+\[\?\?\?\]", text)]
    base = min(a for a in anon if lo - 0x40000 <= a < lo) & ~0xFFF
    table = (funcs + 11) // 12 * 64
    tot = collections.Counter()
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S+)\s+\[(.*)\]", line)
        if not m or "PROGRAM" in m.group(2):
            continue
        cost, fn, obj = int(m.group(1).replace(",", "")), m.group(2), m.group(3)
        if obj != "???":
            tot["(node, libc: the JS host)"] += cost
            continue
        a = fn.split(":")[-1].split("'")[0]
        off = (int(a, 16) if a.startswith("0x") else 0) - base
        if 0 <= off < table:
            tot[names.get((off // 64) * 12 + (off % 64) // 5 + imports, f"wasm function {off}?")] += cost
        else:
            tot["(other JIT code)"] += cost
    return tot


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="e")
    ap.add_argument("--n1", type=int, default=1000)
    ap.add_argument("--n2", type=int, default=4000)
    ap.add_argument("--top", type=int, default=40)
    a = ap.parse_args()
    imports, funcs = module_shape(WASM)
    with tempfile.TemporaryDirectory(prefix="tq-wasm-profile-") as work:
        t1 = attribute(*run(a.variant, a.n1, work), imports, funcs)
        t2 = attribute(*run(a.variant, a.n2, work), imports, funcs)
    d = {k: (t2[k] - t1[k]) / (a.n2 - a.n1) for k in set(t1) | set(t2)}
    wasm = sum(v for k, v in d.items() if not k.startswith("("))
    print(f"({a.variant}) instructions per request in wasm functions: {wasm:,.0f}")
    for k, v in sorted(d.items(), key=lambda kv: -kv[1])[: a.top]:
        print(f"{v:9,.0f}  {k[:140]}")


if __name__ == "__main__":
    main()
