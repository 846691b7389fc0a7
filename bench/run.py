#!/usr/bin/env python3
"""`make bench`: tenant-quota against bare Envoy, Envoy's native local_ratelimit and the
no-op proxy-wasm floor, in one run, variants alternated, medians of several rounds.

Envoy runs with --concurrency 1 pinned to CPU 0 (taskset), wrk pinned to CPU 1; every wrk
run is bounded in time. Writes bench/RESULTS.md and bench/results.png.

Global budgets (SPEC 8, issue 9): variants (h) and (i) add a `"global"` requests_per_minute
to (e), against the real envoyproxy/ratelimit (`make ratelimit`) and a real Redis, both pinned
to CPU 1 with wrk; (j) is Envoy's native ratelimit filter against the same service. Their CPU
is counted beside Envoy's.
"""
import argparse
import copy
import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TQ_WASM = os.path.join(ROOT, "target/wasm32-wasip1/release/tenant_quota.wasm")
NOOP_WASM = os.path.join(ROOT, "bench/noop/target/wasm32-wasip1/release/noop_filter.wasm")
# envoyproxy/ratelimit's service_cmd, installed pinned by `make ratelimit` (mk/ratelimit.mk).
RATELIMIT_BIN = os.environ.get("RATELIMIT_BIN") or os.path.join(ROOT, ".tools/go/bin/service_cmd")
TOKEN_SHA256 = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"  # "secret"
HUGE = 10**15
# requests_per_minute's limit: high enough that nothing is rejected (about 3000 requests per
# tenant and minute at these rates), low enough for a global budget, whose limit +
# burst_credits must fit the rate limit service's 32-bit requests_per_unit; (j)'s RLS limit.
RPM_LIMIT = 4_000_000_000
RLS_DOMAIN = "tenant-quota"

ONE_BUDGET = {"tenant": {"max_tracked": 2000000},
              "budgets": {"requests_per_minute": {"counts": "requests", "window_ms": 60000, "limit": HUGE}}}
FOUR_BUDGETS = {
    "tenant": {"header": "x-tenant-id", "fallback": "anonymous", "max_tracked": 2000000},
    "budgets": {
        "requests_per_minute": {"counts": "requests", "window_ms": 60000, "limit": RPM_LIMIT, "burst_credits": 20},
        "ingest_bytes_per_day": {"counts": "request_bytes", "window_ms": 86400000, "limit": HUGE, "burst_credits": 536870912},
        "query_cost_per_minute": {"counts": {"request_header": "x-query-cost"}, "window_ms": 60000, "limit": HUGE, "burst_credits": 2000},
        "export_concurrency": {"counts": "in_flight", "limit": HUGE, "burst_credits": 2, "match": {"path_prefix": "/export"}},
    },
    "tenants": {
        "acme": {"priority": "vip", "budgets": {"requests_per_minute": {"limit": RPM_LIMIT, "burst_credits": 25}}},
        "batchco": {"priority": "low"},
    },
}
SATURATION = {
    "signals": {
        "cpu_load": {"from": "orca:cpu_utilization", "elevated": 0.75, "critical": 0.9},
        "queue_depth": {"from": "in_flight", "elevated": 200, "critical": 500},
        "db_latency_ms": {"from": "response_header:x-db-latency-ms", "elevated": 250, "critical": 1000},
    },
    "stale_after_ms": 10000,
    "keep": {"elevated": {"vip": 1.0, "normal": 0.8, "low": 0.5}, "critical": {"vip": 1.0, "normal": 0.5, "low": 0.0}},
    "retry_after_s": 5,
}

# (k): (e) plus one budget counted per team (SPEC 7); requests carry `x-team-id` (100 teams).
TEAM_BUDGETS = copy.deepcopy(FOUR_BUDGETS)
TEAM_BUDGETS["scopes"] = {"team": {"header": "x-team-id", "max_tracked": 100000}}
TEAM_BUDGETS["budgets"]["team_requests_per_minute"] = {"counts": "requests", "window_ms": 60000, "limit": HUGE, "scope": "team"}

# (g): one LLM token budget reading the usage of a ~4 KB SSE answer (40 events); (g0) and (g1)
# the no-op floor on the same answer and on a 40 KB one: Envoy's own cost per KB.
TOKENS_BUDGET = {"tenant": {"max_tracked": 2000000},
                 "budgets": {"tokens": {"counts": {"llm_tokens": "total"}, "window_ms": 60000, "limit": HUGE}}}

# (l): (e) with `on_exceed: queue` on requests_per_minute, which never fills: the cost of the
# action itself. (m): (e) plus an in_flight budget of 8 slots on every path with `queue`: with
# 32 connections most requests wait for a slot (freed at the end of a request, taken on the
# next 5 ms tick), so its CPU per request is that of requests that waited and were admitted.
QUEUE_NEVER_FILLS = copy.deepcopy(FOUR_BUDGETS)
QUEUE_NEVER_FILLS["budgets"]["requests_per_minute"]["on_exceed"] = "queue"
QUEUE_ALWAYS_WAITS = copy.deepcopy(FOUR_BUDGETS)
QUEUE_ALWAYS_WAITS["budgets"]["slots"] = {"counts": "in_flight", "limit": 8, "on_exceed": "queue",
                                          "queue": {"timeout_ms": 5000, "max_waiting": 1000}}

GLOBAL = {"cluster": "ratelimit", "domain": RLS_DOMAIN, "sync_period_ms": 200, "timeout_ms": 100, "on_unavailable": "local"}

# (h2): (g)'s token budget global `sync` (SPEC 8): the same SSE answer, its usage sent to the
# rate limit service by the sync loop.
TOKENS_GLOBAL = copy.deepcopy(TOKENS_BUDGET)
TOKENS_GLOBAL["budgets"]["tokens"]["global"] = "sync"
TOKENS_GLOBAL["global"] = dict(GLOBAL)


def global_budgets(mode):
    """(e)'s four budgets with requests_per_minute global (`sync` or `exact`), SPEC 8."""
    cfg = copy.deepcopy(FOUR_BUDGETS)
    cfg["budgets"]["requests_per_minute"]["global"] = mode
    cfg["global"] = dict(GLOBAL)
    return cfg


