// The filter's request path in Node's V8, outside Envoy: a minimal proxy-wasm host (header
// maps, shared data with Envoy's CAS rules, metrics, the clock) drives the built wasm through
// the same callbacks Envoy makes per request, so the wasm's own functions can be profiled by
// name (callgrind sees V8's JIT code as `???`).
//
//   node bench/wasm_host.mjs [--variant d|e|f|k] [--requests N] [--tick-every N] [--wasm PATH]
//   node --cpu-prof --cpu-prof-dir=/tmp/prof bench/wasm_host.mjs --variant e --requests 300000
//   node bench/wasm_host.mjs --top /tmp/prof/<file>.cpuprofile    (self time by wasm function)
//
// Configurations are bench/run.py's (printed by `python3 bench/run.py --print-config KEY`
// is not needed: the JSON is passed with --config-file, else the four budgets of (e)).
import fs from "node:fs";

const args = Object.fromEntries(process.argv.slice(2).reduce((a, x, i, all) => (x.startsWith("--") ? a.concat([[x.slice(2), all[i + 1] && !all[i + 1].startsWith("--") ? all[i + 1] : true]]) : a), []));

if (args.top) {
  const p = JSON.parse(fs.readFileSync(args.top, "utf8"));
  const self = new Map();
  const dt = p.timeDeltas;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const hits = new Map();
  p.samples.forEach((id, i) => hits.set(id, (hits.get(id) || 0) + (dt[i] || 0)));
  let total = 0;
  for (const [id, t] of hits) {
    const n = byId.get(id);
    const name = n.callFrame.functionName || n.callFrame.url || "(anon)";
    self.set(name, (self.get(name) || 0) + t);
    total += t;
  }
  const rows = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, Number(args.n || 45));
  for (const [name, t] of rows) console.log(`${((100 * t) / total).toFixed(1).padStart(5)} %  ${name.slice(0, 150)}`);
  process.exit(0);
}

const WASM = args.wasm || new URL("../target/wasm32-wasip1/release/tenant_quota.wasm", import.meta.url).pathname;
const HUGE = 10 ** 15;
const RPM = 4000000000;
const FOUR = {
  tenant: { header: "x-tenant-id", fallback: "anonymous", max_tracked: 2000000 },
  budgets: {
    requests_per_minute: { counts: "requests", window_ms: 60000, limit: RPM, burst_credits: 20 },
    ingest_bytes_per_day: { counts: "request_bytes", window_ms: 86400000, limit: HUGE, burst_credits: 536870912 },
    query_cost_per_minute: { counts: { request_header: "x-query-cost" }, window_ms: 60000, limit: HUGE, burst_credits: 2000 },
    export_concurrency: { counts: "in_flight", limit: HUGE, burst_credits: 2, match: { path_prefix: "/export" } },
  },
  tenants: { acme: { priority: "vip", budgets: { requests_per_minute: { limit: RPM, burst_credits: 25 } } }, batchco: { priority: "low" } },
};
const SATURATION = {
  signals: {
    cpu_load: { from: "orca:cpu_utilization", elevated: 0.75, critical: 0.9 },
    queue_depth: { from: "in_flight", elevated: 200, critical: 500 },
    db_latency_ms: { from: "response_header:x-db-latency-ms", elevated: 250, critical: 1000 },
  },
  stale_after_ms: 10000,
  keep: { elevated: { vip: 1.0, normal: 0.8, low: 0.5 }, critical: { vip: 1.0, normal: 0.5, low: 0.0 } },
  retry_after_s: 5,
};
const TEAM = structuredClone(FOUR);
TEAM.scopes = { team: { header: "x-team-id", max_tracked: 100000 } };
TEAM.budgets.team_requests_per_minute = { counts: "requests", window_ms: 60000, limit: HUGE, scope: "team" };
const TOKENS = { tenant: { max_tracked: 2000000 }, budgets: { tokens: { counts: { llm_tokens: "total" }, window_ms: 60000, limit: HUGE } } };
// bench/run.py's sse_body: ~100-byte OpenAI chunks, then the usage chunk and [DONE].
function sseBody(kb) {
  let out = "";
  let events = 0;
  while (out.length < kb * 1024 - 200) {
    out += `data: {"id":"c","choices":[{"index":0,"delta":{"content":"${"x".repeat(24)}"}}],"usage":null}\n\n`;
    events++;
  }
  out += `data: {"id":"c","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":${events},"total_tokens":${events + 100}}}\n\ndata: [DONE]\n\n`;
  return new TextEncoder().encode(out);
}
const CONFIGS = {
  d: { tenant: { max_tracked: 2000000 }, budgets: { requests_per_minute: { counts: "requests", window_ms: 60000, limit: HUGE } } },
  e: FOUR,
  f: { ...FOUR, saturation: SATURATION },
  k: TEAM,
  g: TOKENS,
  g2: TOKENS,
};
const variant = args.variant || "e";
const SSE = variant === "g" ? sseBody(4) : variant === "g2" ? sseBody(40) : null;
const config = args["config-file"] ? fs.readFileSync(args["config-file"]) : Buffer.from(JSON.stringify(CONFIGS[variant]));
const REQUESTS = Number(args.requests || 200000);
const TICK_EVERY = Number(args["tick-every"] || 3);

