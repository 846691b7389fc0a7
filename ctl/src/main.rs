//! tenant-quota-ctl: the operator's CLI for tenant-quota's admin API (SPEC 4) and its
//! Prometheus metrics (SPEC 3). See docs/cli.md.

mod format;
mod http;
mod prom;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The admin API of `make run` (envoy/envoy.yaml: the filter's listener, `admin.path_prefix`).
const DEFAULT_URL: &str = "http://127.0.0.1:10000/.quota";
/// Envoy's own admin listener of `make run`, for `/stats/prometheus`.
const DEFAULT_STATS_URL: &str = "http://127.0.0.1:9901";
const TOKEN_ENV: &str = "TENANT_QUOTA_TOKEN";

const EXIT_CODES: &str = "\
The bearer token comes from $TENANT_QUOTA_TOKEN or from --token-file (never from an argument).

Exit codes:
  0  done
  1  other failure (e.g. writing the output)
  2  usage error (bad arguments)
  3  wrong or unreachable URL: no connection, no answer in time, or an answer that is not
     the admin API's (not JSON; a 404 from something else)
  4  token refused (401), client address refused (403), or no token given
  5  unknown tenant, scope or scope id (never seen, not configured, no override), or no
     override to remove
  6  malformed answer: JSON that does not parse or lacks the expected fields, or an
     answer that is not HTTP / not Prometheus text
  7  the admin API refused the request (400 bad override, 409, 503 shared data unavailable)";

#[derive(Parser, Debug)]
#[command(name = "tenant-quota-ctl", version, about = "Operate tenant-quota: usage, overrides, resets and top tenants", after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug)]
struct Global {
    /// The admin API: http://HOST:PORT followed by the filter's admin.path_prefix.
    #[arg(long, global = true, env = "TENANT_QUOTA_URL", default_value = DEFAULT_URL)]
    url: String,
    /// Envoy's admin address (for `top`, which reads /stats/prometheus).
    #[arg(long, global = true, env = "TENANT_QUOTA_STATS_URL", default_value = DEFAULT_STATS_URL)]
    stats_url: String,
    /// Read the bearer token from this file (default: $TENANT_QUOTA_TOKEN).
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print the API's JSON answer as received (for `top`: the rows as JSON).
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for a connection and for the answer.
    #[arg(long, global = true, default_value_t = 10, value_name = "SECONDS")]
    timeout: u64,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Tracked tenants, check totals, saturation level and signals, global state.
    Status,
    /// A tenant's (or scope id's) usage: a bar per budget with used/limit, percent, resets in.
    Usage(Target),
    /// Runtime overrides (kept until removed or until Envoy restarts).
    #[command(subcommand)]
    Override(OverrideCmd),
    /// Clear a tenant's (or scope id's) counters.
    Reset {
        #[command(flatten)]
        target: Target,
        /// Also zero the in_flight slots (for slots no live request will release).
        #[arg(long)]
        in_flight: bool,
    },
    /// The tenants (or ids of a scope) with the most rejections, from Envoy's /stats/prometheus.
    Top {
        /// Order by rejected or by allowed checks.
        #[arg(long, value_enum, default_value = "rejected")]
        by: TopBy,
        /// Show at most this many rows.
        #[arg(short = 'n', long, default_value_t = 10)]
        limit: usize,
        /// Ids of this scope instead of tenants.
        #[arg(long)]
        scope: Option<String>,
    },
}

#[derive(Args, Debug)]
struct Target {
    /// A scope name (e.g. `team`): ID is then an id of that scope, not a tenant.
    #[arg(long)]
    scope: Option<String>,
    /// The tenant id (or scope id with --scope).
    id: String,
}

#[derive(Subcommand, Debug)]
enum OverrideCmd {
    /// Set the runtime override (replacing any previous one as a whole).
    Set {
        #[command(flatten)]
        target: Target,
        /// BUDGET.FIELD=VALUE, e.g. requests_per_minute.limit=50 (fields: limit,
        /// burst_credits, window_ms, unlimited).
        #[arg(value_name = "BUDGET.FIELD=VALUE")]
        settings: Vec<String>,
        /// The tenant's priority (tenants only).
        #[arg(long, value_enum)]
        priority: Option<Priority>,
        /// A JSON file with the override (the shape of a `tenants` entry; `-` for stdin);
        /// settings given as arguments apply on top of it.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
    },
    /// Remove the runtime override: the configuration's limits apply again.
    Rm(Target),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Priority {
    Vip,
    Normal,
    Low,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum TopBy {
    Rejected,
    Allowed,
}

/// A failure: one line on stderr and its exit code.
#[derive(Debug, PartialEq, Eq)]
enum Fail {
    Usage(String),
    Unreachable(String),
    Auth(String),
    NotFound(String),
    Malformed(String),
    Refused(String),
}

impl Fail {
    fn code(&self) -> u8 {
        match self {
            Fail::Usage(_) => 2,
            Fail::Unreachable(_) => 3,
            Fail::Auth(_) => 4,
            Fail::NotFound(_) => 5,
            Fail::Malformed(_) => 6,
            Fail::Refused(_) => 7,
        }
    }
    fn message(&self) -> &str {
        match self {
            Fail::Usage(m) | Fail::Unreachable(m) | Fail::Auth(m) | Fail::NotFound(m) | Fail::Malformed(m) | Fail::Refused(m) => m,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = String::new();
    let r = run(&cli, &mut out);
    if !out.is_empty() {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        if stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()).is_err() {
            return ExitCode::from(1);
        }
    }
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("tenant-quota-ctl: {}", f.message());
            ExitCode::from(f.code())
        }
    }
}

/// Tenant ids and scope names as the admin API takes them in a path segment: 1-256 bytes of
/// visible ASCII (SPEC 1), without `/`, `?` or `#`, which a path cannot carry as one segment.
fn check_id(what: &str, id: &str) -> Result<(), Fail> {
    if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(Fail::Usage(format!("invalid {what} `{id}`: ids are 1-256 bytes of visible ASCII")));
    }
    if id.contains(['/', '?', '#']) {
        return Err(Fail::Usage(format!("invalid {what} `{id}`: `/`, `?` and `#` cannot be sent in an admin API path")));
    }
    Ok(())
}

fn token(g: &Global) -> Result<String, Fail> {
    let (t, from) = match &g.token_file {
        Some(p) => (std::fs::read_to_string(p).map_err(|e| Fail::Auth(format!("cannot read the token file {}: {e}", p.display())))?, format!("the token file {}", p.display())),
        None => match std::env::var(TOKEN_ENV) {
            Ok(t) => (t, format!("${TOKEN_ENV}")),
            Err(_) => return Err(Fail::Auth(format!("no admin token: set {TOKEN_ENV} or pass --token-file FILE"))),
        },
    };
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(Fail::Auth(format!("no admin token: {from} is empty")));
    }
    if !t.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(Fail::Auth(format!("the token in {from} has characters a header cannot carry")));
    }
    Ok(t)
}