# A variant's kind: None (no filter), "native", ("wasm", file, config) or, for variants
# that need the rate limit service, ("wasm", file, config, opts) / ("native_rls", opts) where
# opts holds "rls" (Envoy gets the `ratelimit` cluster) and maybe "cluster_route" (the route
# forwards to a cluster instead of direct_response: Envoy's ratelimit filter does nothing on
# a route without a cluster, so (j) needs one; a health_check filter placed before the router
# answers 200 locally, so no request leaves Envoy; (i) gets the same route and filter, so
# (i) and (j) differ only in the rate limiting filter).
VARIANTS = [
    ("a", "bare Envoy", None),
    ("b", "native local_ratelimit", "native"),
    ("c", "no-op wasm", ("wasm", NOOP_WASM, "{}")),
    ("d", "tenant-quota, 1 budget", ("wasm", TQ_WASM, json.dumps(ONE_BUDGET))),
    ("e", "tenant-quota, SPEC's 4 budgets", ("wasm", TQ_WASM, json.dumps(FOUR_BUDGETS))),
    ("f", "(e) + saturation signals", ("wasm", TQ_WASM, json.dumps(dict(FOUR_BUDGETS, saturation=SATURATION)))),
    ("k", "(e) + a team budget (scope)", ("wasm", TQ_WASM, json.dumps(TEAM_BUDGETS))),
    ("g", "tenant-quota, 1 token budget, 4 KB SSE answer", ("wasm", TQ_WASM, json.dumps(TOKENS_BUDGET), ("sse4",))),
    ("g2", "tenant-quota, 1 token budget, 40 KB SSE answer", ("wasm", TQ_WASM, json.dumps(TOKENS_BUDGET), ("sse40",))),
    ("g0", "no-op wasm, 4 KB SSE answer", ("wasm", NOOP_WASM, "{}", ("sse4",))),
    ("g1", "no-op wasm, 40 KB SSE answer", ("wasm", NOOP_WASM, "{}", ("sse40",))),
    ("l", "(e), requests_per_minute on_exceed queue (never fills)", ("wasm", TQ_WASM, json.dumps(QUEUE_NEVER_FILLS))),
    ("m", "(e) + 8 slots with queue: every request waits", ("wasm", TQ_WASM, json.dumps(QUEUE_ALWAYS_WAITS))),
    # The decision in access logs (`filter_state`): the filter's host calls (n), envoy/envoy.yaml's
    # JSON access log alone, formatting nulls (n1), and both (n2). The log goes to /dev/null.
    ("n", "(e) + filter_state (decision fields, no access log)", ("wasm", TQ_WASM, json.dumps(dict(FOUR_BUDGETS, filter_state=True)))),
    ("n1", "(e) + envoy.yaml's access log, filter_state off", ("wasm", TQ_WASM, json.dumps(FOUR_BUDGETS), ("access_log",))),
    ("n2", "(e) + filter_state + envoy.yaml's access log", ("wasm", TQ_WASM, json.dumps(dict(FOUR_BUDGETS, filter_state=True)), ("access_log",))),
    ("h", "(e), requests_per_minute global sync", ("wasm", TQ_WASM, json.dumps(global_budgets("sync")), ("rls",))),
    ("h2", "(g), the token budget global sync", ("wasm", TQ_WASM, json.dumps(TOKENS_GLOBAL), ("sse4", "rls"))),
    ("i", "(e), requests_per_minute global exact", ("wasm", TQ_WASM, json.dumps(global_budgets("exact")), ("rls", "cluster_route"))),
    ("j", "native ratelimit filter + RLS", ("native_rls", ("rls", "cluster_route"))),
]
GLOBAL_KEYS = ("h", "h2", "i", "j")
# The no-op filter doing one kind of host call each: what the quota's host calls cost.
PROBE_REPEAT = 10  # the no-op filter repeats the probed operation this many times per request
PROBES = [
    ("c1", "no-op + 10 request-header reads", ("wasm", NOOP_WASM, '{"read_header": true}')),
    ("c2", "no-op + 10 shared-data get + CAS set pairs", ("wasm", NOOP_WASM, '{"shared_pair": true}')),
    ("c3", "no-op + 10 response headers added", ("wasm", NOOP_WASM, '{"add_headers": 1}')),
]
# The floor of any wasm filter that waits for one RLS call (bench/noop's `grpc_call` probe,
# answer read and ignored), set up exactly like (i): same route, health_check responder, RLS
# and Redis, so (i0), (i1), (i) and (j) differ only in the filter. (i1) adds tenant-quota's
# host work around the call without its logic: one read of all request headers and a
# shared-data get + CAS set on the tenant's key before the call and again on its answer.
GRPC_CALL = {"cluster": "ratelimit", "domain": RLS_DOMAIN, "limit": RPM_LIMIT + 20}  # (i)'s limit + burst
GRPC_FLOOR = [
    ("i0", "no-op wasm + 1 ShouldRateLimit per request", ("wasm", NOOP_WASM, json.dumps({"grpc_call": GRPC_CALL}), ("rls", "cluster_route"))),
    ("i1", "(i0) + header read + 2 shared-data get/CAS set", ("wasm", NOOP_WASM, json.dumps({"grpc_call": GRPC_CALL, "grpc_state": True}), ("rls", "cluster_route"))),
]
SHORT = {"a": "bare", "b": "native\nlocal_ratelimit", "c": "no-op\nwasm", "d": "tenant-quota\n1 budget",
         "e": "tenant-quota\n4 budgets", "f": "(e) +\nsaturation", "h": "(e) global\nsync",
         "i": "(e) global\nexact", "j": "native\nratelimit + RLS"}

