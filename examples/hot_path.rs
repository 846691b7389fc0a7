//! The host-independent part of bench (e)'s request path (SPEC's 4 budgets), natively, for
//! callgrind: read the facts from a serialized header map (as `proxy_get_header_map_pairs`
//! returns it), `evaluate` against a store that copies like Envoy's shared data, format the
//! admitted headers, drop the admission. Per-function costs need symbols, which V8's JIT code
//! has not under callgrind:
//!
//! ```text
//! CARGO_PROFILE_RELEASE_DEBUG=true CARGO_PROFILE_RELEASE_STRIP=none cargo build --release --example hot_path
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/hot.out target/release/examples/hot_path [scope]
//! callgrind_annotate --inclusive=yes /tmp/hot.out | head -60
//! ```
//! With `scope`, the config and headers of bench (k) (a team budget per `x-team-id`).
use std::cell::RefCell;
use std::collections::HashMap;
use tenant_quota::config::Config;
use tenant_quota::engine::{admitted_headers, evaluate, Conditions, Headers, RequestFacts, RuntimePolicies, Verdict, Worker};
use tenant_quota::store::{init_registry, SharedStore, StoreError};

/// Key -> (value, CAS token), and the last token handed out.
type Entries = (HashMap<String, (Vec<u8>, u32)>, u32);

/// Envoy's shared data as the filter sees it: a get hands over a fresh copy of the value.
#[derive(Default)]
struct Host(RefCell<Entries>);

impl SharedStore for Host {
    fn get(&self, key: &str, buf: &mut Vec<u8>) -> Result<Option<u32>, StoreError> {
        let m = self.0.borrow();
        let Some((v, cas)) = m.0.get(key) else { return Ok(None) };
        let copy = v.clone(); // the host's allocation
        buf.clear();
        buf.extend_from_slice(&copy);
        Ok(Some(*cas))
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let mut m = self.0.borrow_mut();
        let (map, next) = &mut *m;
        if let Some((_, cur)) = map.get(key) {
            if cas != 0 && cas != *cur {
                return Err(StoreError::CasMismatch);
            }
        }
        *next = next.wrapping_add(1).max(1);
        let c = *next;
        match map.get_mut(key) {
            Some(e) => *e = (value.to_vec(), c),
            None => {
                map.insert(key.to_string(), (value.to_vec(), c));
            }
        }
        Ok(())
    }
}

/// The header map as `proxy_get_header_map_pairs` returns it.
struct Pairs(Vec<u8>);
impl Headers for Pairs {
    fn with<R>(&mut self, name: &str, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        tenant_quota::wire::pairs_get(&self.0, name).map(f)
    }
}

const FOUR: &str = r#""tenant":{"header":"x-tenant-id","fallback":"anonymous","max_tracked":2000000},
  "tenants":{"acme":{"priority":"vip","budgets":{"requests_per_minute":{"limit":4000000000,"burst_credits":25}}},"batchco":{"priority":"low"}}"#;
const BUDGETS: &str = r#""requests_per_minute":{"counts":"requests","window_ms":60000,"limit":4000000000,"burst_credits":20},
  "ingest_bytes_per_day":{"counts":"request_bytes","window_ms":86400000,"limit":1000000000000000,"burst_credits":536870912},
  "query_cost_per_minute":{"counts":{"request_header":"x-query-cost"},"window_ms":60000,"limit":1000000000000000,"burst_credits":2000},
  "export_concurrency":{"counts":"in_flight","limit":1000000000000000,"burst_credits":2,"match":{"path_prefix":"/export"}}"#;

fn main() {
    let scope = std::env::args().nth(1).as_deref() == Some("scope");
    let json = if scope {
        format!(r#"{{{FOUR},"scopes":{{"team":{{"header":"x-team-id","max_tracked":100000}}}},"budgets":{{{BUDGETS},
          "team_requests_per_minute":{{"counts":"requests","window_ms":60000,"limit":1000000000000000,"scope":"team"}}}}}}"#)
    } else {
        format!(r#"{{{FOUR},"budgets":{{{BUDGETS}}}}}"#)
    };
    let cfg = Config::parse(json.as_bytes()).unwrap();
    let s = Host::default();
    init_registry(&s, None).unwrap();
    if scope {
        init_registry(&s, Some("team")).unwrap();
    }
    let mut w = Worker::new(7);
    let maps: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            let t = format!("tenant-{i}");
            let team = format!("team-{}", i % 100);
            let h = [(":authority", "127.0.0.1"), (":path", "/"), (":method", "GET"), (":scheme", "http"), ("user-agent", "Python-urllib/3.11"), ("x-tenant-id", &t), ("x-query-cost", "1"), ("x-team-id", &team), ("x-forwarded-proto", "http"), ("x-request-id", "5b4c0f6e-5a7c-4c4f-9d8e-1f2a3b4c5d6e")];
            tenant_quota::wire::serialize_pairs(&h)
        })
        .collect();
    let overrides = RuntimePolicies::new();
    let at = Conditions { now: 1_700_000_000_000, level: 0, global_degraded: false };
    let run = |w: &mut Worker, i: usize| {
        let mut h = Pairs(maps[i % 1000].clone()); // the host's allocation
        let tenant = h.with("x-tenant-id", <[u8]>::to_vec);
        let scope_ids = if scope { vec![h.with("x-team-id", <[u8]>::to_vec)] } else { vec![] };
        let facts = RequestFacts::read(&cfg, &mut h, tenant, scope_ids, true);
        let v = evaluate(&cfg, &s, w, &facts, at, &overrides);
        let Verdict::Admit(a) = v else { panic!("not admitted") };
        let mut n = 0;
        admitted_headers(&a, |_, v| n += v.len());
        assert!(n > 0);
    };
    for i in 0..1000 {
        run(&mut w, i); // every tenant exists
    }
    for i in 0..100_000 {
        run(&mut w, i);
    }
}