/// Where the admin API lives, and how to call it.
struct Api {
    url: http::Url,
    token: String,
    timeout: Duration,
}

/// An answer of the admin API with a 2xx status: the parsed object and the raw body.
struct Answer {
    value: Value,
    raw: String,
}

impl Api {
    fn new(g: &Global) -> Result<Api, Fail> {
        let url = http::Url::parse(&g.url).map_err(|e| Fail::Unreachable(format!("--url {e}")))?;
        Ok(Api { url, token: token(g)?, timeout: Duration::from_secs(g.timeout.max(1)) })
    }

    fn call(&self, method: &str, suffix: &str, body: Option<&[u8]>) -> Result<Answer, Fail> {
        let auth = format!("Bearer {}", self.token);
        let mut headers = vec![("authorization", auth.as_str()), ("accept", "application/json")];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let r = http::request(&self.url, method, suffix, &headers, body, self.timeout).map_err(|e| transport("--url", &self.url, e))?;
        classify(&self.url.display(), suffix, r)
    }
}

fn transport(flag: &str, url: &http::Url, e: http::HttpError) -> Fail {
    match e {
        http::HttpError::Connect(m) => Fail::Unreachable(format!("cannot reach {}: {m} (is Envoy running, and is {flag} right?)", url.display())),
        http::HttpError::Timeout(m) => Fail::Unreachable(format!("no answer from {m}")),
        http::HttpError::Protocol(m) => Fail::Malformed(format!("malformed answer from {m}")),
    }
}