LUA_ROTATE = """
local i = 0
local n = tonumber(os.getenv("TQ_TENANTS") or "1000")
local offset = tonumber(os.getenv("TQ_OFFSET") or "0")
local mode = os.getenv("TQ_MODE") or "rotate"
request = function()
  local id
  if mode == "sequential" then
    id = offset + (i % n)
  elseif mode == "random" then
    id = math.random(0, n - 1)
  else
    id = i % n
  end
  i = i + 1
  return wrk.format("GET", "/", {["x-tenant-id"] = "tenant-" .. id, ["x-query-cost"] = "1", ["x-team-id"] = "team-" .. (id % 100)})
end
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def opts(kind):
    return kind[-1] if isinstance(kind, tuple) and isinstance(kind[-1], tuple) else ()


def filter_yaml(kind):
    if kind is None:
        return ""
    if isinstance(kind, tuple) and kind[0] == "native_rls":
        return f"""
          - name: envoy.filters.http.ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
              domain: {RLS_DOMAIN}
              failure_mode_deny: false
              timeout: 0.1s
              rate_limit_service:
                grpc_service: {{ envoy_grpc: {{ cluster_name: ratelimit }} }}
                transport_api_version: V3"""
    if kind == "native":
        return """
          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: http_local_rate_limiter
              token_bucket: { max_tokens: 1000000000, tokens_per_fill: 1000000000, fill_interval: 1s }
              filter_enabled: { runtime_key: lrl_enabled, default_value: { numerator: 100, denominator: HUNDRED } }
              filter_enforced: { runtime_key: lrl_enforced, default_value: { numerator: 100, denominator: HUNDRED } }"""
    _, wasm, cfg = kind[:3]
    cfg = json.dumps(cfg)  # a YAML double-quoted string is JSON-compatible
    return f"""
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: bench
                root_id: bench
                failure_policy: FAIL_RELOAD
                vm_config:
                  vm_id: bench
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: "{wasm}" }} }}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {cfg}"""


def bootstrap(kind, port, admin, rls_port=None):
    o = opts(kind)
    if "cluster_route" in o:
        # A route entry with a cluster (the native ratelimit filter skips routes without one)
        # and the descriptor ("tenant", <x-tenant-id>); the health_check filter answers.
        action = """route:
                  cluster: backend
                  rate_limits:
                  - actions:
                    - request_headers: { header_name: x-tenant-id, descriptor_key: tenant }"""
        responder = """
          - name: envoy.filters.http.health_check
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck
              pass_through_mode: false
              headers: [{ name: ":path", string_match: { prefix: "/" } }]"""
    elif any(x.startswith("sse") for x in o):
        # (g): an LLM-style SSE answer of N KB, about 100 bytes per event, usage in the last.
        kb = int(next(x for x in o if x.startswith("sse"))[3:])
        action = "direct_response: { status: 200, body: { inline_string: " + json.dumps(sse_body(kb)) + " } }"
        responder = ""
    else:
        action = 'direct_response: { status: 200, body: { inline_string: "ok\\n" } }'
        responder = ""
    clusters = ""
    if "rls" in o:
        clusters = f"""  clusters:
  - name: ratelimit
    connect_timeout: 0.25s
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: ratelimit
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {rls_port} }} }} }}
"""
    if "cluster_route" in o:
        clusters += """  - name: backend
    connect_timeout: 0.25s
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9 } } }
"""
    sse_header = ""
    if any(x.startswith("sse") for x in o):
        sse_header = "\n                - header: { key: content-type, value: text/event-stream }\n                  append_action: OVERWRITE_IF_EXISTS_OR_ADD"
    access_log = access_log_yaml() if "access_log" in o else ""
    return f"""admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: bench
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
{access_log}          route_config:
            max_direct_response_body_size_bytes: 1048576
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                {action}
                response_headers_to_add:{sse_header}
                - header: {{ key: endpoint-load-metrics, value: "TEXT cpu_utilization=0.3" }}
                - header: {{ key: x-db-latency-ms, value: "20" }}
          http_filters:{filter_yaml(kind)}{responder}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
{clusters}"""


def access_log_yaml():
    """envoy/envoy.yaml's access log format, written to /dev/null (the formatting is the cost)."""
    with open(os.path.join(ROOT, "envoy", "envoy.yaml")) as f:
        lines = f.read().splitlines()
    start = lines.index("              log_format:")
    end = start + 1
    while end < len(lines) and lines[end].startswith("                "):
        end += 1
    return "\n".join(["          access_log:", "          - name: envoy.access_loggers.file", "            typed_config:",
                      '              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog',
                      "              path: /dev/null"] + lines[start:end]) + "\n"


def sse_body(kb):
    """An OpenAI-style stream of about `kb` KB: ~100-byte chunks, then the usage chunk."""
    out, n = [], 0
    while n < kb * 1024 - 200:
        e = 'data: {"id":"c","choices":[{"index":0,"delta":{"content":"%s"}}],"usage":null}\n\n' % ("x" * 24)
        out.append(e)
        n += len(e)
    out.append('data: {"id":"c","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":%d,"total_tokens":%d}}\n\n' % (len(out), len(out) + 100))
    out.append("data: [DONE]\n\n")
    return "".join(out)


def proc_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (all threads)


class Envoy:
    def __init__(self, envoy_bin, kind, workdir, rls_port=None):
        self.port, self.admin = free_port(), free_port()
        self.cfg = os.path.join(workdir, f"envoy-{self.port}.yaml")
        with open(self.cfg, "w") as f:
            f.write(bootstrap(kind, self.port, self.admin, rls_port))
        self.log = open(os.path.join(workdir, f"envoy-{self.port}.log"), "w")
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", envoy_bin, "-c", self.cfg, "--concurrency", "1", "--disable-hot-restart", "-l", "warning"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited; see {self.log.name}")
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/ready", timeout=1).status == 200:
                    return
            except Exception:
                pass
            time.sleep(0.1)
        raise RuntimeError("envoy not ready")

    def cpu_ticks(self):
        return proc_ticks(self.proc.pid)

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def status(self):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/.quota/status", headers={"authorization": "Bearer secret"})
        return json.loads(urllib.request.urlopen(req, timeout=5).read())

    def stats(self, pattern):
        """Counters and gauges whose name matches the regex `pattern`, from the admin /stats."""
        q = urllib.parse.quote(pattern)
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/stats?filter={q}", timeout=5).read().decode()
        out = {}
        for line in body.splitlines():
            name, _, v = line.partition(": ")
            if v.strip().isdigit():
                out[name] = int(v)
        return out

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        # Envoy logs at warning level: every line is a warning or an error (but for the
        # startup advice that every config here gets).
        with open(self.log.name, errors="replace") as f:
            return [l.rstrip() for l in f if l.strip() and "global_downstream_max_connections" not in l]


def tcp_listeners(port):
    """Inodes of the sockets listening on 127.0.0.1:`port` (/proc/net/tcp, state 0A)."""
    with open("/proc/net/tcp") as f:
        rows = [l.split() for l in f.readlines()[1:]]
    return {r[9] for r in rows if r[1] == "0100007F:%04X" % port and r[3] == "0A"}


def socket_inodes(pid):
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return out


