//! What each budget that applies to a request asks of it: units to reserve now, a probe for
//! units charged later, the LLM reserve (SPEC 5), and the `exact` budgets left to the rate
//! limit service (SPEC 8).

use super::facts::HeaderUnits;
use super::subject::Subjects;
use super::{plain_reply, AfterCharge, Conditions, LlmCharge, Reply, RequestFacts};
use crate::config::{Budget, Config, Counts, GlobalMode, Mode, ModelSource, OnUnavailable};
use crate::core::{Admit, Demand};

/// A request's demands, by subject. The tenant's go into the worker's reused buffer.
#[derive(Debug, Default)]
pub(crate) struct Demands {
    /// Each scope's demands, by scope index.
    pub scopes: Vec<Vec<Demand>>,
    /// `exact` global budgets, asked of the service after the local decision.
    pub exact: Vec<Demand>,
    pub after: Vec<AfterCharge>,
    pub in_flight: Vec<usize>,
    pub llm: Vec<LlmCharge>,
    /// The reason of a cost refusal that shadow mode lets through.
    pub shadow_cost: Option<String>,
    /// The request's model, when known.
    pub model: Option<String>,
}

impl Demands {
    /// Some scope id has a demand.
    pub fn scoped(&self) -> bool {
        self.scopes.iter().any(|d| !d.is_empty())
    }
}

/// The demands of every budget that applies, in config order; `tenant` receives the
/// tenant's. Refused with the reply to send for an invalid cost header, an unpriced model or
/// a global budget while the service is down and `on_unavailable` is deny.
pub(crate) fn demands(cfg: &Config, facts: &RequestFacts, at: Conditions, subjects: &Subjects, tenant: &mut Vec<Demand>) -> Result<Demands, Reply> {
    let model = match &cfg.llm.model {
        Some(ModelSource::Header(_)) => facts.model.clone(),
        Some(ModelSource::RequestBody) => facts.llm_body.as_ref().and_then(|b| b.model.clone()),
        None => None,
    };
    tenant.clear();
    // Sized up front: a scope's demands are at most the budgets (no growing on the way).
    let scopes = (0..cfg.scopes.len()).map(|_| Vec::with_capacity(cfg.budgets.len())).collect();
    let mut out = Demands { scopes, ..Demands::default() };
    // SPEC 8: `exact` budgets wait for the service, unless it is down (then `on_unavailable`
    // decides them like `sync` ones) or nothing may wait (shadow mode).
    let exact_waits = cfg.mode == Mode::Enforce && !at.global_degraded;
    let global_denies = at.global_degraded && cfg.global.as_ref().is_some_and(|g| g.on_unavailable == OnUnavailable::Deny);
    let rerouted_by = facts.rerouted.as_ref().and_then(|r| r.budget);
    for (i, b) in cfg.budgets.iter().enumerate() {
        if rerouted_by == Some(i) {
            continue;
        }
        if !b.matcher.is_any() && !b.matcher.matches(&facts.method, &facts.path) {
            continue;
        }
        if !b.matcher.models.is_empty() && !crate::llm::matches_any(&b.matcher.models, model.as_deref()) {
            continue;
        }
        let Some(who) = subjects.who(cfg, b.scope) else { continue };
        if who.policy.limits[i].unlimited {
            continue;
        }
        let Some(d) = out.demand(cfg, facts, subjects.tenant, i, b, model.as_deref())? else { continue };
        if b.global.is_some() && global_denies {
            return Err(plain_reply(503, "quota_unavailable", "Global quota service unavailable", Some(subjects.tenant)));
        }
        if b.global == Some(GlobalMode::Exact) && exact_waits {
            out.exact.push(d);
            continue;
        }
        match b.scope {
            Some(sc) => out.scopes[sc].push(d),
            None => tenant.push(d),
        }
    }
    out.model = model;
    Ok(out)
}

impl Demands {
    /// Budget `i`'s demand (None: shadow mode skips an unpriced LLM cost budget), noting
    /// what is charged after admission.
    fn demand(&mut self, cfg: &Config, facts: &RequestFacts, tenant: &str, i: usize, b: &Budget, model: Option<&str>) -> Result<Option<Demand>, Reply> {
        let reserve = |units| Demand { budget: i, units, admit: Admit::Reserve };
        let d = match &b.counts {
            Counts::Requests => reserve(1),
            Counts::RequestBytes => match facts.content_length {
                Some(n) => reserve(n),
                None if facts.end_of_stream => reserve(0),
                None => {
                    self.after.push(AfterCharge { budget: i, response_header: None });
                    Demand { budget: i, units: 0, admit: Admit::Probe }
                }
            },
            Counts::RequestHeader(_) => match facts.cost(i) {
                HeaderUnits::Absent => reserve(0),
                HeaderUnits::Units(n) => reserve(n),
                HeaderUnits::Invalid => {
                    let reply = plain_reply(400, "invalid_cost", "Invalid cost header", Some(tenant));
                    self.shadow(cfg, reply)?;
                    reserve(0)
                }
            },
            Counts::ResponseHeader(h) => {
                self.after.push(AfterCharge { budget: i, response_header: Some(h.clone()) });
                Demand { budget: i, units: 0, admit: Admit::Probe }
            }
            Counts::InFlight => {
                self.in_flight.push(i);
                reserve(1)
            }
            Counts::LlmTokens(_) | Counts::LlmCost => {
                // The reserve (SPEC 5): output tokens = the body's max-tokens field, else
                // default_reserve_tokens; input tokens = ceil(body bytes / 4) when the body was
                // read, else 0; cost = that priced.
                let estimate = match &facts.llm_body {
                    Some(body) => crate::llm::Usage { input: body.bytes.div_ceil(4), output: body.max_tokens.unwrap_or(cfg.llm.default_reserve_tokens) },
                    None => crate::llm::Usage { input: 0, output: cfg.llm.default_reserve_tokens },
                };
                let units = match &b.counts {
                    Counts::LlmTokens(k) => estimate.tokens(*k),
                    _ => match cfg.llm.prices.get(model) {
                        Some(p) => crate::llm::cost(estimate, p),
                        None => {
                            self.shadow(cfg, plain_reply(400, "unpriced_model", "The request's model has no price", Some(tenant)))?;
                            return Ok(None);
                        }
                    },
                };
                self.llm.push(LlmCharge { budget: i, reserved: units });
                Demand { budget: i, units, admit: if units == 0 { Admit::Probe } else { Admit::Reserve } }
            }
        };
        Ok(Some(d))
    }

    /// A refusal of the request's own input: shadow mode only notes its reason.
    fn shadow(&mut self, cfg: &Config, reply: Reply) -> Result<(), Reply> {
        if cfg.mode != Mode::Shadow {
            return Err(reply);
        }
        self.shadow_cost = Some(reply.reason);
        Ok(())
    }
}