/// The admin API answers every call with `content-type: application/json` (SPEC 4); an answer
/// without it came from something else (the upstream behind a wrong prefix, another server).
fn classify(base: &str, suffix: &str, r: http::Response) -> Result<Answer, Fail> {
    let at = format!("{base}{suffix}");
    match r.status {
        401 => return Err(Fail::Auth(format!("{at}: the admin API refused the token (401): check ${TOKEN_ENV} or --token-file"))),
        403 => return Err(Fail::Auth(format!("{at}: the admin API refused this client's address (403: not in admin.allowed_sources)"))),
        _ => {}
    }
    if !r.is_json() {
        let ct = r.content_type.as_deref().unwrap_or("none");
        return Err(Fail::Unreachable(format!(
            "{at} answered {} with content-type {ct}, not the tenant-quota admin API: --url must be http://HOST:PORT followed by admin.path_prefix (e.g. {DEFAULT_URL})",
            r.status
        )));
    }
    let raw = String::from_utf8_lossy(&r.body).into_owned();
    let value: Value = serde_json::from_str(&raw).map_err(|e| Fail::Malformed(format!("malformed answer from {at} (status {}): {e}", r.status)))?;
    if !value.is_object() {
        return Err(Fail::Malformed(format!("malformed answer from {at}: expected a JSON object, got `{}`", clip(&raw))));
    }
    let err = value.get("error").and_then(Value::as_str).unwrap_or("").to_string();
    match r.status {
        200..=299 => Ok(Answer { value, raw }),
        404 if err.starts_with("no such admin endpoint") => Err(Fail::Unreachable(format!("{at}: {err} (is --url the admin.path_prefix?)"))),
        404 => Err(Fail::NotFound(if err.is_empty() { format!("{at}: not found") } else { err })),
        s => Err(Fail::Refused(format!("the admin API refused the request ({s}): {}", if err.is_empty() { clip(&raw) } else { err }))),
    }
}

fn clip(s: &str) -> String {
    let t: String = s.chars().take(120).collect();
    if t.len() < s.len() {
        format!("{t}...")
    } else {
        t
    }
}

fn subject_path(t: &Target) -> Result<String, Fail> {
    check_id(if t.scope.is_some() { "scope id" } else { "tenant id" }, &t.id)?;
    Ok(match &t.scope {
        Some(s) => {
            check_id("scope name", s)?;
            format!("/scopes/{s}/{}", t.id)
        }
        None => format!("/tenants/{}", t.id),
    })
}

fn subject_name(t: &Target) -> String {
    match &t.scope {
        Some(s) => format!("{s} `{}`", t.id),
        None => format!("tenant `{}`", t.id),
    }
}

fn expect<'a>(a: &'a Answer, key: &str, what: &str) -> Result<&'a Value, Fail> {
    a.value.get(key).ok_or_else(|| Fail::Malformed(format!("malformed answer: the {what} has no `{key}`: {}", clip(&a.raw))))
}