let mem;
const u8 = () => new Uint8Array(mem.buffer);
const dv = () => new DataView(mem.buffer);
let ex;
const dec = new TextDecoder();
const str = (p, n) => dec.decode(u8().subarray(p, p + n));
function give(bytes, retPtr, retSize) {
  const p = ex.proxy_on_memory_allocate(bytes.length);
  u8().set(bytes, p);
  dv().setUint32(retPtr, p, true);
  dv().setUint32(retSize, bytes.length, true);
}
function serialize(pairs) {
  const enc = new TextEncoder();
  const kv = pairs.map(([k, v]) => [enc.encode(k), enc.encode(v)]);
  let n = 4 + 8 * kv.length;
  for (const [k, v] of kv) n += k.length + v.length + 2;
  const b = new Uint8Array(n);
  const d = new DataView(b.buffer);
  d.setUint32(0, kv.length, true);
  let off = 4 + 8 * kv.length;
  kv.forEach(([k, v], i) => {
    d.setUint32(4 + 8 * i, k.length, true);
    d.setUint32(8 + 8 * i, v.length, true);
    b.set(k, off);
    off += k.length + 1;
    b.set(v, off);
    off += v.length + 1;
  });
  return b;
}

let now = 1_700_000_000_000n * 1_000_000n;
let reqHeaders = [];
let reqSerialized = null;
const respHeaders = SSE ? [[":status", "200"], ["content-type", "text/event-stream"]] : [[":status", "200"], ["content-length", "3"]];
const respSerialized = serialize(respHeaders);
const shared = new Map(); // key -> [Uint8Array, cas]
let casSeq = 1;
const calls = {};
const count = (n) => (calls[n] = (calls[n] || 0) + 1);
const env = {
  proxy_log: () => 0,
  proxy_get_current_time_nanoseconds: (p) => (count("clock"), dv().setBigUint64(p, now, true), 0),
  proxy_get_header_map_pairs: (map, rp, rs) => (count("header_pairs"), give(map === 0 ? reqSerialized : respSerialized, rp, rs), 0),
  proxy_get_header_map_value: (map, kp, kl, rp, rs) => {
    count("header_value");
    const k = str(kp, kl);
    const h = (map === 0 ? reqHeaders : respHeaders).find(([n]) => n === k);
    if (!h) return 1;
    give(new TextEncoder().encode(h[1]), rp, rs);
    return 0;
  },
  proxy_add_header_map_value: () => (count("add_header"), 0),
  proxy_remove_header_map_value: () => (count("remove_header"), 0),
  proxy_replace_header_map_value: () => (count("replace_header"), 0),
  proxy_get_shared_data: (kp, kl, rp, rs, rc) => {
    count("shared_get");
    const e = shared.get(str(kp, kl));
    if (!e) return 1;
    give(e[0], rp, rs);
    dv().setUint32(rc, e[1], true);
    return 0;
  },
  proxy_set_shared_data: (kp, kl, vp, vl, cas) => {
    count("shared_set");
    const k = str(kp, kl);
    const e = shared.get(k);
    if (e && cas !== 0 && cas !== e[1]) return 8;
    shared.set(k, [u8().slice(vp, vp + vl), ++casSeq]);
    return 0;
  },
  proxy_define_metric: (t, p, l, rid) => (dv().setUint32(rid, ++casSeq, true), 0),
  proxy_increment_metric: () => (count("metric"), 0),
  proxy_record_metric: () => (count("metric"), 0),
  proxy_get_metric: (id, rp) => (dv().setBigUint64(rp, 0n, true), 0),
  proxy_get_buffer_bytes: (t, start, max, rp, rs) => {
    if (t === 1 && SSE) {
      count("body_read");
      give(SSE.subarray(start, Math.min(SSE.length, start + max)), rp, rs);
      return 0;
    }
    if (t !== 7) return 1;
    give(config, rp, rs);
    return 0;
  },
  proxy_set_tick_period_milliseconds: () => 0,
  proxy_get_property: () => 1,
  proxy_set_property: () => 0,
  proxy_set_effective_context: () => 0,
  proxy_continue_stream: () => 0,
  proxy_send_local_response: () => (count("local_reply"), 0),
};
const wasi = {
  fd_write: (fd, iovs, n, written) => {
    let total = 0;
    for (let i = 0; i < n; i++) total += dv().getUint32(iovs + 8 * i + 4, true);
    dv().setUint32(written, total, true);
    return 0;
  },
  environ_sizes_get: (a, b) => (dv().setUint32(a, 0, true), dv().setUint32(b, 0, true), 0),
  environ_get: () => 0,
  random_get: (p, n) => (u8().fill(7, p, p + n), 0),
  clock_time_get: (id, prec, p) => (dv().setBigUint64(p, now, true), 0),
  proc_exit: (c) => {
    throw new Error(`proc_exit ${c}`);
  },
};
const stub = (mod) => new Proxy(mod, { get: (t, k) => (k in t ? t[k] : () => 0) });
const { instance } = await WebAssembly.instantiate(fs.readFileSync(WASM), { env: stub(env), wasi_snapshot_preview1: stub(wasi) });
ex = instance.exports;
mem = ex.memory;
(ex._initialize || ex._start || (() => {}))();
const ROOT = 1;
ex.proxy_on_context_create(ROOT, 0);
ex.proxy_on_vm_start(ROOT, 0);
if (!ex.proxy_on_configure(ROOT, config.length)) throw new Error("on_configure failed");

