//! What a request let through holds until its stream ends: its admission (reservations,
//! in_flight slots), its place in the in-flight signal, the request bytes to charge, the LLM
//! response to settle; and what it does with them at each callback and at the end.

use super::host::{self, map, HostStore};
use super::llm_body::{self, LlmResponse};
use super::{log_fields, verdict, Shared};
use crate::config::Config;
use crate::engine::{self, Admitted};
use std::cell::RefCell;

pub(super) struct Held {
    /// Its bookkeeping (None: nothing to keep, e.g. a request allowed undecided).
    admitted: Option<Box<Admitted>>,
    /// It holds a place in the in-flight saturation signal, given back at the end.
    counted: bool,
    /// Request body bytes, for a `request_bytes` budget charged at the end.
    body_bytes: u64,
    /// The response's status and usage (LLM budgets), from its headers on.
    llm: Option<LlmResponse>,
}

impl Held {
    pub(super) fn new(admitted: Option<Box<Admitted>>, counted: bool) -> Held {
        Held { admitted, counted, body_bytes: 0, llm: None }
    }

    pub(super) fn admitted(&self) -> Option<&Admitted> {
        self.admitted.as_deref()
    }

    /// Take the admission out (for an `exact` check's answer); see [`Held::readmit`].
    pub(super) fn take_admitted(&mut self) -> Option<Box<Admitted>> {
        self.admitted.take()
    }

    pub(super) fn readmit(&mut self, a: Box<Admitted>) {
        self.admitted = Some(a);
    }

    /// A piece of the request body: counted when a budget charges request bytes at the end.
    pub(super) fn request_body(&mut self, body_size: usize) {
        if let Some(a) = &self.admitted {
            if a.after.iter().any(|c| c.response_header.is_none()) {
                self.body_bytes = self.body_bytes.saturating_add(body_size as u64);
            }
        }
    }

    /// The response headers: charge the costs they report, then add the admitted
    /// response's headers (and the access-log fields).
    pub(super) fn response_headers(&mut self, cfg: &Config, shared: &RefCell<Shared>) {
        let Some(a) = &mut self.admitted else { return };
        if !a.llm.is_empty() {
            self.llm = Some(LlmResponse::start());
        }
        let charges: Vec<(usize, u64)> = a
            .after
            .iter()
            .filter_map(|c| c.response_header.as_ref().map(|h| (c.budget, h)))
            .filter_map(|(b, h)| host::header(map::RESPONSE_HEADERS, h).and_then(|v| engine::parse_units(&v)).map(|n| (b, n)))
            .collect();
        if !charges.is_empty() {
            if let Ok(mut sh) = shared.try_borrow_mut() {
                charge_response(cfg, &mut sh, a, charges);
            }
        }
        engine::admitted_headers(a, |k, v| {
            host::add_header(map::RESPONSE_HEADERS, k, v);
        });
        log_fields::admitted(cfg, a);
    }

    /// A piece of the response body: read the usage; at its end, settle.
    pub(super) fn response_body(&mut self, cfg: &Config, shared: &RefCell<Shared>, body_size: usize, end_of_stream: bool) {
        if let Some(r) = &mut self.llm {
            r.feed(body_size);
        }
        if end_of_stream && self.llm.is_some() {
            if let Some(a) = &mut self.admitted {
                llm_body::settle(cfg, shared, a, self.llm.take());
                a.llm.clear();
            }
        }
    }