fn run(cli: &Cli, out: &mut String) -> Result<(), Fail> {
    let g = &cli.global;
    match &cli.cmd {
        Cmd::Status => {
            let a = Api::new(g)?.call("GET", "/status", None)?;
            if !expect(&a, "mode", "status")?.is_string() || !expect(&a, "tracked_tenants", "status")?.is_u64() {
                return Err(Fail::Malformed(format!("malformed answer: unexpected status {}", clip(&a.raw))));
            }
            out.push_str(&if g.json { format!("{}\n", a.raw) } else { format::status(&a.value) });
            Ok(())
        }
        Cmd::Usage(t) => {
            let path = subject_path(t)?;
            let a = Api::new(g)?.call("GET", &path, None)?;
            if !expect(&a, "budgets", "usage report")?.is_object() {
                return Err(Fail::Malformed(format!("malformed answer: `budgets` is not an object: {}", clip(&a.raw))));
            }
            out.push_str(&if g.json { format!("{}\n", a.raw) } else { format::usage(&a.value) });
            // The API reports any id (all counters zero); an id it has never heard of is
            // most likely a typo.
            let v = &a.value;
            let known = v.get("tracked") == Some(&Value::Bool(true)) || v.get("configured") == Some(&Value::Bool(true)) || !v.get("override").is_none_or(Value::is_null);
            if !known {
                return Err(Fail::NotFound(format!("unknown {}: not named in the configuration, no traffic seen by this Envoy, no runtime override", subject_name(t))));
            }
            Ok(())
        }
        Cmd::Override(OverrideCmd::Set { target, settings, priority, from_file }) => {
            let path = subject_path(target)?;
            if priority.is_some() && target.scope.is_some() {
                return Err(Fail::Usage("--priority is a tenant's, not a scope id's".into()));
            }
            let body = override_body(settings, *priority, from_file.as_deref())?;
            let a = Api::new(g)?.call("PUT", &format!("{path}/overrides"), Some(body.to_string().as_bytes()))?;
            let o = expect(&a, "override", "override answer")?;
            out.push_str(&if g.json {
                format!("{}\n", a.raw)
            } else {
                format!("override set for {}: {o}\nevery worker enforces it within a second; kept until `override rm` or an Envoy restart\n", subject_name(target))
            });
            Ok(())
        }
        Cmd::Override(OverrideCmd::Rm(t)) => {
            let path = subject_path(t)?;
            let a = Api::new(g)?.call("DELETE", &format!("{path}/overrides"), None).map_err(|f| match f {
                Fail::NotFound(_) => Fail::NotFound(format!("{} has no runtime override", subject_name(t))),
                f => f,
            })?;
            expect(&a, "override", "override answer")?;
            out.push_str(&if g.json { format!("{}\n", a.raw) } else { format!("override removed for {}: the configuration's limits apply again\n", subject_name(t)) });
            Ok(())
        }
        Cmd::Reset { target, in_flight } => {
            let path = subject_path(target)?;
            let q = if *in_flight { "/reset?in_flight=true" } else { "/reset" };
            let a = Api::new(g)?.call("POST", &format!("{path}{q}"), None)?;
            let done = expect(&a, "reset", "reset answer")?.as_bool().ok_or_else(|| Fail::Malformed(format!("malformed answer: `reset` is not a boolean: {}", clip(&a.raw))))?;
            if g.json {
                out.push_str(&format!("{}\n", a.raw));
            }
            if !done {
                let note = a.value.get("note").and_then(Value::as_str).unwrap_or("no state yet");
                return Err(Fail::NotFound(format!("unknown {}: {note}, nothing to reset", subject_name(target))));
            }
            if !g.json {
                let slots = if a.value.get("in_flight_reset") == Some(&Value::Bool(true)) { "in_flight slots cleared too" } else { "in_flight slots kept" };
                let repaired = if a.value.get("repaired") == Some(&Value::Bool(true)) { "; an undecodable state was replaced by an empty one" } else { "" };
                out.push_str(&format!("reset {}: counters cleared ({slots}{repaired})\n", subject_name(target)));
            }
            Ok(())
        }
        Cmd::Top { by, limit, scope } => {
            if let Some(s) = scope {
                check_id("scope name", s)?;
            }
            let url = http::Url::parse(&g.stats_url).map_err(|e| Fail::Unreachable(format!("--stats-url {e}")))?;
            let suffix = "/stats/prometheus?filter=quota_checks_total";
            let r = http::request(&url, "GET", suffix, &[], None, Duration::from_secs(g.timeout.max(1))).map_err(|e| transport("--stats-url", &url, e))?;
            if r.status != 200 {
                return Err(Fail::Unreachable(format!("{}{suffix} answered {}: --stats-url must be Envoy's admin address (e.g. {DEFAULT_STATS_URL})", url.display(), r.status)));
            }
            let text = String::from_utf8_lossy(&r.body);
            let samples = prom::parse(&text).map_err(|e| Fail::Malformed(format!("malformed answer from {}{suffix} (not Prometheus text): {e}", url.display())))?;
            let by = match by {
                TopBy::Rejected => prom::By::Rejected,
                TopBy::Allowed => prom::By::Allowed,
            };
            let mut rows = prom::top(&samples, scope.as_deref(), by);
            rows.truncate(*limit);
            if g.json {
                let v: Vec<Value> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            (if scope.is_some() { "scope_id" } else { "tenant_id" }): r.subject,
                            "rejected": r.rejected, "allowed": r.allowed, "warned": r.warned, "shadow_rejected": r.shadow_rejected,
                            "rejected_by": r.rejected_by.iter().map(|(b, n)| (b.clone(), Value::from(*n))).collect::<Map<_, _>>(),
                        })
                    })
                    .collect();
                out.push_str(&format!("{}\n", Value::Array(v)));
            } else {
                out.push_str(&format::top(&rows, scope.as_deref()));
            }
            Ok(())
        }
    }
}

