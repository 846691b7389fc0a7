//! Native timing of the host-independent request path (engine::evaluate on MemStore).
use std::time::Instant;
use tenant_quota::config::Config;
use tenant_quota::engine::{evaluate, Conditions, Headers, RequestFacts, RuntimePolicies, Verdict, Worker};
use tenant_quota::store::{init_registry, MemStore};

struct H;
impl Headers for H {
    fn with<R>(&mut self, _: &str, _: impl FnOnce(&[u8]) -> R) -> Option<R> {
        None
    }
}

fn main() {
    let cfg = Config::parse(br#"{"tenant":{"max_tracked":2000000},"budgets":{"requests_per_minute":{"counts":"requests","window_ms":60000,"limit":1000000000000000}}}"#).unwrap();
    let s = MemStore::new();
    init_registry(&s, None).unwrap();
    let mut w = Worker::new(7);
    let ids: Vec<Vec<u8>> = (0..1000).map(|i| format!("tenant-{i}").into_bytes()).collect();
    let n = 2_000_000;
    let t = Instant::now();
    let mut ok = 0;
    let overrides = RuntimePolicies::new();
    let at = Conditions { now: 1_700_000_000_000, level: 0, global_degraded: false };
    for i in 0..n {
        // As the filter does: read the facts, then decide.
        let facts = RequestFacts::read(&cfg, &mut H, Some(ids[i % 1000].clone()), vec![], true);
        if let Verdict::Admit(_) = evaluate(&cfg, &s, &mut w, &facts, at, &overrides) {
            ok += 1;
        }
    }
    println!("{ok} admitted, {:.0} ns per evaluate", t.elapsed().as_nanos() as f64 / n as f64);
}