const maps = [];
for (let i = 0; i < 1000; i++) {
  reqHeaders = [[":authority", "127.0.0.1"], [":path", "/"], [":method", "GET"], [":scheme", "http"], ["user-agent", "Python-urllib/3.11"], ["x-tenant-id", `tenant-${i}`], ["x-query-cost", "1"], ["x-team-id", `team-${i % 100}`], ["x-forwarded-proto", "http"], ["x-request-id", "5b4c0f6e-5a7c-4c4f-9d8e-1f2a3b4c5d6e"]];
  maps.push([reqHeaders, serialize(reqHeaders)]);
}
let ctx = 10;
function request(i) {
  [reqHeaders, reqSerialized] = maps[i % 1000];
  const c = ++ctx;
  ex.proxy_on_context_create(c, ROOT);
  ex.proxy_on_request_headers(c, reqHeaders.length, 1);
  ex.proxy_on_response_headers(c, respHeaders.length, 0);
  ex.proxy_on_response_body(c, SSE ? SSE.length : 3, 1);
  ex.proxy_on_log(c);
  ex.proxy_on_done(c);
  ex.proxy_on_delete(c);
  now += 2_600_000n; // 2.6 ms apart, as under callgrind
  if (TICK_EVERY && i % TICK_EVERY === 0) ex.proxy_on_tick(ROOT);
}
for (let i = 0; i < 2000; i++) request(i);
for (const k of Object.keys(calls)) delete calls[k];
const t0 = process.hrtime.bigint();
for (let i = 0; i < REQUESTS; i++) request(i);
const ns = Number(process.hrtime.bigint() - t0);
const per = Object.fromEntries(Object.entries(calls).map(([k, v]) => [k, +(v / REQUESTS).toFixed(3)]));
console.log(`(${variant}) ${REQUESTS} requests: ${(ns / REQUESTS).toFixed(0)} ns per request in Node; host calls per request ${JSON.stringify(per)}`);
