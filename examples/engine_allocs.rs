//! Allocations per request on the host-independent path of bench (e) (SPEC's 4 budgets):
//! the facts the filter reads, `evaluate`, the admitted headers. Native, counted by a
//! wrapping global allocator; wasm32's dlmalloc pays a few hundred instructions for each.
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use tenant_quota::config::Config;
use tenant_quota::engine::{admitted_headers, evaluate, Conditions, Headers, RequestFacts, RuntimePolicies, Verdict, Worker};
use tenant_quota::store::{init_registry, MemStore};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static A: Counting = Counting;

struct H(HashMap<&'static str, &'static [u8]>);
impl Headers for H {
    fn with<R>(&mut self, name: &str, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.0.get(name).map(|v| f(v))
    }
}

fn main() {
    let cfg = Config::parse(
        br#"{"tenant":{"header":"x-tenant-id","fallback":"anonymous","max_tracked":2000000},
        "budgets":{"requests_per_minute":{"counts":"requests","window_ms":60000,"limit":1000000000000,"burst_credits":20},
          "ingest_bytes_per_day":{"counts":"request_bytes","window_ms":86400000,"limit":1000000000000,"burst_credits":536870912},
          "query_cost_per_minute":{"counts":{"request_header":"x-query-cost"},"window_ms":60000,"limit":1000000000000,"burst_credits":2000},
          "export_concurrency":{"counts":"in_flight","limit":1000000000000,"burst_credits":2,"match":{"path_prefix":"/export"}}},
        "tenants":{"acme":{"priority":"vip"},"batchco":{"priority":"low"}}}"#,
    )
    .unwrap();
    let s = MemStore::new();
    init_registry(&s, None).unwrap();
    let mut w = Worker::new(7);
    let ids: Vec<Vec<u8>> = (0..100).map(|i| format!("tenant-{i}").into_bytes()).collect();
    let overrides = RuntimePolicies::new();
    let at = Conditions { now: 1_700_000_000_000, level: 0, global_degraded: false };
    let mut h = H([(":path", b"/".as_slice()), (":method", b"GET".as_slice()), ("x-query-cost", b"1".as_slice())].into_iter().collect());
    let run = |w: &mut Worker, h: &mut H, i: usize| {
        let facts = RequestFacts::read(&cfg, h, Some(ids[i % 100].clone()), vec![], true);
        let v = evaluate(&cfg, &s, w, &facts, at, &overrides);
        if let Verdict::Admit(a) = v {
            let mut n = 0;
            admitted_headers(&a, |_, v| n += v.len());
            assert!(n > 0);
        }
    };
    for i in 0..200 {
        run(&mut w, &mut h, i); // every tenant exists
    }
    let n = 10_000;
    let before = ALLOCS.load(Ordering::Relaxed);
    for i in 0..n {
        run(&mut w, &mut h, i);
    }
    let per = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / n as f64;
    println!("{per:.2} allocations per request (the tenant id's copy handed over is 1 of them)");
}
