//! `top`: the filter's check counters from Envoy's `/stats/prometheus`.
//!
//! `quota_checks_total{tenant_id,resource,result}` counts, per budget (`resource`), the
//! checks of requests it applies to: an admitted request once per budget that applies, a
//! rejected one once, on the budget that refused it. Tenants named in the configuration
//! keep their name as `tenant_id` (with characters outside `[A-Za-z0-9_-]` as `_`), every
//! other tenant is `other`; scoped budgets carry `scope` and `scope_id` instead.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
}

/// Parse the Prometheus text format (comments and blank lines skipped). A line that does not
/// parse is an error: what answered is then not a Prometheus endpoint.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line).ok_or_else(|| format!("line {}: not a Prometheus sample: `{}`", n + 1, line.chars().take(80).collect::<String>()))?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        loop {
            // label name
            while chars.peek().is_some_and(|(_, c)| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let &(start, c) = chars.peek()?;
            if c == '}' {
                rest = &r[start + 1..];
                break;
            }
            let mut end = start;
            while let Some(&(i, c)) = chars.peek() {
                if c == '=' {
                    end = i;
                    break;
                }
                chars.next();
            }
            let key = r[start..end].trim().to_string();
            chars.next(); // '='
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut val = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => val.push('\n'),
                        other => val.push(other),
                    },
                    c => val.push(c),
                }
            }
            labels.push((key, val));
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name: name.to_string(), labels, value })
}

/// One tenant (or scope id) in `top`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    pub subject: String,
    /// Rejected requests (each counted once, on the budget that refused it).
    pub rejected: u64,
    /// Admitted requests as the budget that counted the most saw them (the budgets that
    /// apply to every request count every admitted request).
    pub allowed: u64,
    pub warned: u64,
    pub shadow_rejected: u64,
    /// Rejections per budget, most first.
    pub rejected_by: Vec<(String, u64)>,
}

impl Row {
    pub fn rejected_pct(&self) -> f64 {
        let total = self.rejected + self.allowed;
        if total == 0 {
            0.0
        } else {
            self.rejected as f64 * 100.0 / total as f64
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Rejected,
    Allowed,
}

/// Rows per tenant (`scope` None) or per id of `scope`, sorted by `by` (then by name).
pub fn top(samples: &[Sample], scope: Option<&str>, by: By) -> Vec<Row> {
    #[derive(Default)]
    struct Acc {
        allowed: BTreeMap<String, u64>,
        rejected: BTreeMap<String, u64>,
        warned: u64,
        shadow: u64,
    }
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == "quota_checks_total") {
        let subject = match scope {
            None if s.label("scope").is_none() => s.label("tenant_id"),
            Some(sc) if s.label("scope") == Some(sc) => s.label("scope_id"),
            _ => None,
        };
        let (Some(subject), Some(resource), Some(result)) = (subject, s.label("resource"), s.label("result")) else { continue };
        let n = if s.value.is_finite() && s.value > 0.0 { s.value as u64 } else { 0 };
        let a = acc.entry(subject.to_string()).or_default();
        match result {
            "allowed" => *a.allowed.entry(resource.to_string()).or_default() += n,
            "rejected" => *a.rejected.entry(resource.to_string()).or_default() += n,
            "warned" => a.warned += n,
            "shadow_rejected" => a.shadow += n,
            _ => {}
        }
    }
    let mut rows: Vec<Row> = acc
        .into_iter()
        .map(|(subject, a)| {
            let mut rejected_by: Vec<(String, u64)> = a.rejected.into_iter().filter(|(_, n)| *n > 0).collect();
            rejected_by.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
            Row {
                subject,
                rejected: rejected_by.iter().map(|(_, n)| n).sum(),
                allowed: a.allowed.values().copied().max().unwrap_or(0),
                warned: a.warned,
                shadow_rejected: a.shadow,
                rejected_by,
            }
        })
        .collect();
    rows.sort_by(|x, y| {
        let k = |r: &Row| match by {
            By::Rejected => (r.rejected, r.allowed),
            By::Allowed => (r.allowed, r.rejected),
        };
        k(y).cmp(&k(x)).then_with(|| x.subject.cmp(&y.subject))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE quota_checks_total counter
quota_checks_total{tenant_id="acme",resource="rph",result="allowed"} 12
quota_checks_total{tenant_id="acme",resource="rph",result="rejected"} 3
quota_checks_total{tenant_id="acme",resource="cost",result="allowed"} 12
quota_checks_total{tenant_id="acme",resource="cost",result="rejected"} 1
quota_checks_total{tenant_id="beta_corp",resource="rph",result="allowed"} 5
quota_checks_total{tenant_id="beta_corp",resource="rph",result="rejected"} 0
quota_checks_total{tenant_id="other",resource="rph",result="allowed"} 40
quota_checks_total{tenant_id="other",resource="rph",result="rejected"} 3
quota_checks_total{tenant_id="other",resource="rph",result="warned"} 2
quota_checks_total{scope="team",scope_id="blue",resource="team_rpm",result="allowed"} 6
quota_checks_total{scope="team",scope_id="blue",resource="team_rpm",result="rejected"} 4
quota_checks_total{scope="team",scope_id="other",resource="team_rpm",result="allowed"} 9
quota_remaining{tenant_id="acme",resource="rph"} 0
envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="upstream"} 77
server_live 1
weird{a="x\"y\\z"} 1e3
"#;

    #[test]
    fn parses_labels_and_values() {
        let s = parse(TEXT).unwrap();
        assert_eq!(s.len(), 16);
        assert_eq!(s[0].label("tenant_id"), Some("acme"));
        assert_eq!(s[0].value, 12.0);
        let w = s.iter().find(|x| x.name == "weird").unwrap();
        assert_eq!((w.label("a"), w.value), (Some("x\"y\\z"), 1000.0));
        assert_eq!(s.iter().find(|x| x.name == "server_live").unwrap().labels, vec![]);
        assert!(parse("<html>not found</html>").is_err());
        assert!(parse("a{b=\"c} 1").is_err());
    }

    #[test]
    fn top_tenants_by_rejections_and_by_allowed() {
        let s = parse(TEXT).unwrap();
        let rows = top(&s, None, By::Rejected);
        let names: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
        // acme 4 rejected, other 3 (40 allowed), beta_corp 0; scope series never appear here.
        assert_eq!(names, ["acme", "other", "beta_corp"]);
        assert_eq!(rows[0].rejected, 4);
        assert_eq!(rows[0].allowed, 12, "the most any one budget admitted, not the sum");
        assert_eq!(rows[0].rejected_by, vec![("rph".to_string(), 3), ("cost".to_string(), 1)]);
        assert!((rows[0].rejected_pct() - 25.0).abs() < 1e-9);
        assert_eq!(rows[1].warned, 2);
        let by_allowed: Vec<String> = top(&s, None, By::Allowed).into_iter().map(|r| r.subject).collect();
        assert_eq!(by_allowed, ["other", "acme", "beta_corp"]);
        let team = top(&s, Some("team"), By::Rejected);
        assert_eq!(team.iter().map(|r| (r.subject.as_str(), r.rejected, r.allowed)).collect::<Vec<_>>(), [("blue", 4, 6), ("other", 0, 9)]);
        assert!(top(&s, Some("project"), By::Rejected).is_empty());
    }
}