const FIELDS: [&str; 4] = ["limit", "burst_credits", "window_ms", "unlimited"];

/// The PUT body: `--from-file`'s object, then each BUDGET.FIELD=VALUE, then `--priority`.
fn override_body(settings: &[String], priority: Option<Priority>, from_file: Option<&std::path::Path>) -> Result<Value, Fail> {
    let mut body = match from_file {
        None => Map::new(),
        Some(p) => {
            let text = if p.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| Fail::Usage(format!("cannot read the override from stdin: {e}")))?
            } else {
                std::fs::read_to_string(p).map_err(|e| Fail::Usage(format!("cannot read {}: {e}", p.display())))?
            };
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return Err(Fail::Usage(format!("{}: expected a JSON object such as {{\"budgets\":{{\"requests_per_minute\":{{\"limit\":50}}}}}}", p.display()))),
                Err(e) => return Err(Fail::Usage(format!("{}: not JSON: {e}", p.display()))),
            }
        }
    };
    for s in settings {
        let (key, val) = s.split_once('=').ok_or_else(|| Fail::Usage(format!("`{s}`: expected BUDGET.FIELD=VALUE, e.g. requests_per_minute.limit=50")))?;
        let (budget, field) = key.rsplit_once('.').ok_or_else(|| Fail::Usage(format!("`{s}`: expected BUDGET.FIELD=VALUE, e.g. requests_per_minute.limit=50")))?;
        if budget.is_empty() || !FIELDS.contains(&field) {
            return Err(Fail::Usage(format!("`{s}`: FIELD is one of {}", FIELDS.join(", "))));
        }
        let value = match field {
            "unlimited" => match val {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(Fail::Usage(format!("`{s}`: unlimited is true or false"))),
            },
            _ => Value::from(val.parse::<u64>().map_err(|_| Fail::Usage(format!("`{s}`: {field} is a non-negative integer")))?),
        };
        let budgets = body.entry("budgets").or_insert_with(|| Value::Object(Map::new()));
        let Some(budgets) = budgets.as_object_mut() else { return Err(Fail::Usage("the override's `budgets` is not an object".into())) };
        let b = budgets.entry(budget).or_insert_with(|| Value::Object(Map::new()));
        let Some(b) = b.as_object_mut() else { return Err(Fail::Usage(format!("the override's budget `{budget}` is not an object"))) };
        b.insert(field.to_string(), value);
    }
    if let Some(p) = priority {
        let name = match p {
            Priority::Vip => "vip",
            Priority::Normal => "normal",
            Priority::Low => "low",
        };
        body.insert("priority".into(), Value::from(name));
    }
    if body.is_empty() {
        return Err(Fail::Usage("nothing to set: give BUDGET.FIELD=VALUE settings, --priority or --from-file".into()));
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use serde_json::json;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_commands_and_has_no_token_argument() {
        let c = Cli::try_parse_from(["tenant-quota-ctl", "usage", "--scope", "team", "blue", "--json"]).unwrap();
        match c.cmd {
            Cmd::Usage(t) => assert_eq!((t.scope.as_deref(), t.id.as_str()), (Some("team"), "blue")),
            other => panic!("{other:?}"),
        }
        assert!(c.global.json);
        assert_eq!(c.global.url, DEFAULT_URL);
        let c = Cli::try_parse_from(["tenant-quota-ctl", "--url", "http://h:1/q", "override", "set", "acme", "rpm.limit=5", "--priority", "vip"]).unwrap();
        assert_eq!(c.global.url, "http://h:1/q");
        assert!(matches!(c.cmd, Cmd::Override(OverrideCmd::Set { ref settings, priority: Some(Priority::Vip), .. }) if settings == &["rpm.limit=5"]));
        let c = Cli::try_parse_from(["tenant-quota-ctl", "reset", "acme", "--in-flight"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Reset { in_flight: true, .. }));
        let c = Cli::try_parse_from(["tenant-quota-ctl", "top", "--by", "allowed", "-n", "3"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Top { by: TopBy::Allowed, limit: 3, scope: None }));
        assert!(Cli::try_parse_from(["tenant-quota-ctl", "--token", "x", "status"]).is_err(), "a token is never an argument");
        assert!(Cli::try_parse_from(["tenant-quota-ctl", "usage"]).is_err());
    }

    #[test]
    fn override_bodies() {
        let b = override_body(&["rpm.limit=50".into(), "rpm.burst_credits=5".into(), "bytes.unlimited=true".into()], Some(Priority::Low), None).unwrap();
        assert_eq!(b, json!({"budgets": {"rpm": {"limit": 50, "burst_credits": 5}, "bytes": {"unlimited": true}}, "priority": "low"}));
        // Budget names may contain dots: the field is after the last one.
        assert_eq!(override_body(&["a.b.limit=1".into()], None, None).unwrap(), json!({"budgets": {"a.b": {"limit": 1}}}));
        for bad in ["rpm", "rpm.limit", "limit=5", "rpm.max=5", "rpm.limit=-1", "rpm.limit=x", "rpm.unlimited=yes", ".limit=1"] {
            assert!(matches!(override_body(&[bad.into()], None, None), Err(Fail::Usage(_))), "{bad}");
        }
        assert!(matches!(override_body(&[], None, None), Err(Fail::Usage(_))));
    }

    #[test]
    fn ids() {
        assert!(check_id("tenant id", "acme").is_ok());
        assert!(check_id("tenant id", "beta.corp-1_%").is_ok());
        for bad in ["", "a b", "a/b", "a?b", "a#b", "é", &"x".repeat(257)] {
            assert!(matches!(check_id("tenant id", bad), Err(Fail::Usage(_))), "{bad:?}");
        }
    }

    fn resp(status: u16, ct: Option<&str>, body: &str) -> http::Response {
        http::Response { status, content_type: ct.map(str::to_string), body: body.as_bytes().to_vec() }
    }

    #[test]
    fn answers_map_to_exit_codes() {
        let j = Some("application/json");
        let code = |r| classify("http://h:1/.quota", "/x", r).err().map(|f: Fail| f.code());
        assert_eq!(code(resp(200, j, r#"{"mode":"enforce"}"#)), None);
        assert_eq!(code(resp(401, j, r#"{"error":"unauthorized"}"#)), Some(4));
        assert_eq!(code(resp(403, j, r#"{"error":"forbidden"}"#)), Some(4));
        assert_eq!(code(resp(200, Some("text/plain"), "ok 0\n")), Some(3), "the upstream behind a wrong prefix");
        assert_eq!(code(resp(404, Some("text/plain; charset=UTF-8"), "invalid path")), Some(3), "Envoy's own admin");
        assert_eq!(code(resp(404, j, r#"{"error":"no such admin endpoint; see ..."}"#)), Some(3));
        assert_eq!(code(resp(404, j, r#"{"error":"no scope `x` in the configuration"}"#)), Some(5));
        assert_eq!(code(resp(404, j, r#"{"error":"no runtime override for this subject"}"#)), Some(5));
        assert_eq!(code(resp(200, j, r#"{"mode":"#)), Some(6));
        assert_eq!(code(resp(200, j, "[1,2]")), Some(6));
        assert_eq!(code(resp(400, j, r#"{"error":"invalid override at `budgets.rpx`: unknown budget"}"#)), Some(7));
        assert_eq!(code(resp(503, j, r#"{"error":"shared data unavailable: Unavailable"}"#)), Some(7));
        let f = classify("http://h:1/.quota", "/x", resp(400, j, r#"{"error":"invalid override at `budgets.rpx`"}"#)).err().unwrap();
        assert_eq!(f.message(), "the admin API refused the request (400): invalid override at `budgets.rpx`");
    }
}