    /// The stream ended: give everything back, once. `asking`: the service was still being
    /// asked about its `exact` budgets, so nothing is consumed.
    pub(super) fn release(self, cfg: &Config, shared: &RefCell<Shared>, asking: bool) {
        if self.counted {
            if let Ok(mut sh) = shared.try_borrow_mut() {
                sh.saturation.pending_in_flight -= 1;
            }
        }
        let Some(a) = self.admitted else { return };
        if !a.llm.is_empty() {
            llm_body::settle(cfg, shared, &a, self.llm);
        }
        if asking {
            // The client left while the service was being asked: nothing is consumed.
            if let Ok(mut sh) = shared.try_borrow_mut() {
                let sh = &mut *sh;
                let p = verdict::policy(cfg, sh, &a);
                if let Err(e) = engine::rollback(cfg, &HostStore, &mut sh.worker, &a, &p) {
                    sh.metrics.error();
                    host::log(host::LOG_ERROR, &format!("tenant-quota: could not undo the reservation of `{}`: {e:?}", a.tenant));
                }
            }
            return;
        }
        if a.in_flight.is_empty() && self.body_bytes == 0 {
            return;
        }
        let Ok(mut sh) = shared.try_borrow_mut() else { return };
        let sh = &mut *sh;
        if self.body_bytes > 0 {
            charge_request_bytes(cfg, sh, &a, self.body_bytes);
        }
        let budgets: Vec<usize> = match &mut sh.ledger {
            None => a.in_flight.clone(),
            Some(l) => a.in_flight.iter().copied().filter(|&b| l.release(&HostStore, verdict::key_of(cfg, &a, b), cfg.budgets[b].id).unwrap_or(true)).collect(),
        };
        if let Err(e) = engine::release(cfg, &HostStore, &mut sh.worker, &a, &budgets) {
            sh.metrics.error();
            host::log(host::LOG_ERROR, &format!("tenant-quota: could not release in_flight slot of `{}`: {e:?}", a.tenant));
        }
    }
}

/// Charge the costs the response headers report; the admitted headers then show the new
/// standing.
fn charge_response(cfg: &Config, sh: &mut Shared, a: &mut Admitted, charges: Vec<(usize, u64)>) {
    let p = verdict::policy(cfg, sh, a);
    let now = host::now_ms();
    for (b, n) in charges {
        match engine::charge(cfg, &HostStore, &mut sh.worker, a, &p, b, n, now) {
            Ok(Some(u)) => {
                if cfg.budgets[b].global.is_some() {
                    sh.global.touched(a.subject_of(cfg, b, &p).map_or("", |x| x.0), false);
                }
                let (scope, who) = a.scope_id_of(cfg, b).map_or((None, a.tenant.as_str()), |(s, id)| (Some(s), id));
                sh.metrics.usage_of(cfg, scope, who, &u, false);
                if let Some(slot) = a.usage.iter_mut().find(|x| x.budget == b) {
                    *slot = u;
                }
            }
            Ok(None) => {}
            Err(e) => {
                sh.metrics.error();
                host::log(host::LOG_ERROR, &format!("tenant-quota: could not charge response cost: {e:?}"));
            }
        }
    }
    if a.shadow.is_none() || a.headline.is_none() {
        a.headline = crate::core::closest_to_exhaustion(&a.usage).copied().or(a.headline);
    }
}

/// Charge the request's body bytes at the end of its stream.
fn charge_request_bytes(cfg: &Config, sh: &mut Shared, a: &Admitted, bytes: u64) {
    let Some(b) = a.after.iter().find(|c| c.response_header.is_none()).map(|c| c.budget) else { return };
    let p = verdict::policy(cfg, sh, a);
    match engine::charge(cfg, &HostStore, &mut sh.worker, a, &p, b, bytes, host::now_ms()) {
        Ok(Some(u)) => {
            if cfg.budgets[b].global.is_some() {
                sh.global.touched(a.subject_of(cfg, b, &p).map_or("", |x| x.0), false);
            }
            let (scope, who) = a.scope_id_of(cfg, b).map_or((None, a.tenant.as_str()), |(s, id)| (Some(s), id));
            sh.metrics.usage_of(cfg, scope, who, &u, false)
        }
        Ok(None) => {}
        Err(e) => {
            sh.metrics.error();
            host::log(host::LOG_ERROR, &format!("tenant-quota: could not charge request bytes: {e:?}"));
        }
    }
}