class RateLimitService:
    """Redis and envoyproxy/ratelimit, both pinned to CPU 1 beside wrk, so Envoy keeps CPU 0 to
    itself as in (a)-(f). One pair serves the whole run. Its domain file (the only file of its
    config dir) holds (j)'s rule on ("tenant", <id>); (h) and (i) send limit overrides, which
    the service applies for any configured domain without looking at the rules."""

    def __init__(self, workdir):
        self.procs = []
        self.logs = []
        for _ in range(20):  # redis cannot listen on port 0 and tell: pick one, retry if taken
            self.redis_port = free_port()
            log = open(os.path.join(workdir, f"redis-{self.redis_port}.log"), "w")
            p = subprocess.Popen(["taskset", "-c", "1", "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT)
            if self._wait(lambda: self.redis(["PING"]) == "PONG", p, 10):
                self.redis_proc = p
                self.procs.append(p)
                self.logs.append(log)
                break
            p.kill()
            p.wait()
            log.close()
        else:
            raise RuntimeError("could not start redis-server (`make redis` installs it)")
        config = os.path.join(workdir, "rt", "ratelimit", "config")
        os.makedirs(config)
        with open(os.path.join(config, "config.yaml"), "w") as f:
            f.write(f"domain: {RLS_DOMAIN}\n"
                    f"descriptors:\n  - key: tenant\n    rate_limit: {{ unit: minute, requests_per_unit: {RPM_LIMIT} }}\n")
        log = open(os.path.join(workdir, "ratelimit.log"), "w")
        self.logs.append(log)
        # The service binds its TCP listeners with SO_REUSEPORT: a port another process holds
        # would be bound too, silently, and the connections split. So after it listens, check
        # that the port's only listening socket is the service's; else try another port.
        for _ in range(10):
            self.port = free_port()
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                   "RUNTIME_ROOT": os.path.join(workdir, "rt"), "RUNTIME_SUBDIRECTORY": "ratelimit",
                   "RUNTIME_APPDIRECTORY": "config", "RUNTIME_WATCH_ROOT": "false", "RUNTIME_IGNOREDOTFILES": "true",
                   "REDIS_SOCKET_TYPE": "tcp", "REDIS_TYPE": "SINGLE", "REDIS_URL": f"127.0.0.1:{self.redis_port}",
                   "REDIS_TIMEOUT": "1s", "GRPC_HOST": "127.0.0.1", "GRPC_PORT": str(self.port),
                   "HOST": "127.0.0.1", "PORT": "0", "DEBUG_HOST": "127.0.0.1", "DEBUG_PORT": "0",
                   "DISABLE_STATS": "true", "USE_STATSD": "false", "LOG_LEVEL": "warn",
                   "EXPIRATION_JITTER_MAX_SECONDS": "0", "LOCAL_CACHE_SIZE_IN_BYTES": "0",
                   "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT": "false"}
            p = subprocess.Popen(["taskset", "-c", "1", RATELIMIT_BIN], env=env, stdout=log, stderr=subprocess.STDOUT)

            def listening():
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            if self._wait(listening, p, 30) and self.owns_port(p):
                self.rls_proc = p
                self.procs.append(p)
                return
            p.kill()
            p.wait()
        self.stop()
        raise RuntimeError(f"envoyproxy/ratelimit did not start alone on a port; see {log.name}")

    def owns_port(self, proc=None):
        """True if the service's socket is the only one listening on its gRPC port."""
        held = tcp_listeners(self.port)
        return len(held) == 1 and held <= socket_inodes((proc or self.rls_proc).pid)

    @staticmethod
    def _wait(ready, proc, seconds):
        deadline = time.time() + seconds
        while time.time() < deadline:
            if proc.poll() is not None:
                return False
            try:
                if ready():
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def redis(self, args):
        """One command over RESP; the reply's first line, decoded (enough for PING and GET)."""
        with socket.create_connection(("127.0.0.1", self.redis_port), timeout=5) as s:
            s.sendall(("*%d\r\n" % len(args) + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)).encode())
            f = s.makefile("rb")
            line = f.readline().decode().rstrip()
            if line.startswith("$"):
                return None if line == "$-1" else f.read(int(line[1:]) + 2)[:-2].decode()
            return line[1:]

    def cpu_ticks(self):
        return proc_ticks(self.rls_proc.pid), proc_ticks(self.redis_proc.pid)

    def stop(self):
        """Stop both; the service's log lines worth showing (errors, not its startup notices)."""
        for p in self.procs:
            p.kill()
            p.wait()
        for log in self.logs:
            log.close()
        with open(self.logs[-1].name, errors="replace") as f:
            return [l.rstrip() for l in f if l.strip() and not re.search(r"level=(info|warning)", l)]


def rls_calls(e):
    """Calls Envoy made to the `ratelimit` cluster (the service has no call counter of its own)."""
    return e.stats(r"^cluster\.ratelimit\.upstream_rq_total$").get("cluster.ratelimit.upstream_rq_total", 0)


def unit_us(v, unit):
    return float(v) * {"us": 1, "ms": 1000, "s": 1e6}[unit]


def wrk(port, seconds, lua, env=None, connections=32):
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency",
           "-s", lua, f"http://127.0.0.1:{port}/"]
    e = dict(os.environ, **(env or {}))
    out = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=seconds + 60).stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: unit_us(v, u) for p, v, u in re.findall(r"\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\b", out)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests": int(m.group(1)), "rps": rps, "p50_us": lat.get("50"), "p99_us": lat.get("99"),
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "raw": out}


# Envoy stats that show the rate limit service failing (or limiting) in (h), (i), (j).
RLS_STATS = r"^(wasmcustom\.quota_global_.*|cluster\.backend\.ratelimit\..*)$"


def measure(envoy_bin, kind, lua, workdir, seconds, warmup, rls=None):
    rls = rls if "rls" in opts(kind) else None
    e = Envoy(envoy_bin, kind, workdir, rls.port if rls else None)
    per_req = 1e6 / os.sysconf("SC_CLK_TCK")
    try:
        wrk(e.port, warmup, lua)
        if rls:
            a0, calls0 = rls.cpu_ticks(), rls_calls(e)
        t0 = e.cpu_ticks()
        r = wrk(e.port, seconds, lua)
        t1 = e.cpu_ticks()
        n = max(r["requests"], 1)
        r["cpu_us_per_req"] = (t1 - t0) * per_req / n
        if rls:
            a1, calls1 = rls.cpu_ticks(), rls_calls(e)
            r["rls_cpu_us_per_req"] = (a1[0] - a0[0]) * per_req / n
            r["redis_cpu_us_per_req"] = (a1[1] - a0[1]) * per_req / n
            r["svc_cpu_us_per_req"] = r["rls_cpu_us_per_req"] + r["redis_cpu_us_per_req"]
            r["total_cpu_us_per_req"] = r["cpu_us_per_req"] + r["svc_cpu_us_per_req"]
            r["rls_calls_per_req"] = (calls1 - calls0) / n
        r["rss"] = e.rss_bytes()
        # Latency without queueing: 2 connections keep Envoy's core far from saturation, so
        # p50/p99 show the time a request spends in Envoy, not in a queue.
        lat = wrk(e.port, 3, lua, connections=2)
        r["lat_p50_us"], r["lat_p99_us"] = lat["p50_us"], lat["p99_us"]
        r["lat_non2xx"] = lat["non2xx"]
        if rls:
            r["rls_stats"] = e.stats(RLS_STATS)
    finally:
        log = e.stop()
    if log:
        print(f"  envoy log ({len(log)} warning/error lines): " + " | ".join(log[:3]), flush=True)
    r["envoy_log_lines"] = len(log)
    return r


