#!/usr/bin/env python3
"""`make soak` (issue 10): one Envoy (--concurrency 2) with tenant-quota under about 80 % of its
measured capacity for --minutes (default 10), while its listener is pushed over a file-based
LDS source every 30 s, one VM is made to trap in the middle, clients abort, an upstream times
out and resets, and the admin API is called every second. Writes bench/SOAK.md.

What runs (all bounded in time and count):
- upstream: this script with --serve-upstream, a separate process (a Python ThreadingHTTPServer):
  200 at once, after `?delay=<ms>`, or a reset (`?reset=1`: RST, no answer). The route timeout
  is 1 s, so `/v1/slow?delay=2000` ends in 504.
- Envoy: listener `main` from LDS (lds.json, replaced by os.rename), routes `/v1/cached` and
  `/probe` answered by Envoy itself (direct_response, after the filter), everything else to the
  upstream. An access log records every 5xx and every downstream disconnect with Envoy's
  response flags and details, and the filter's `x-tenant-quota-reason`.
- load: wrk (Debian's, LuaJIT) with a Lua script. wrk has no rate option, so the script's
  `delay()` paces requests against a clock (LuaJIT ffi clock_gettime): request n of the run is
  sent no earlier than start + n / rate, over 256 connections (a backlog older than 50 ms is
  dropped, not bursted). Capacity = the same script without pacing for 10 s; the soak offers
  80 % of it. Tenants: 10 % of requests from 50 hot tenants (t-0..t-49), 90 % from 9950 others;
  exports from 20 tenants (exp-0..exp-19).
- side clients (threads of this script): the probe tenant (sequential, a new connection per
  request, exactly K requests, K = 20 per second of the soak), client aborts (5 per second:
  /export and /v1/slow requests closed before the answer, half with RST), admin calls every
  second, the LDS pusher (every 30 s, configs A and B alternate), the trap (once, halfway),
  and Envoy's RSS every 10 s.
"""
import argparse
import collections
import datetime
import hashlib
import http.client
import json
import os
import platform
import random
import resource
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TQ_WASM = os.path.join(ROOT, "target/wasm32-wasip1/release/tenant_quota.wasm")
TOKEN_SHA256 = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"  # sha256("secret")
AUTH = {"authorization": "Bearer secret"}
N_TENANTS, HOT, HOT_SHARE = 10000, 50, 0.10
EXPORT_TENANTS, EXPORT_LIMIT, EXPORT_BURST = 20, 4, 2
CONNECTIONS = 256
PUSH_EVERY_S = 30
RSS_EVERY_S = 10
PROBE_PER_S = 20
ABORTS_PER_S = 5
ROUTE_TIMEOUT_S = 1
PROBE_WINDOW_MS = 10**12  # about 31 years: the probe's budget never resets during a run
HUGE = 10**12
WASM_COPY = [TQ_WASM]  # the run's own copy (a rebuild during the soak must not change what pushes load)

# The request mix (shares of wrk's requests), also shown in SOAK.md.
MIX = [
    ("GET /v1/cached/<n> (answered by Envoy), x-query-cost 0-3", 0.84),
    ("GET /v1/search (upstream), x-query-cost 5-20", 0.06),
    ("POST /v1/ingest (upstream), body 256 B, 1 KiB or 4 KiB", 0.065),
    ("GET /export/report?delay=50-300 (upstream, export_concurrency), tenants exp-*", 0.03),
    ("GET /v1/slow?delay=2000 (upstream, route timeout 1 s: 504)", 0.003),
    ("GET /v1/flaky?reset=1 (upstream resets the connection: 503)", 0.002),
]

LUA = r"""
local rate = tonumber(os.getenv("TQ_RATE") or "0")
local n = tonumber(os.getenv("TQ_TENANTS") or "10000")
local hot = tonumber(os.getenv("TQ_HOT") or "50")
local hot_share = tonumber(os.getenv("TQ_HOT_SHARE") or "0.1")
local nexp = tonumber(os.getenv("TQ_EXPORT_TENANTS") or "20")
local bodies = { string.rep("a", 256), string.rep("b", 1024), string.rep("c", 4096) }
local cuts = {}
do
  local acc = 0
  for s in string.gmatch(os.getenv("TQ_MIX"), "[^,]+") do acc = acc + tonumber(s); cuts[#cuts + 1] = acc end
end

local function tenant()
  if math.random() < hot_share then return "t-" .. math.random(0, hot - 1) end
  return "t-" .. math.random(hot, n - 1)
end

request = function()
  local r = math.random()
  if r < cuts[1] then
    return wrk.format("GET", "/v1/cached/" .. math.random(1, 1000), {["x-tenant-id"] = tenant(), ["x-query-cost"] = tostring(math.random(0, 3))})
  elseif r < cuts[2] then
    return wrk.format("GET", "/v1/search?q=" .. math.random(1, 1000), {["x-tenant-id"] = tenant(), ["x-query-cost"] = tostring(math.random(5, 20))})
  elseif r < cuts[3] then
    return wrk.format("POST", "/v1/ingest", {["x-tenant-id"] = tenant(), ["content-type"] = "application/octet-stream"}, bodies[math.random(1, 3)])
  elseif r < cuts[4] then
    return wrk.format("GET", "/export/report?delay=" .. math.random(50, 300), {["x-tenant-id"] = "exp-" .. math.random(0, nexp - 1)})
  elseif r < cuts[5] then
    return wrk.format("GET", "/v1/slow?delay=2000", {["x-tenant-id"] = tenant()})
  else
    return wrk.format("GET", "/v1/flaky?reset=1", {["x-tenant-id"] = tenant()})
  end
end

-- Status counts, keyed "<status>" or "<status> <reason> <budget>" for the filter's answers.
counts = {}
response = function(status, headers, body)
  local key = tostring(status)
  local reason = headers["x-tenant-quota-reason"]
  if reason then key = key .. " " .. reason .. " " .. (headers["x-tenant-quota-budget"] or "-") end
  counts[key] = (counts[key] or 0) + 1
end

if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } tq_timespec; int clock_gettime(int, tq_timespec *); ]]
  local ts = ffi.new("tq_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local interval = 1000 / rate  -- one wrk thread (-t1): the whole rate
  local next_t = nil
  -- Called before every request of every connection: claim the next send slot.
  delay = function()
    local now = now_ms()
    if next_t == nil or next_t < now - 50 then next_t = now end
    next_t = next_t + interval
    local d = next_t - now
    if d <= 0 then return 0 end
    return math.floor(d)
  end
end

local threads = {}
setup = function(thread) threads[#threads + 1] = thread end
done = function(summary, latency, requests)
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do io.write("TQCOUNT\t", k, "\t", v, "\n") end
  end
  local e = summary.errors
  io.write(string.format("TQERRORS\t%d\t%d\t%d\t%d\t%d\n", e.connect, e.read, e.write, e.status, e.timeout))
  for _, p in ipairs({50, 90, 99, 99.9}) do io.write(string.format("TQLAT\t%g\t%d\n", p, latency:percentile(p))) end
  io.write(string.format("TQTOTAL\t%d\t%d\n", summary.requests, summary.duration))
end
"""


