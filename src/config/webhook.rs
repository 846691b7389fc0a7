//! `alerts_webhook` (SPEC 5): an Envoy cluster and path crossings are POSTed to.

use super::error::{err, ConfigError};
use super::raw::RawWebhook;
use super::visible_ascii;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub cluster: String,
    pub path: String,
}

pub(super) fn compile(w: &RawWebhook) -> Result<Webhook, ConfigError> {
    let c = w.cluster.trim();
    if c.is_empty() || !visible_ascii(c) {
        return err("alerts_webhook.cluster", "must name an Envoy cluster");
    }
    if !w.path.starts_with('/') || !visible_ascii(&w.path) {
        return err("alerts_webhook.path", "must be a path starting with `/`");
    }
    Ok(Webhook { cluster: c.to_string(), path: w.path.clone() })
}