def scale(envoy_bin, lua, workdir, seconds, sizes):
    cfg = dict(ONE_BUDGET, admin={"path_prefix": "/.quota", "token_sha256": TOKEN_SHA256})
    kind = ("wasm", TQ_WASM, json.dumps(cfg))
    e = Envoy(envoy_bin, kind, workdir)
    out = []
    try:
        wrk(e.port, 2, lua, {"TQ_TENANTS": "1"})
        base_rss = e.rss_bytes()
        tracked = e.status()["tracked_tenants"]
        for n in sizes:
            deadline = time.time() + 240
            while tracked < n and time.time() < deadline:
                need = n - tracked
                secs = max(1, min(30, need // 15000 + 1))
                wrk(e.port, secs, lua, {"TQ_MODE": "sequential", "TQ_OFFSET": str(tracked), "TQ_TENANTS": str(need)},
                    connections=16)
                tracked = e.status()["tracked_tenants"]
                # wrk may overshoot; trim the figure reported to what is tracked.
            # Three short runs, median p99: one run's tail is noisy. Saturated (32 connections,
            # with Envoy's CPU per request), then unloaded (2 connections: no queueing).
            env = {"TQ_MODE": "random", "TQ_TENANTS": str(n)}
            t0 = e.cpu_ticks()
            rs = [wrk(e.port, max(3, seconds // 2), lua, env) for _ in range(3)]
            t1 = e.cpu_ticks()
            cpu = (t1 - t0) * 1e6 / os.sysconf("SC_CLK_TCK") / max(sum(x["requests"] for x in rs), 1)
            r = sorted(rs, key=lambda x: x["p99_us"])[1]
            lat = sorted((wrk(e.port, 3, lua, env, connections=2) for _ in range(3)), key=lambda x: x["p99_us"])[1]
            rss = e.rss_bytes()
            out.append({"target": n, "tracked": tracked, "rss": rss, "rss_growth": rss - base_rss,
                        "bytes_per_tenant": (rss - base_rss) / max(tracked, 1), "p50_us": r["p50_us"],
                        "p99_us": r["p99_us"], "rps": r["rps"], "non2xx": r["non2xx"] + lat["non2xx"],
                        "cpu_us_per_req": cpu, "lat_p50_us": lat["p50_us"], "lat_p99_us": lat["p99_us"]})
            print(f"  scale {n}: tracked {tracked}, rss {rss/1e6:.1f} MB, {cpu:.2f} us CPU/req, p99 {r['p99_us']:.0f} us saturated, "
                  f"{lat['p99_us']:.0f} us unloaded", flush=True)
    finally:
        e.stop()
    return out


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--envoy", default=os.environ.get("ENVOY_BIN") or os.path.join(ROOT, ".venv/bin/envoy"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--scale", default="1000,100000,1000000")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench"))
    ap.add_argument("--only", default="", help="comma-separated variant/probe keys to run (e.g. e,h,i,j); default all")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, Envoy/RLS logs)")
    a = ap.parse_args()
    keys = [k for k in a.only.split(",") if k]
    unknown = set(keys) - {v[0] for v in VARIANTS + PROBES + GRPC_FLOOR}
    if unknown:
        sys.exit(f"unknown --only keys: {sorted(unknown)}")
    selected = [v for v in VARIANTS + GRPC_FLOOR + PROBES if not keys or v[0] in keys]
    need_rls = any("rls" in opts(v[2]) for v in selected)
    for p in (TQ_WASM, NOOP_WASM) + ((RATELIMIT_BIN,) if need_rls else ()):
        if not os.path.exists(p):
            sys.exit(f"{p} missing: run `make bench`")
    if need_rls and not shutil.which("redis-server"):
        sys.exit("redis-server missing: run `make bench` (or `make redis`)")
    started = time.time()
    workdir = tempfile.mkdtemp(prefix="tq-bench-")
    lua = os.path.join(workdir, "tenants.lua")
    with open(lua, "w") as f:
        f.write(LUA_ROTATE)
    runs = {v[0]: [] for v in selected}
    rls = RateLimitService(workdir) if need_rls else None
    try:
        for rnd in range(a.rounds):
            for key, name, kind in selected:
                r = measure(a.envoy, kind, lua, workdir, a.seconds, a.warmup, rls)
                runs[key].append(r)
                extra = ""
                if "svc_cpu_us_per_req" in r:
                    extra = (f", RLS+Redis {r['svc_cpu_us_per_req']:.2f} us CPU/req, {r['rls_calls_per_req']:.3g} RLS calls/req, "
                             f"stats {r['rls_stats']}")
                print(f"round {rnd + 1} ({key}) {name}: {r['rps']:.0f} req/s, {r['cpu_us_per_req']:.2f} us CPU/req, "
                      f"p99 {r['p99_us']:.0f} us saturated, {r['lat_p99_us']:.0f} us unloaded, rss {r['rss']/1e6:.1f} MB, "
                      f"non-2xx {r['non2xx']}{extra}", flush=True)
    finally:
        if rls:
            shared = not rls.owns_port()
            errors = rls.stop()
            if errors:
                print(f"  envoyproxy/ratelimit log ({len(errors)} lines): " + " | ".join(errors[:5]), flush=True)
            if shared:
                print(f"  WARNING: another process listened on the service's port {rls.port} during the run", flush=True)
    sizes = [int(x) for x in a.scale.split(",") if x]
    sc = scale(a.envoy, lua, workdir, a.seconds, sizes) if sizes else []
    if a.keep:
        print(f"work directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    write_results(a, runs, sc, time.time() - started)


def write_results(a, runs, sc, elapsed):
    rows = []
    for key, name, _ in VARIANTS + PROBES + GRPC_FLOOR:
        rs = runs.get(key)
        if not rs:
            continue
        row = {"key": key, "name": name, "rps": med(rs, "rps"), "cpu": med(rs, "cpu_us_per_req"),
               "p50": med(rs, "p50_us"), "p99": med(rs, "p99_us"), "rss": med(rs, "rss"),
               "lp50": med(rs, "lat_p50_us"), "lp99": med(rs, "lat_p99_us"),
               "non2xx": sum(r["non2xx"] for r in rs), "lat_non2xx": sum(r.get("lat_non2xx", 0) for r in rs),
               "envoy_log_lines": sum(r.get("envoy_log_lines", 0) for r in rs)}
        if all("svc_cpu_us_per_req" in r for r in rs):
            row.update({"rls_cpu": med(rs, "rls_cpu_us_per_req"), "redis_cpu": med(rs, "redis_cpu_us_per_req"),
                        "svc_cpu": med(rs, "svc_cpu_us_per_req"), "total_cpu": med(rs, "total_cpu_us_per_req"),
                        "rls_calls": med(rs, "rls_calls_per_req"),
                        "rls_errors": sum(v for r in rs for k, v in r["rls_stats"].items() if k.endswith(".error")),
                        "rls_over_limit": sum(v for r in rs for k, v in r["rls_stats"].items() if k.endswith(".over_limit")),
                        "degraded": max(r["rls_stats"].get("wasmcustom.quota_global_degraded", 0) for r in rs)})
        rows.append(row)
    by = {r["key"]: r for r in rows}
    variants = [r for r in rows if r["key"] in {v[0] for v in VARIANTS}]
    probes = [r for r in rows if r["key"] in {p[0] for p in PROBES}]

    def ratio(r, base, field, fmt="{:.2f}"):
        return fmt.format(r[field] / by[base][field]) if base in by else "–"

    def target(x, limit):
        return f"**{x:.2f}** ({'met' if x <= limit else 'missed'})"

    lines = []
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    envoy_version = subprocess.run([a.envoy, "--version"], capture_output=True, text=True).stdout.strip().split("version:")[-1].strip()
    only = f", only {a.only}" if a.only else ""
    lines += [
        "# Benchmark results", "",
        f"Measured {now} by `make bench` ({elapsed/60:.1f} min{only}) on {platform.machine()}, {os.cpu_count()} cores "
        f"({cpu_model}), Linux {platform.release()}; Envoy {envoy_version}, V8.", "",
        f"Envoy `--concurrency 1` pinned to CPU 0, `wrk -t1 -c32 -d{a.seconds}s --latency` pinned to CPU 1, "
        f"direct-response route; {a.rounds} rounds with the variants alternated, medians shown; "
        f"{a.warmup} s warm-up per run. Requests rotate over 1000 tenant ids (`x-tenant-id`) with "
        "`x-query-cost: 1`. CPU is Envoy's user+system time (all threads, /proc) per request; RSS after the run. "
        "Latency is measured twice: under saturation (the 32-connection throughput run, where it is mostly queueing: "
        "connections ÷ throughput) and unloaded (a 3 s run with 2 connections, which shows the time a request "
        "spends in Envoy). (h), (i), (j): see [Global budgets](#global-budgets-the-rate-limit-service).", "",
        "| Variant | req/s | CPU µs/req | p50 µs unloaded | p99 µs unloaded | p50 µs saturated | p99 µs saturated | RSS MB | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in variants:
        lines.append(f"| ({r['key']}) {r['name']} | {r['rps']:.0f} | {r['cpu']:.2f} | {r['lp50']:.0f} | {r['lp99']:.0f} | "
                     f"{r['p50']:.0f} | {r['p99']:.0f} | {r['rss']/1e6:.1f} | {r['non2xx']} |")
    if any(k in by for k in "abc"):
        lines += ["", "Ratios (medians):", "",
                  "| Variant | req/s ÷ (a) | req/s ÷ (b) | req/s ÷ (c) | CPU − (c) µs | p99 ÷ (b) unloaded | p99 ÷ (b) saturated |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
    for r in variants if any(k in by for k in "abc") else []:
        d = f"{r['cpu'] - by['c']['cpu']:+.2f}" if "c" in by else "–"
        lines.append(f"| ({r['key']}) | {ratio(r, 'a', 'rps')} | {ratio(r, 'b', 'rps')} | {ratio(r, 'c', 'rps')} | {d} | "
                     f"{ratio(r, 'b', 'lp99')} | {ratio(r, 'b', 'p99')} |")
    if probes and "c" in by:
        lines += ["", f"Where the time goes: the no-op filter made to repeat one kind of host call {PROBE_REPEAT} times per "
                  "request, same run, medians; the price of one call is (CPU − (c)) ÷ 10:", "",
                  "| Probe | req/s | CPU µs/req | CPU − (c) µs | per call µs |", "|---|---:|---:|---:|---:|"]
        for r in probes:
            d = r['cpu'] - by['c']['cpu']
            lines.append(f"| ({r['key']}) {r['name']} | {r['rps']:.0f} | {r['cpu']:.2f} | {d:+.2f} | {d / PROBE_REPEAT:.2f} |")
    if all(k in by for k in "bce"):
        e = by["e"]
        lines += ["", "Targets: (e) ≥ 0.85 × the req/s of (c): "
                  f"**{e['rps']/by['c']['rps']:.2f}** ({'met' if e['rps']/by['c']['rps'] >= 0.85 else 'missed'}); "
                  f"p99 of (e) ≤ 1.3 × (b): unloaded **{e['lp99']/by['b']['lp99']:.2f}** "
                  f"({'met' if e['lp99']/by['b']['lp99'] <= 1.3 else 'missed'}), saturated **{e['p99']/by['b']['p99']:.2f}** "
                  f"({'met' if e['p99']/by['b']['p99'] <= 1.3 else 'missed'})."]
    if "k" in by and "e" in by:
        k, e = by["k"], by["e"]
        pair = ""
        if "c2" in by and "c" in by:
            price = (by["c2"]["cpu"] - by["c"]["cpu"]) / PROBE_REPEAT
            pair = (f"; the price of one shared-data get + CAS set in the same run ((c2)): **{price:.2f} µs**, so the team "
                    f"budget costs **{(k['cpu'] - e['cpu']) / price:.1f}** such pairs" if price > 0 else "")
        lines += ["", "## Scopes: a team budget", "",
                  "(k) is (e) plus `team_requests_per_minute` counted per `x-team-id` (100 teams; SPEC 7): one more "
                  "shared-data value per request, decided after the tenant's. Every variant's requests carry the header.", "",
                  f"(k) − (e), Envoy CPU per request: **{k['cpu'] - e['cpu']:+.2f} µs** ({k['cpu']:.2f} vs {e['cpu']:.2f}){pair}. "
                  f"Goal: at most the price of one more shared-data get and CAS set. p99 unloaded {ratio(k, 'e', 'lp99')} × (e), "
                  f"saturated {ratio(k, 'e', 'p99')} × (e)."]
    if all(k in by for k in ("g", "g0", "g1", "g2")):
        g, g0, g1, g2 = by["g"], by["g0"], by["g1"], by["g2"]
        envoy_kb = (g1["cpu"] - g0["cpu"]) / 36
        filter_kb = ((g2["cpu"] - g["cpu"]) - (g1["cpu"] - g0["cpu"])) / 36
        lines += ["", "## LLM usage from the response body", "",
                  f"(g) − (g0), one token budget reading a ~4 KB SSE answer (40 events) against the no-op floor on the same answer: "
                  f"**{g['cpu'] - g0['cpu']:+.2f} µs** per request ({g['cpu']:.2f} vs {g0['cpu']:.2f}: the admission, the response's "
                  f"status, content-type and body host calls, the parse and the settling CAS). Per KB, from the 40 KB answers: the "
                  f"filter adds **{filter_kb:.2f} µs per KB** of SSE parsed (((g2) − (g)) − ((g1) − (g0))) / 36 KB), Envoy's own handling "
                  f"costs **{envoy_kb:.2f} µs per KB** (((g1) − (g0)) / 36 KB). Goal: the parser costs less per KB than Envoy "
                  f"({'met' if filter_kb < envoy_kb else 'missed'} in this run)."]
    if "e" in by and ("l" in by or "m" in by):
        e = by["e"]
        lines += ["", "## Violation actions: queue", ""]
        if "l" in by:
            l = by["l"]
            lines += [f"(l) − (e), Envoy CPU per request, a `queue` budget that never fills against the same budget with `reject`: "
                      f"**{l['cpu'] - e['cpu']:+.2f} µs** ({l['cpu']:.2f} vs {e['cpu']:.2f}; goal: within noise, about ±1.5 µs here)."]
        if "m" in by:
            m = by["m"]
            lines += ["", f"(m), where most requests wait for one of 8 slots and are then admitted: **{m['cpu']:.2f} µs** of Envoy CPU "
                      f"per request ({m['cpu'] - e['cpu']:+.2f} over (e)), {m['rps']:.0f} req/s (slots freed at the end of a request are "
                      f"taken on the next 5 ms tick), non-2xx {m['non2xx']}."]
    glob = [by[k] for k in ("e",) + GLOBAL_KEYS if k in by]
    if any(k in by for k in GLOBAL_KEYS):
        lines += ["", "## Global budgets: the rate limit service", "",
                  "(h) is (e) with `\"global\": \"sync\"` on requests_per_minute and the plugin's top-level "
                  f"`\"global\": {json.dumps(GLOBAL)}`; (i) the same with `\"global\": \"exact\"` (each request waits for "
                  "one `ShouldRateLimit`); (j) Envoy's native `envoy.filters.http.ratelimit` (domain `tenant-quota`, "
                  "descriptor `(\"tenant\", <x-tenant-id>)` from a route `rate_limits` `request_headers` action, "
                  "`failure_mode_deny: false`, timeout 100 ms), the peer users would pick today. All three use one "
                  "envoyproxy/ratelimit (commit 3fb702589d36, `make ratelimit`; gRPC over loopback TCP) and one "
                  "Redis, both pinned to CPU 1 beside wrk, so Envoy has CPU 0 to itself as above (the service competes "
                  f"with the load generator instead). (j)'s rule in the service's domain file, "
                  f"`descriptors: [{{key: tenant, rate_limit: {{unit: minute, requests_per_unit: {RPM_LIMIT}}}}}]`, is "
                  "the limit of (e)'s requests_per_minute: nothing is rejected. The native filter does nothing "
                  "on a route without a cluster (a direct_response route), so (i) and (j) route to a cluster and an "
                  "`envoy.filters.http.health_check` filter (no pass-through, every path) answers 200 before the "
                  "router: no request leaves Envoy, and (i) and (j) differ only in the rate limiting filter; (e) and (h) "
                  "keep the direct_response route. RLS+Redis CPU is the two processes' user+system time during the "
                  "32-connection run, per request; total = Envoy + RLS + Redis. RLS calls per request from Envoy's "
                  "`cluster.ratelimit.upstream_rq_total`; RLS errors are Envoy's counts of failed calls "
                  "(`quota_global_syncs_total`/`quota_global_checks_total` `result.error`, "
                  "`cluster.backend.ratelimit.error`), summed over rounds; non-2xx over both wrk runs.", "",
                  "| Variant | req/s | Envoy CPU µs/req | RLS+Redis CPU µs/req | total CPU µs/req | RLS calls/req | "
                  "p50 µs unloaded | p99 µs unloaded | p50 µs saturated | p99 µs saturated | RLS errors | non-2xx |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in glob:
            if "svc_cpu" in r:
                svc = (f"{r['svc_cpu']:.2f} ({r['rls_cpu']:.2f} + {r['redis_cpu']:.2f}) | {r['total_cpu']:.2f} | "
                       f"{r['rls_calls']:.3g}")
                errs = f"{r['rls_errors']}" + (" (degraded)" if r["degraded"] else "")
            else:
                svc, errs = f"– | {r['cpu']:.2f} | –", "–"
            lines.append(f"| ({r['key']}) {r['name']} | {r['rps']:.0f} | {r['cpu']:.2f} | {svc} | {r['lp50']:.0f} | "
                         f"{r['lp99']:.0f} | {r['p50']:.0f} | {r['p99']:.0f} | {errs} | {r['non2xx'] + r['lat_non2xx']} |")
        lines += ["", "RLS+Redis CPU is shown as RLS + Redis. Ratios (medians) and the issue's targets:", "",
                  "| Ratio | value | target |", "|---|---:|---|"]
        if "h" in by and "e" in by:
            h, e = by["h"], by["e"]
            lines += [f"| (h) ÷ (e), Envoy CPU/req | {target(h['cpu'] / e['cpu'], 1.10)} | ≤ 1.10 |",
                      f"| (h) ÷ (e), p99 unloaded | {target(h['lp99'] / e['lp99'], 1.10)} | ≤ 1.1 |",
                      f"| (h) ÷ (e), p99 saturated | {target(h['p99'] / e['p99'], 1.10)} | ≤ 1.1 |",
                      f"| (h) ÷ (e), total CPU/req (Envoy + RLS + Redis) | {h['total_cpu'] / e['cpu']:.2f} | – |"]
        if "h2" in by and "g" in by:
            h2, g = by["h2"], by["g"]
            lines += [f"| (h2) ÷ (g), Envoy CPU/req (token budget over SSE, global sync ÷ local) | {target(h2['cpu'] / g['cpu'], 1.10)} | ≤ 1.10 |",
                      f"| (h2) ÷ (g), total CPU/req (Envoy + RLS + Redis) | {h2['total_cpu'] / g['cpu']:.2f} | – |"]
        if "i" in by and "j" in by:
            i, j = by["i"], by["j"]
            lines += [f"| (i) ÷ (j), p99 unloaded | {target(i['lp99'] / j['lp99'], 1.0)} | ≤ 1 (no worse) |",
                      f"| (i) ÷ (j), p99 saturated | {target(i['p99'] / j['p99'], 1.0)} | ≤ 1 (no worse) |",
                      f"| (i) ÷ (j), total CPU/req (Envoy + RLS + Redis) | {target(i['total_cpu'] / j['total_cpu'], 1.0)} | ≤ 1 (no worse) |",
                      f"| (i) ÷ (j), Envoy CPU/req | {i['cpu'] / j['cpu']:.2f} | – |"]
    if "i" in by and any(k in by for k in ("i0", "i1")):
        base = by.get("i0")
        lines += ["", "### (i) against the wasm gRPC floor", "",
                  "(i0) is the no-op wasm filter (bench/noop) pausing every request for one `ShouldRateLimit` "
                  "(`proxy_grpc_call` on the `ratelimit` cluster, timeout 100 ms, one descriptor like (i)'s, body built "
                  "once at configure) and resuming it on the answer (`proxy_continue_stream`) after reading it: the floor "
                  "of any wasm filter that waits for the service. (i1) is (i0) plus one read of all request headers and a "
                  "shared-data get + CAS set on the tenant's key before the call and again on its answer (tenant-quota's "
                  "two transactions, without their logic). Both are set up exactly like (i) and (j) (route to a cluster, "
                  "health_check responder, same RLS and Redis), so these four differ only in the filter; (c) keeps the "
                  "direct_response route, so (i0) − (c) also holds that difference.", "",
                  "| Variant | Envoy CPU µs/req | − (c) | − (i0) | p50 µs unloaded | − (i0) | p99 µs unloaded | − (i0) | "
                  "p99 µs saturated | − (i0) | RLS calls/req | non-2xx |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

        def diff(r, b, field):
            return f"{r[field] - b[field]:+.2f}" if b else "–"

        def diff0(r, b, field):
            return f"{r[field] - b[field]:+.0f}" if b else "–"
        for k in ("c", "i0", "i1", "i", "j"):
            if k not in by:
                continue
            r = by[k]
            calls = f"{r['rls_calls']:.3g}" if "rls_calls" in r else "–"
            lines.append(f"| ({k}) {r['name']} | {r['cpu']:.2f} | {diff(r, by.get('c'), 'cpu')} | {diff(r, base, 'cpu')} | "
                         f"{r['lp50']:.0f} | {diff0(r, base, 'lp50')} | {r['lp99']:.0f} | {diff0(r, base, 'lp99')} | {r['p99']:.0f} | {diff0(r, base, 'p99')} | {calls} | "
                         f"{r['non2xx'] + r['lat_non2xx']} |")
        if base:
            i = by["i"]
            lines += ["", f"(i) − (i0), tenant-quota's own work on top of the floor: **{i['cpu'] - base['cpu']:+.2f}** µs "
                      f"Envoy CPU/req ({(i['cpu'] - base['cpu']) / i['cpu']:.0%} of (i)), p50 unloaded "
                      f"{i['lp50'] - base['lp50']:+.0f} µs, p99 {i['lp99'] - base['lp99']:+.0f} µs unloaded, "
                      f"{i['p99'] - base['p99']:+.0f} µs saturated (p99 of short runs on this shared 2-core VM is mostly noise)."
                      + (f" (i1) − (i0), its host calls alone: {by['i1']['cpu'] - base['cpu']:+.2f} µs." if "i1" in by else "")
                      + (f" (i0) − (j), the wasm gRPC path against the native filter's: {base['cpu'] - by['j']['cpu']:+.2f} µs."
                         if "j" in by else "")]
    if sc:
        lines += ["", "## Scale: tracked tenants", "",
                  "One Envoy with tenant-quota (1 budget, `max_tracked` 2000000), grown to each size by sending "
                  "requests with new ids; then `wrk` with ids drawn at random among the tracked ones. "
                  "Bytes per tenant = (RSS − RSS before any tenant) ÷ tracked tenants. Latency as above: "
                  "saturated (32 connections, three runs, median p99) and unloaded (2 connections, three runs, median p99).", "",
                  "| Tracked tenants | RSS MB | bytes/tenant | req/s | CPU µs/req | p99 µs saturated | ÷ first | "
                  "p50 µs unloaded | p99 µs unloaded | ÷ first |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in sc:
            lines.append(f"| {s['tracked']} | {s['rss']/1e6:.1f} | {s['bytes_per_tenant']:.0f} | {s['rps']:.0f} | "
                         f"{s['cpu_us_per_req']:.2f} | {s['p99_us']:.0f} | {s['p99_us']/sc[0]['p99_us']:.2f} | "
                         f"{s['lat_p50_us']:.0f} | {s['lat_p99_us']:.0f} | {s['lat_p99_us']/sc[0]['lat_p99_us']:.2f} |")
        big = sc[-1]
        sat_r, unl_r = big['p99_us'] / sc[0]['p99_us'], big['lat_p99_us'] / sc[0]['lat_p99_us']
        lines += ["", f"Targets: ≤ 256 bytes per tracked tenant: **{big['bytes_per_tenant']:.0f}** at {big['tracked']} "
                  f"({'met' if big['bytes_per_tenant'] <= 256 else 'missed'}); p99 at the largest size within 10 % of the smallest: "
                  f"saturated **{sat_r:.2f}×** ({'met' if sat_r <= 1.1 else 'missed'}), "
                  f"unloaded **{unl_r:.2f}×** ({'met' if unl_r <= 1.1 else 'missed'})."]
    lines += ["", "![throughput and CPU per request](results.png)", "",
              "Reproduce: `make bench` (or `python3 bench/run.py --rounds 3 --seconds 8`)."]
    with open(os.path.join(a.out, "RESULTS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"variants": rows, "scale": sc, "runs": {k: [{kk: vv for kk, vv in r.items() if kk != "raw"} for r in v] for k, v in runs.items()}}, f, indent=1)
    plot(variants, os.path.join(a.out, "results.png"))
    print("\n".join(lines))


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
        return
    labels = [f"({r['key']})\n{SHORT.get(r['key'], r['name'])}" for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(15, 4.8))
    axes[0].bar(labels, [r["rps"] for r in rows], color="#4c72b0")
    axes[0].set_title("Throughput (requests/s, 1 Envoy core)")
    envoy_cpu = [r["cpu"] for r in rows]
    svc_cpu = [r.get("svc_cpu", 0) for r in rows]
    axes[1].bar(labels, envoy_cpu, color="#dd8452", label="Envoy")
    if any(svc_cpu):
        axes[1].bar(labels, svc_cpu, bottom=envoy_cpu, color="#8c8c8c", label="RLS + Redis")
        axes[1].legend(fontsize=7)
    axes[1].set_title("CPU per request (µs)")
    heights = [[r["rps"] for r in rows], [c + s for c, s in zip(envoy_cpu, svc_cpu)]]
    for ax, hs in zip(axes, heights):
        ax.tick_params(axis="x", labelsize=7)
        for x, h in enumerate(hs):
            ax.annotate(f"{h:.1f}" if h < 100 else f"{h:.0f}", (x, h), ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