# ------------------------------------------------------------------ upstream (its own process)

def serve_upstream(port_file):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlparse

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # head and body are two writes: no 40 ms Nagle/delayed-ACK stall

        def log_message(self, fmt, *args):
            pass

        def _any(self):
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n) if n else b""
            q = parse_qs(urlparse(self.path).query)
            if "reset" in q:
                # An upstream reset: RST, no answer.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if "delay" in q:
                time.sleep(min(int(q["delay"][0]), 10000) / 1000)
            data = f"ok {len(body)}\n".encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _any

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

        def handle_error(self, request, client_address):
            pass

    srv = Server(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    srv.serve_forever()


# ------------------------------------------------------------------ configs

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def limits_for(rate, minutes):
    """Limits derived from the offered rate so that the hot tenants (10 % of the requests over
    50 ids) run into requests_per_minute (and query cost, and by the end ingest bytes) while the
    9950 others (about 1/110 of a hot tenant's rate each) never do."""
    hot_rpm = HOT_SHARE * rate / HOT * 60  # requests per minute of one hot tenant
    return {
        "rpm_a": max(20, int(hot_rpm * 0.6)),
        "rpm_b": max(30, int(hot_rpm * 0.8)),
        # mean cost per request about 2.0: a hot tenant admitted at 0.6-0.8 x its rate spends
        # 1.2-1.6 x hot_rpm, so the bigger spenders among them reach the limit; cold tenants
        # spend about 1/100 of that.
        "cost": max(100, int(hot_rpm * 1.3)),
        # 6.5 % of a hot tenant's requests carry ~1.8 KB: they run out after about half the soak.
        "ingest": max(65536, int(hot_rpm * 0.7 * 0.065 * 1792 * minutes / 2)),
    }


def plugin_config(lim, variant):
    cfg = {
        "mode": "enforce",
        "tenant": {"header": "x-tenant-id", "fallback": "anonymous", "max_tracked": 100000},
        "budgets": {
            "requests_per_minute": {"counts": "requests", "window_ms": 60000,
                                    "limit": lim["rpm_a"] if variant == "A" else lim["rpm_b"], "burst_credits": 20},
            "ingest_bytes_per_day": {"counts": "request_bytes", "window_ms": 86400000, "limit": lim["ingest"],
                                     "burst_credits": lim["ingest"] // 16},
            "query_cost_per_minute": {"counts": {"request_header": "x-query-cost"}, "window_ms": 60000,
                                      "limit": lim["cost"], "burst_credits": lim["cost"] // 10},
            "export_concurrency": {"counts": "in_flight", "limit": EXPORT_LIMIT, "burst_credits": EXPORT_BURST,
                                   "match": {"path_prefix": "/export"}},
            # Only the probe tenant's requests match; the window never ends during a run.
            "probe_total": {"counts": "requests", "window_ms": PROBE_WINDOW_MS, "limit": HUGE,
                            "match": {"path_prefix": "/probe"}},
        },
        "tenants": {
            "probe": {"priority": "vip", "budgets": {"requests_per_minute": {"limit": 1000000000}}},
            "acme": {"priority": "vip", "budgets": {"requests_per_minute": {"limit": lim["rpm_a"] * 2, "burst_credits": 25}}},
        },
        "admin": {"path_prefix": "/.quota", "token_sha256": TOKEN_SHA256},
        "on_error": "allow",
        "test_hooks": {"trap_path": "/__trap"},
    }
    if variant == "B":  # an override added by the push, removed by the next one
        cfg["tenants"]["t-0"] = {"budgets": {"requests_per_minute": {"limit": lim["rpm_b"] * 3, "burst_credits": 50}}}
    return cfg


ACCESS_FORMAT = ("%START_TIME(%s.%3f)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %REQ(:METHOD)% "
                 "%REQ(:PATH)% %REQ(X-TENANT-ID)% %RESP(X-TENANT-QUOTA-REASON)% %DURATION%\n")


def lds_doc(version, port, plugin, access_log):
    route = lambda prefix, body: {"match": {"prefix": prefix},
                                  "direct_response": {"status": 200, "body": {"inline_string": body}}}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "access_log": [{
            "name": "envoy.access_loggers.file",
            "filter": {"or_filter": {"filters": [
                {"status_code_filter": {"comparison": {"op": "GE", "value": {"default_value": 500, "runtime_key": "soak_5xx"}}}},
                {"response_flag_filter": {"flags": ["DC"]}},
                {"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": 429, "runtime_key": "soak_429"}}}},
            ]}},
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                             "path": access_log, "log_format": {"text_format_source": {"inline_string": ACCESS_FORMAT}}},
        }],
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            route("/v1/cached", "cached\n"),
            route("/probe", "probe\n"),
            {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": f"{ROUTE_TIMEOUT_S}s"}},
        ]}]},
        "http_filters": [
            {"name": "envoy.filters.http.wasm", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "tenant_quota", "root_id": "tenant_quota", "failure_policy": "FAIL_RELOAD",
                    "vm_config": {"vm_id": "tenant_quota", "runtime": "envoy.wasm.runtime.v8",
                                  "code": {"local": {"filename": WASM_COPY[0]}}},
                    "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                      "value": json.dumps(plugin)},
                }}},
            {"name": "envoy.filters.http.router",
             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    listener = {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "main",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}
    return {"version_info": version, "resources": [listener]}


def bootstrap(lds_path, upstream_port):
    return {
        "node": {"id": "tq-soak", "cluster": "tq-soak"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {"lds_config": {"resource_api_version": "V3", "path_config_source": {"path": lds_path}}},
        "static_resources": {"clusters": [{
            "name": "upstream", "connect_timeout": "1s", "type": "STATIC",
            "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}]},
        }]},
    }


# ------------------------------------------------------------------ Envoy

def call(port, method, path, headers=None, body=None, timeout=5):
    """(status, body bytes, headers dict) on a new connection."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
    finally:
        c.close()


class Envoy:
    def __init__(self, envoy_bin, workdir, upstream_port, plugin):
        self.dir = workdir
        self.port = free_port()
        self.lds = os.path.join(workdir, os.environ.get("TQ_LDS_NAME", "lds.json"))
        self.access_log = os.path.join(workdir, "access.log")
        self.log_path = os.path.join(workdir, "envoy.log")
        self.version = 0
        self.write_lds(plugin, rename=False)
        cfg = os.path.join(workdir, "envoy.json")
        with open(cfg, "w") as f:
            json.dump(bootstrap(self.lds, upstream_port), f, indent=1)
        admin_file = os.path.join(workdir, "admin.addr")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [envoy_bin, "-c", cfg, "--concurrency", "2", "--admin-address-path", admin_file, "--disable-hot-restart",
             "-l", "info"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        self.admin = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited; see {self.log_path}")
            try:
                if self.admin is None:
                    with open(admin_file) as f:
                        self.admin = int(f.read().strip().rsplit(":", 1)[1]) or None
                if self.admin and call(self.admin, "GET", "/ready")[0] == 200 and self.active_version()[0] == "v1":
                    if call(self.port, "GET", "/.quota/status", AUTH)[0] == 200:
                        return
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"envoy not ready; see {self.log_path}")

    def write_lds(self, plugin, rename=True):
        self.version += 1
        v = f"v{self.version}"
        doc = lds_doc(v, self.port, plugin, self.access_log)
        nxt = self.lds + ".next"
        with open(nxt if rename else self.lds, "w") as f:
            json.dump(doc, f)
        if rename:
            os.rename(nxt, self.lds)  # Envoy watches the directory for the move
        return v

    def active_version(self):
        body = call(self.admin, "GET", "/config_dump?resource=dynamic_listeners")[1]
        for l in json.loads(body).get("configs", []):
            if l.get("name") == "main":
                return (l.get("active_state", {}).get("version_info"), "warming_state" in l,
                        json.dumps(l["error_state"]) if "error_state" in l else None)
        return None, False, None

    def push(self, plugin):
        """Push `plugin` (LDS file renamed over); returns (version, seconds until Envoy counted the
        update and the pushed limits served 6 admin answers in a row, error). Envoy 1.40 keeps
        reporting the first version_info in /config_dump after in-place filter chain updates, so
        the update is seen in the lds.update_* counters and in the limits the filter answers with."""
        t0 = time.monotonic()
        pat = r"^listener_manager\.(lds\.update_(success|rejected)|total_listeners_warming)$"
        s0 = self.stats(pat)
        v = self.write_lds(plugin)
        want = plugin["tenants"].get("t-0", {}).get("budgets", {}).get("requests_per_minute", {}).get(
            "limit", plugin["budgets"]["requests_per_minute"]["limit"])
        applied, streak = None, 0
        while time.monotonic() - t0 < 20:
            try:
                if applied is None:
                    s = self.stats(pat)
                    if s["listener_manager.lds.update_rejected"] > s0["listener_manager.lds.update_rejected"]:
                        return v, None, "rejected: " + str(self.active_version()[2])
                    if (s["listener_manager.lds.update_success"] > s0["listener_manager.lds.update_success"]
                            and s["listener_manager.total_listeners_warming"] == 0):
                        applied = time.monotonic()
                    else:
                        time.sleep(0.02)
                        continue
                st, j = admin_json(self.port, "GET", "/tenants/t-0")
                ok = st == 200 and j["budgets"]["requests_per_minute"]["limit"] == want
            except (OSError, http.client.HTTPException, KeyError, TypeError):
                ok = False
            streak = streak + 1 if ok else 0
            if streak >= 6:
                return v, time.monotonic() - t0, None
            if not ok:
                time.sleep(0.02)
        return v, None, f"limits of {v} not served after 20 s (update counted: {applied is not None})"

    def rss(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def cpu_s(self):
        return proc_cpu_s(self.proc.pid)

    def stats(self, pattern):
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/stats?filter={urllib.parse.quote(pattern)}",
                                      timeout=5).read().decode()
        out = {}
        for line in body.splitlines():
            name, _, v = line.partition(": ")
            if v.strip().isdigit():
                out[name] = int(v)
        return out

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rusage_s(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def admin_json(port, method, path, body=None):
    st, b, _ = call(port, method, "/.quota" + path, dict(AUTH, **({"content-type": "application/json"} if body else {})),
                    json.dumps(body).encode() if body is not None else None)
    try:
        return st, json.loads(b)
    except ValueError:
        return st, None


# ------------------------------------------------------------------ load

def run_wrk(port, seconds, rate, lua):
    env = dict(os.environ, TQ_RATE=str(rate), TQ_TENANTS=str(N_TENANTS), TQ_HOT=str(HOT), TQ_HOT_SHARE=str(HOT_SHARE),
               TQ_EXPORT_TENANTS=str(EXPORT_TENANTS), TQ_MIX=",".join(str(s) for _, s in MIX))
    cmd = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "5s", "-s", lua, f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 120).stdout
    r = {"counts": collections.Counter(), "raw": out}
    for line in out.splitlines():
        f = line.split("\t")
        if f[0] == "TQCOUNT":
            r["counts"][f[1]] += int(f[2])
        elif f[0] == "TQERRORS":
            r["errors"] = dict(zip(("connect", "read", "write", "status", "timeout"), map(int, f[1:])))
        elif f[0] == "TQLAT":
            r.setdefault("lat_us", {})[f[1]] = int(f[2])
        elif f[0] == "TQTOTAL":
            r["requests"], r["duration_s"] = int(f[1]), int(f[2]) / 1e6
    if "requests" not in r:
        raise RuntimeError(f"wrk failed:\n{out}")
    r["rps"] = r["requests"] / r["duration_s"]
    return r


class Side:
    """The side clients, each a thread that stops at `stop` (or sooner)."""

    def __init__(self, envoy, seconds, probe_k):
        self.e, self.seconds, self.probe_k = envoy, seconds, probe_k
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.probe = collections.Counter()
        self.probe_sent = 0
        self.probe_ms = []
        self.aborts = collections.Counter()
        self.admin = collections.Counter()
        self.admin_fail = []
        self.pushes = []
        self.rss = []
        self.trap = {}
        self.t0 = None

    def elapsed(self):
        return time.monotonic() - self.t0

    def probe_loop(self):
        interval = self.seconds / self.probe_k
        for i in range(self.probe_k):
            wait = self.t0 + i * interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if self.elapsed() > self.seconds + 60:
                break  # bounded: give up on the rest (reported as sent < K)
            t = time.monotonic()
            try:
                st = call(self.e.port, "GET", f"/probe/{i}", {"x-tenant-id": "probe"}, timeout=10)[0]
            except (OSError, http.client.HTTPException) as ex:
                st = type(ex).__name__
            self.probe_ms.append((time.monotonic() - t) * 1000)
            self.probe[st] += 1
            self.probe_sent += 1

    def abort_loop(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                s = socket.create_connection(("127.0.0.1", self.e.port), timeout=2)
                if i % 2:
                    path, tenant = "/export/report?delay=1500", f"exp-{random.randrange(EXPORT_TENANTS)}"
                else:
                    path, tenant = "/v1/slow?delay=2000", f"t-{random.randrange(N_TENANTS)}"
                s.sendall(f"GET {path} HTTP/1.1\r\nhost: soak\r\nx-tenant-id: {tenant}\r\n\r\n".encode())
                time.sleep(random.uniform(0.02, 0.4))
                rst = random.random() < 0.5
                if rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
                self.aborts["rst" if rst else "fin"] += 1
            except (OSError, http.client.HTTPException) as ex:
                self.aborts[type(ex).__name__] += 1
            self.stop.wait(max(0, 1 / ABORTS_PER_S - 0.2))

    def admin_loop(self):
        i = 0
        while not self.stop.wait(1.0):
            i += 1
            ops = [("GET usage", "GET", f"/tenants/t-{random.randrange(N_TENANTS)}", None),
                   ("GET usage", "GET", f"/tenants/exp-{random.randrange(EXPORT_TENANTS)}", None),
                   ("GET status", "GET", "/status", None)]
            if i % 2:
                ops.append(("PUT override", "PUT", "/tenants/t-49/overrides",
                            {"budgets": {"requests_per_minute": {"limit": 100000}}}))
            else:
                ops.append(("DELETE override", "DELETE", "/tenants/t-49/overrides", None))
            for name, method, path, body in ops:
                try:
                    st = admin_json(self.e.port, method, path, body)[0]
                except (OSError, http.client.HTTPException) as ex:
                    st = type(ex).__name__
                self.admin[(name, st)] += 1
                if st != 200:
                    self.admin_fail.append((round(self.elapsed(), 1), name, st))

    def push_loop(self, lim):
        n = 0
        while not self.stop.wait(PUSH_EVERY_S - (self.elapsed() % PUSH_EVERY_S)):
            n += 1
            variant = "B" if n % 2 else "A"
            at = self.elapsed()
            v, took, err = self.e.push(plugin_config(lim, variant))
            self.pushes.append({"at_s": round(at, 1), "version": v, "variant": variant,
                                "active_after_ms": round(took * 1000) if took is not None else None, "error": err})

    def rss_loop(self):
        while True:
            self.rss.append((round(self.elapsed()), self.e.rss(), self.e.cpu_s()))
            if self.stop.wait(RSS_EVERY_S - (self.elapsed() % RSS_EVERY_S)):
                break

    def trap_once(self):
        if self.stop.wait(self.seconds / 2) or self.no_trap:
            return
        self.trap["at_s"] = round(self.elapsed(), 2)
        self.trap["wall"] = time.time()
        try:
            self.trap["status"] = call(self.e.port, "GET", "/__trap", timeout=10)[0]
        except (OSError, http.client.HTTPException) as ex:
            self.trap["status"] = type(ex).__name__

    def start(self, lim):
        self.t0 = time.monotonic()
        self.threads = [threading.Thread(target=t, daemon=True) for t in
                        (self.probe_loop, self.abort_loop, self.admin_loop, self.rss_loop, self.trap_once)]
        self.threads.append(threading.Thread(target=self.push_loop, args=(lim,), daemon=True))
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=90)


# ------------------------------------------------------------------ after the load

def parse_access_log(path, trap_wall, since):
    """The soak's access log entries (started at or after `since`): 5xx and downstream
    disconnects by cause, 429s by tenant class, and the streams failed by the trapped VM."""
    causes = collections.Counter()
    rejected = collections.Counter()
    rejected_tenants = collections.defaultdict(set)
    failed = []  # (start, end) of wasm_fail_stream answers, epoch seconds
    failed_exports = []  # (tenant, start, end) of /export requests among them
    trap_start = None
    with open(path, errors="replace") as f:
        for line in f:
            p = line.split()
            if len(p) < 9:
                continue
            ts, code, flags, details, _method, path_, tenant, reason, dur = p[:9]
            try:
                ts = float(ts)
            except ValueError:
                continue
            if ts < since:
                continue
            code = int(code) if code.isdigit() else 0
            if code == 429:
                if tenant.startswith("exp-"):
                    cls = "export tenants exp-*"
                elif tenant.startswith("t-") and tenant[2:].isdigit() and int(tenant[2:]) < HOT:
                    cls = f"hot tenants t-0..t-{HOT - 1}"
                elif tenant.startswith("t-"):
                    cls = "other tenants t-*"
                else:
                    cls = tenant
                rejected[(cls, reason)] += 1
                rejected_tenants[cls].add(tenant)
                continue
            if code < 500:
                causes[("client abort (DC)" if "DC" in flags else "other", code, flags, details)] += 1
                continue
            fl = flags.split(",")
            if reason != "-":
                cause = f"filter: {reason}"
            elif details == "wasm_fail_stream" or path_ == "/__trap":
                end = ts + (int(dur) if dur.isdigit() else 0) / 1000
                failed.append((ts, end))
                if path_ == "/__trap":
                    trap_start = ts
                if path_.startswith("/export"):
                    failed_exports.append((tenant, ts, end))
                near = trap_wall is not None and trap_wall - 0.1 <= end <= trap_wall + ROUTE_TIMEOUT_S + 1.5
                cause = "trapped VM (wasm_fail_stream)" if near else "other"
            elif "UT" in fl:
                cause = "upstream timeout"
            elif details.startswith("upstream_reset") or any(x in fl for x in ("UC", "UR", "URX")):
                cause = "upstream reset"
            else:
                cause = "other"
            causes[(cause, code, flags, details)] += 1
    return {"causes": causes, "rejected": rejected, "rejected_tenants": {k: len(v) for k, v in rejected_tenants.items()},
            "failed": failed, "failed_exports": failed_exports, "trap_start": trap_start}


LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\]\[(\d+)\]\[(\w+)\]")


def envoy_log_findings(path):
    out = {"uncaught": [], "critical": [], "error": [], "reclaim": [], "trap": None, "reload_ms": None, "reclaims": []}
    trap_thread = None
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip()
            m = LOG_LINE.match(line)
            when = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f") if m else None
            if "Uncaught RuntimeError" in line:
                out["uncaught"].append(line)
            if "[critical]" in line:
                out["critical"].append(line)
            elif "[error]" in line:
                out["error"].append(line)
            if "test hook: trapping this VM" in line and m:
                out["trap"], trap_thread = line, m.group(2)
                out["trap_time"] = when
            elif trap_thread and m and m.group(2) == trap_thread and "configured:" in line and out["reload_ms"] is None:
                out["reload_ms"] = (when - out["trap_time"]).total_seconds() * 1000
                out["reload_line"] = line
            if "gave back" in line:
                out["reclaim"].append(line)
                g = re.search(r"gave back (\d+) in_flight slots held by (\d+) VMs", line)
                if g and out.get("trap_time") and when:
                    out["reclaims"].append(((when - out["trap_time"]).total_seconds(), int(g.group(1)), int(g.group(2)), m.group(2)))
    return out


def concurrent_exports(port, tenant, n, delay_ms=500):
    """n /export requests of `tenant` at once (each its own connection); their statuses."""
    out = [None] * n
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait()
        try:
            out[i] = call(port, "GET", f"/export/report?delay={delay_ms}", {"x-tenant-id": tenant}, timeout=10)[0]
        except (OSError, http.client.HTTPException) as ex:
            out[i] = type(ex).__name__
    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    return out


def wait_load(max_s=900, below=2.0):
    t0 = time.time()
    while True:
        la = os.getloadavg()[0]
        if la < below or time.time() - t0 >= max_s:
            return la, time.time() - t0
        print(f"load average {la:.2f} >= {below}: waiting ({time.time() - t0:.0f} s)", flush=True)
        time.sleep(30)


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--envoy", default=os.environ.get("ENVOY_BIN") or os.path.join(ROOT, ".venv/bin/envoy"))
    ap.add_argument("--load", type=float, default=0.8, help="share of the measured capacity to offer")
    ap.add_argument("--wait-load", action="store_true",
                    help="first wait (up to 15 min, polling every 30 s) for the 1-min load average to drop below 2.0")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "SOAK.md"))
    ap.add_argument("--no-trap", action="store_true", help="diagnosis: skip the forced trap")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    ap.add_argument("--serve-upstream", metavar="PORT_FILE", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_upstream:
        return serve_upstream(a.serve_upstream)
    for p, hint in ((TQ_WASM, "make build"), (a.envoy, "make envoy")):
        if not os.path.exists(p):
            sys.exit(f"{p} missing: run `{hint}` (or `make soak`)")
    if not shutil.which("wrk"):
        sys.exit("wrk missing: run `make bench-tools` (or `make soak`)")
    seconds = int(a.minutes * 60)
    load_wait = wait_load() if a.wait_load else None
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    workdir = tempfile.mkdtemp(prefix="tq-soak-")
    WASM_COPY[0] = os.path.join(workdir, "tenant_quota.wasm")
    shutil.copyfile(TQ_WASM, WASM_COPY[0])
    with open(WASM_COPY[0], "rb") as f:
        res_wasm = hashlib.sha256(f.read()).hexdigest()[:12]
    git = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "src"], capture_output=True, text=True).stdout.strip()
    lua = os.path.join(workdir, "soak.lua")
    with open(lua, "w") as f:
        f.write(LUA)
    port_file = os.path.join(workdir, "upstream.port")
    up_log = open(os.path.join(workdir, "upstream.log"), "w")
    upstream = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve-upstream", port_file],
                                stdout=up_log, stderr=subprocess.STDOUT)
    envoy = None
    res = {"minutes": a.minutes, "seconds": seconds, "started": started, "load_before": load_before, "load_wait": load_wait,
           "build": f"filter: git HEAD {git or '?'}{' (src/ has local changes)' if dirty else ''}, wasm sha256 {res_wasm}… (copied at the start)."}
    try:
        deadline = time.time() + 10
        while not os.path.exists(port_file):
            if time.time() > deadline or upstream.poll() is not None:
                raise RuntimeError("upstream did not start")
            time.sleep(0.05)
        with open(port_file) as f:
            up_port = int(f.read())
        # Start with limits for a guessed rate; the soak pushes limits derived from the capacity.
        lim0 = limits_for(5000, a.minutes)
        envoy = Envoy(a.envoy, workdir, up_port, plugin_config(lim0, "A"))
        print(f"envoy pid {envoy.proc.pid}, listener :{envoy.port}, admin :{envoy.admin}, upstream :{up_port}, work {workdir}",
              flush=True)
        rss_start = envoy.rss()

        c0 = (envoy.cpu_s(), proc_cpu_s(upstream.pid), rusage_s(resource.RUSAGE_CHILDREN))
        cap = run_wrk(envoy.port, 10, 0, lua)
        c1 = (envoy.cpu_s(), proc_cpu_s(upstream.pid), rusage_s(resource.RUSAGE_CHILDREN))
        cap["cpu"] = dict(zip(("Envoy", "upstream", "wrk"), (b - a for a, b in zip(c0, c1))))
        res["capacity"] = cap
        rate = int(cap["rps"] * a.load)
        lim = limits_for(rate, a.minutes)
        res.update(rate=rate, limits=lim, rss_start=rss_start)
        print(f"capacity {cap['rps']:.0f} req/s (statuses {dict(cap['counts'].most_common(6))}); offering {rate} req/s; "
              f"limits {lim}", flush=True)
        v, took, err = envoy.push(plugin_config(lim, "A"))
        if err:
            raise RuntimeError(f"push {v} rejected: {err}")
        time.sleep(1)

        probe_k = int(PROBE_PER_S * seconds)
        side = Side(envoy, seconds, probe_k)
        side.no_trap = a.no_trap
        res["probe_k"] = probe_k
        cpu0 = (envoy.cpu_s(), proc_cpu_s(upstream.pid), rusage_s(resource.RUSAGE_CHILDREN), rusage_s(resource.RUSAGE_SELF))
        res["soak_wall"] = time.time()
        side.start(lim)
        soak = run_wrk(envoy.port, seconds, rate, lua)
        res["soak"] = soak
        cpu1 = (envoy.cpu_s(), proc_cpu_s(upstream.pid), rusage_s(resource.RUSAGE_CHILDREN), rusage_s(resource.RUSAGE_SELF))
        res["cpu"] = dict(zip(("Envoy", "upstream", "wrk", "side clients (this script)"), (b - a for a, b in zip(cpu0, cpu1))))
        res["envoy_cpu_s"] = res["cpu"]["Envoy"]
        print(f"soak: {soak['requests']} requests, {soak['rps']:.0f} req/s, errors {soak.get('errors')}", flush=True)
        side.finish()
        res["side"] = side
        # Every slow request has ended (route timeout 1 s, exports <= 1.5 s); slots of a trapped
        # VM come back once its ledger is 10 s stale. Poll the export tenants until all are 0.
        time.sleep(3)
        t_drain = time.monotonic()
        exp_used = {}
        while True:
            exp_used = {}
            for k in range(EXPORT_TENANTS):
                st, j = admin_json(envoy.port, "GET", f"/tenants/exp-{k}")
                exp_used[f"exp-{k}"] = j["budgets"]["export_concurrency"]["used"] if st == 200 and j else f"HTTP {st}"
            if all(u == 0 for u in exp_used.values()) or time.monotonic() - t_drain > 30:
                break
            time.sleep(1)
        res["exp_used"] = exp_used
        res["leaked_detail"] = {t: admin_json(envoy.port, "GET", f"/tenants/{t}")[1]["budgets"]["export_concurrency"]
                                for t, u in exp_used.items() if u != 0 and isinstance(u, int)}
        res["exp_used_after_s"] = round(3 + time.monotonic() - t_drain, 1)
        burst_n = EXPORT_LIMIT + EXPORT_BURST
        res["burst"] = concurrent_exports(envoy.port, "exp-0", burst_n)
        time.sleep(0.3)
        st, j = admin_json(envoy.port, "GET", "/tenants/probe")
        res["probe_used"] = j["budgets"]["probe_total"]["used"] if st == 200 and j else f"HTTP {st}"
        res["status"] = admin_json(envoy.port, "GET", "/status")[1]
        res["stats"] = envoy.stats(r"^(listener_manager\.(lds\.update_(success|rejected)|total_filter_chains_draining|"
                                   r"listener_modified|listener_in_place_updated)|wasm\..*|wasmcustom\.quota_(errors_total|"
                                   r"in_flight_reclaimed_total)|http\.ingress\.downstream_rq_[1-5]xx|"
                                   r"http\.ingress\.downstream_cx_total|cluster\.upstream\.upstream_rq_(timeout|rx_reset))$")
        res["rss_end"] = envoy.rss()
    finally:
        if envoy:
            envoy.stop()
        upstream.kill()
        upstream.wait()
        up_log.close()
    res["access"] = parse_access_log(envoy.access_log, res["side"].trap.get("wall"), res["soak_wall"])
    res["log"] = envoy_log_findings(envoy.log_path)
    res["elapsed_s"] = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    report = write_report(a, res)
    print(report)
    if a.keep:
        print(f"work directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(0 if res["all_pass"] else 1)


def pct(xs, p):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def write_report(a, res):
    side, soak, cap = res["side"], res["soak"], res["capacity"]
    acc, log = res["access"], res["log"]
    causes = acc["causes"]
    tr = side.trap
    checks = []

    # 1. 5xx: none from the filter; Envoy's by cause, the trapped VM's only around the trap.
    fivexx = {k: n for k, n in causes.items() if k[1] >= 500}
    filter_5xx = sum(n for k, n in fivexx.items() if k[0].startswith("filter"))
    other_5xx = sum(n for k, n in fivexx.items() if k[0] == "other")
    wrk_filter_5xx = sum(n for k, n in soak["counts"].items() if k[0] == "5" and " " in k)
    checks.append(("No 5xx from the filter (none carries `x-tenant-quota-reason`; `on_error: allow`); every other 5xx "
                   "explained: upstream timeout (UT), upstream reset (UC), or a stream of the trapped VM (`wasm_fail_stream`, "
                   "ending within the trap's second)", filter_5xx == 0 and other_5xx == 0 and wrk_filter_5xx == 0,
                   f"filter 5xx {filter_5xx} (wrk saw {wrk_filter_5xx}), unexplained 5xx {other_5xx}"))
    # 2. Exactly one trap in Envoy's log.
    crit = log["critical"]
    checks.append(("Envoy's log shows the forced trap and no other: one `Uncaught RuntimeError`, no critical line",
                   len(log["uncaught"]) == 1 and log["trap"] is not None and not crit,
                   f"{len(log['uncaught'])} `Uncaught RuntimeError` line(s), {len(crit)} critical line(s), "
                   f"{len(log['error'])} error line(s)"))
    # 3. RSS flat after warm-up.
    rss = [r for _, r, _ in side.rss]
    q = max(1, len(rss) // 4)
    m2, m4 = statistics.median(rss[q:2 * q] or rss), statistics.median(rss[-q:])
    growth = m4 / m2 - 1
    checks.append(("RSS flat after warm-up: median of the last quarter of the samples within 10 % of the second "
                   "quarter's", abs(growth) <= 0.10, f"{m2 / 1e6:.1f} MB -> {m4 / 1e6:.1f} MB ({growth * 100:+.1f} %)"))
    # 4. Probe exact.
    ok200 = side.probe.get(200, 0)
    others = {k: v for k, v in side.probe.items() if k != 200}
    checks.append((f"Probe: admin `used` of tenant probe's probe_total equals the 200s it got (K = {res['probe_k']} "
                   "sequential requests)", res["probe_used"] == ok200 and side.probe_sent == res["probe_k"],
                   f"sent {side.probe_sent}, 200s {ok200}, other answers {others or 'none'}, used {res['probe_used']}"))
    # 5. in_flight slots back.
    nonzero = {k: v for k, v in res["exp_used"].items() if v != 0}
    checks.append((f"export_concurrency `used` back to 0 for all {EXPORT_TENANTS} tenants that used /export",
                   not nonzero, f"all 0, {res['exp_used_after_s']} s after the load stopped" if not nonzero
                   else f"not 0: {nonzero}"))
    checks.append((f"A fresh burst of limit + burst_credits = {EXPORT_LIMIT + EXPORT_BURST} concurrent /export requests "
                   "of exp-0 is admitted", all(x == 200 for x in res["burst"]), f"statuses {res['burst']}"))
    # 6. Every push applied.
    bad = [p for p in side.pushes if p["error"]]
    checks.append(("Every LDS push applied (counted by Envoy, its limits served)", bool(side.pushes) and not bad,
                   f"{len(side.pushes)} pushes, {len(bad)} failed" + (f": {bad[:2]}" if bad else "")))
    res["all_pass"] = all(ok for _, ok, _ in checks)

    now = res["started"].strftime("%Y-%m-%d %H:%M UTC")
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        cpu_model = ""
    envoy_version = subprocess.run([a.envoy, "--version"], capture_output=True, text=True).stdout.strip().split("version:")[-1].strip()
    la = res["load_before"]
    wait_note = f" (reached after waiting {res['load_wait'][1]:.0f} s)" if res["load_wait"] else ""
    lines = [
        "# Soak test", "",
        f"Run {now} by `python3 bench/soak.py --minutes {a.minutes:g}`: {res['seconds']} s of load "
        f"({res['elapsed_s'] / 60:.1f} min in all with the capacity run and the checks). Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores shared with other jobs ({cpu_model}), Linux {platform.release()}; Envoy "
        f"{envoy_version} (V8), `--concurrency 2`, no pinning: Envoy, wrk, the Python upstream and the side clients "
        f"share the 2 cores. Load average before the run: {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f} (1 / 5 / 15 min)"
        f"{wait_note}. The {res['build']}", "",
        "## Checks", "",
        "| Check | Result | Detail |", "|---|---|---|",
    ]
    for name, ok, detail in checks:
        lines.append(f"| {name} | **{'PASS' if ok else 'FAIL'}** | {detail} |")

    if nonzero:
        w = acc["trap_start"] or (tr or {}).get("wall")
        lines += ["", "Slots not back: for each such tenant, its /export requests that Envoy answered 503 "
                  "`wasm_fail_stream` (in flight on the trapped VM), by start time relative to the trap request's start "
                  "(a slot taken within the last tick, 5 ms, before a trap has not reached the VM's ledger yet, so "
                  "nobody gives it back: the leak src/store/ledger.rs documents as the safe side):", ""]
        for t in sorted(nonzero):
            starts = sorted(b - w for tn, b, _ in acc["failed_exports"] if tn == t) if w else []
            lines.append(f"- {t}: used {nonzero[t]}; in flight at the trap, started at "
                         + (", ".join(f"{x * 1000:+.0f} ms" for x in starts) or "none logged"))
        lines += ["", f"Admin view of those tenants after the checks: {json.dumps(res.get('leaked_detail'))}"]

    lat = soak.get("lat_us", {})
    cpu = res["cpu"]
    lines += ["", "## Load", "",
              f"Capacity: **{cap['rps']:.0f} req/s** (wrk for 10 s, unpaced, the same mix, script and {CONNECTIONS} connections, "
              f"Envoy already started). Offered: **{res['rate']} req/s** ({a.load * 100:.0f} %); achieved "
              f"{soak['rps']:.0f} req/s over {soak['duration_s']:.0f} s, {soak['requests']} requests. wrk socket errors: "
              f"{soak.get('errors')} (`status` counts every non-2xx answer; `read` are connections closed under it).", "",
              f"Latency under the load, as the probe saw it (a new connection per request, answered by Envoy after the "
              f"filter): p50 {pct(side.probe_ms, 50):.1f} ms, p90 {pct(side.probe_ms, 90):.1f} ms, p99 "
              f"{pct(side.probe_ms, 99):.1f} ms, max {max(side.probe_ms or [0]):.0f} ms. wrk's own percentiles (p50 "
              f"{lat.get('50', 0) / 1000:.2f} ms, p90 {lat.get('90', 0) / 1000:.1f} ms, p99 {lat.get('99', 0) / 1000:.0f} ms) "
              "look wrong and are not used: they put about 10 % of the requests in the tail although only 3.5 % wait "
              "for the upstream's delays (exports 50-300 ms, slow requests cut at 1 s). A check during development "
              "with only /v1/cached plus 3.5 % exports (Envoy's stats confirmed the mix) gave the same wrk p90 of "
              "80 ms while a separate client timing cached requests saw a few ms.", "",
              f"CPU at capacity (10 s): " + ", ".join(f"{k} {v / cap['duration_s'] * 100:.0f} %" for k, v in cap["cpu"].items())
              + " of one core; the rest of the 2 cores went to the other jobs on the machine.", "",
              "CPU used during the soak (seconds, of " + f"{2 * soak['duration_s']:.0f} available on 2 cores): "
              + ", ".join(f"{k} {v:.0f} s" for k, v in cpu.items()) + ".", "",
              f"How the load is generated: wrk (`-t1 -c{CONNECTIONS}`, Debian's build, LuaJIT) runs a Lua script whose `delay()` "
              "paces the requests against the monotonic clock (LuaJIT ffi `clock_gettime`): request n goes out no "
              "earlier than start + n / rate, on whichever connection is free, so the rate holds while slow requests "
              "occupy connections; a backlog older than 50 ms is dropped rather than sent as a burst. The same script "
              "unpaced measures the capacity. Its `response()` counts statuses with the filter's reason and budget. Mix:",
              "", "| Share | Request |", "|---:|---|"]
    for name, share in MIX:
        lines.append(f"| {share * 100:g} % | {name} |")
    lim = res["limits"]
    lines += ["",
              f"Tenants: {HOT_SHARE * 100:g} % of the requests but exports come from {HOT} hot tenants t-0..t-{HOT - 1}, the "
              f"rest from {N_TENANTS - HOT} others (t-{HOT}..t-{N_TENANTS - 1}); exports from exp-0..exp-{EXPORT_TENANTS - 1}. "
              f"Limits are derived from the offered rate so that hot tenants (about "
              f"{HOT_SHARE * res['rate'] / HOT * 60:.0f} requests per minute each) are refused part of the time and the "
              f"others never: requests_per_minute {lim['rpm_a']} (config A) or {lim['rpm_b']} (config B, which also gives "
              f"t-0 an override of {lim['rpm_b'] * 3} + 50) with 20 burst credits; query_cost_per_minute {lim['cost']} + "
              f"{lim['cost'] // 10}; ingest_bytes_per_day {lim['ingest']} + {lim['ingest'] // 16}; export_concurrency "
              f"(in_flight, path_prefix /export) {EXPORT_LIMIT} + {EXPORT_BURST}; probe_total (requests, path_prefix /probe, "
              "window 10^12 ms: never resets); tenant `probe` has requests_per_minute 10^9, `acme` an override. "
              "`on_error: allow`, admin with a token, `test_hooks.trap_path: /__trap`, `failure_policy: FAIL_RELOAD`, "
              "vm_id `tenant_quota`, route timeout 1 s. Envoy answers /v1/cached and /probe itself (direct_response, "
              "after the filter); the rest goes to the upstream, a Python ThreadingHTTPServer in its own process.", "",
              f"Beside wrk: the probe (exactly K = {res['probe_k']} sequential GET /probe/<i> of tenant `probe`, a new "
              f"connection each, {PROBE_PER_S}/s), client aborts (about {ABORTS_PER_S}/s: half GET /export/report?delay=1500 "
              "of an export tenant, half GET /v1/slow?delay=2000; closed 20-400 ms after sending, half with RST), the "
              "admin API every second (GET usage of a random tenant and of an export tenant, GET status, PUT or DELETE of "
              "t-49's override in turn), an LDS push every 30 s, the trap halfway, RSS every 10 s.", "",
              "## Requests by status", "",
              "wrk's requests; the filter's 429s by `x-tenant-quota-reason` and `x-tenant-quota-budget`:", "",
              "| Status | Reason, budget | Count | Share |", "|---|---|---:|---:|"]
    total = sum(soak["counts"].values()) or 1
    for k, n in sorted(soak["counts"].items(), key=lambda kv: (kv[0].split(" ")[0], -kv[1])):
        st, _, rest = k.partition(" ")
        lines.append(f"| {st} | {rest.replace(' ', ', ') or '–'} | {n} | {n / total * 100:.2f} % |")
    lines += ["", "429s by tenant (access log, all clients):", "",
              "| Tenants | Reason | 429s | distinct tenants refused |", "|---|---|---:|---:|"]
    for (cls, reason), n in sorted(acc["rejected"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {cls} | {reason} | {n} | {acc['rejected_tenants'].get(cls, '')} |")
    lines += ["", "Every 5xx and client abort of the soak, by cause (access log: response flags and details; all "
              "clients):", "", "| Cause | Status | Flags | Details | Count |", "|---|---:|---|---|---:|"]
    for (cause, code, flags, details), n in sorted(causes.items(), key=lambda kv: (kv[0][0], -kv[1])):
        lines.append(f"| {cause} | {code} | {flags} | `{details}` | {n} |")
    adm = collections.Counter()
    for (name, st), n in side.admin.items():
        adm[f"{name} {st}"] += n
    lines += ["", f"Side clients: probe {dict(side.probe)}; aborts sent {sum(side.aborts.values())} "
              f"({dict(side.aborts)}); admin calls: " + ", ".join(f"{k} × {v}" for k, v in sorted(adm.items()))
              + (f"; not answered 200: {side.admin_fail[:8]}" if side.admin_fail else "") + "."]

    lines += ["", "## Config pushes", "",
              f"{len(side.pushes)} push(es), configs A and B in turn (same vm_id), each written next to the LDS file and "
              "renamed over it. Time until Envoy counted the update (`listener_manager.lds.update_success`, nothing "
              "warming) and then 6 admin answers in a row, each on a new connection, showed t-0's pushed limit:", "",
              "| t (s) | version | config | applied and served after (ms) | error |", "|---:|---|---|---:|---|"]
    for p in side.pushes:
        lines.append(f"| {p['at_s']} | {p['version']} | {p['variant']} | {p['active_after_ms']} | {p['error'] or ''} |")
    lines += ["", "Envoy stats at the end: " + ", ".join(f"`{k}` {v}" for k, v in sorted(res["stats"].items())) + "."]

    lines += ["", "## The trap", ""]
    if tr:
        failed = acc["failed"]
        w = acc["trap_start"] or tr["wall"]  # the trap request's start in the access log
        inflight = [(b, e) for b, e in failed if b < w - 0.005]
        fresh = [(b, e) for b, e in failed if b >= w - 0.005]
        reload = f"{log['reload_ms']:.0f} ms" if log["reload_ms"] is not None else "not seen"
        lines += [f"GET /__trap at t = {tr['at_s']} s of the soak got {tr.get('status')}. Envoy logged a plugin "
                  f"configured again on the trapped worker {reload} after the trap line. Answered 503 "
                  f"`wasm_fail_stream` by Envoy: {len(inflight)} streams in flight on the trapped VM (their answers "
                  "came back to a dead VM)"
                  + (f", ending by {max(e for _, e in inflight) - w:+.2f} s" if inflight else "")
                  + f"; {len(fresh)} requests that arrived after the trap (the trap's own included) while the worker "
                  "reloaded its VM (FAIL_RELOAD)"
                  + (f", the last one {max(b for b, _ in fresh) - w:+.2f} s after the trap: that is the recovery time"
                     if fresh else "") + ". "
                  "The probe got " + f"{sum(v for k, v in side.probe.items() if k != 200)} of them (not counted by the "
                  "filter, as the exact probe count shows). The trapped VM's in_flight slots came back by themselves "
                  "once its ledgers were 10 s stale: "
                  + ("; ".join(f"{n} slots of {v} ledger(s) at +{t:.1f} s (thread {th})" for t, n, v, th in log["reclaims"])
                     or "no reclaim logged") + ".", "", "Envoy's log:", "", "```"]
        for l in [log["trap"]] + log["uncaught"] + ([log.get("reload_line")] if log.get("reload_line") else []) + log["reclaim"][:6]:
            if l:
                lines.append(l[:300])
        lines += ["```"]
    extra = [l for l in log["critical"] + log["error"] if "Uncaught RuntimeError" not in l]
    if extra:
        lines += ["", f"Other error / critical lines in Envoy's log ({len(extra)}), the first ones:", "", "```"]
        lines += [l[:300] for l in extra[:10]] + ["```"]

    lines += ["", "## Memory", "", f"Envoy RSS every {RSS_EVERY_S} s of the soak (before the capacity run: "
              f"{res['rss_start'] / 1e6:.1f} MB; after the checks: {res['rss_end'] / 1e6:.1f} MB):", "",
              "| t (s) | RSS MB | Envoy CPU s (cumulative) |", "|---:|---:|---:|"]
    for t, r, c in side.rss:
        lines.append(f"| {t} | {r / 1e6:.1f} | {c:.0f} |")
    status = res.get("status") or {}
    lines += ["", f"Admin status at the end: tracked tenants {status.get('tracked_tenants')}.", "",
              "## Reproduce", "",
              "`make soak` (builds the filter, installs Envoy and wrk, then runs `python3 bench/soak.py --minutes 10`). "
              "`python3 bench/soak.py --minutes 1` for a short run; `--keep` keeps the work directory (Envoy and LDS "
              "config, Envoy log, access log); `--wait-load` first waits (up to 15 min) for the 1-minute load average "
              "to drop below 2.0; `--out` writes the report elsewhere. It exits non-zero when a check fails."]
    text = "\n".join(lines) + "\n"
    with open(a.out, "w") as f:
        f.write(text)
    return text


if __name__ == "__main__":
    main()
