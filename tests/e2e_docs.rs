//! The console transcripts of README.md and docs/*.md, run against `make run`'s Envoy: a docs
//! example that no longer matches the filter fails `make test`.
//!
//! The convention (docs/development.md, "Docs transcripts", says the same for writers):
//! - A block fenced as ```` ```console ```` is a transcript. Each block runs against a fresh
//!   `make run`: envoy/envoy.yaml (listener, admin and backend ports rewritten to the ones the
//!   kernel picks, listener renamed `main` for the harness, `--concurrency 2`) in front of
//!   envoy/demo_backend.py, started before the block and stopped after it. So a block starts
//!   from empty counts, and no block sees another's state.
//! - A line starting with `$ ` is a command, run by `bash -c` after `localhost:10000`,
//!   `localhost:10001` and `localhost:9901` (or `127.0.0.1:…`) are replaced by the harness's
//!   listener, demo backend and Envoy admin ports. The lines up to the next command are its
//!   expected output (trailing blank lines ignored). A block runs within one clock minute:
//!   the test waits for a new minute when fewer than 20 s of the current one are left.
//! - Expected output that starts with `HTTP/` (`curl -i`) is a response: its status line must
//!   match; every header shown must be in the response with a matching value, in any order
//!   (headers not shown, such as `date`, are not checked); the body is checked only when the
//!   transcript shows it, after a blank line.
//! - Other output, and a body, is matched line by line (trailing blanks ignored). A line `...`
//!   stands for any number of lines. Within a line, `[..]` stands for any text: use it for
//!   what moves from run to run (seconds to a window's end, `resets_in_ms`, ages). A line that is JSON is compared as
//!   JSON: every field shown must be there with an equal value (fields not shown are not
//!   checked), and a value written `[..]` matches any value.
//! - ```` ```console e2e_ctl ```` marks docs/cli.md's transcripts, which tests/e2e_ctl.rs
//!   recorded against its own configuration (`TQ_CTL_TRANSCRIPT`); ```` ```console run-global ````
//!   marks a transcript of `make run-global` (Redis, envoyproxy/ratelimit, two Envoys). Neither
//!   is run here; any other word after `console` fails this test, so a typo cannot hide a block.
//!
//! `TQ_DOCS_SHOW=1` prints every command's actual output (for writing a new transcript);
//! `TQ_DOCS_ONLY=<file>` runs the blocks of that file only.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Info-string words of console blocks that are not run here (see the module doc).
const NOT_RUN_HERE: [&str; 2] = ["e2e_ctl", "run-global"];

#[derive(Debug)]
struct Step {
    line: usize,
    command: String,
    expected: Vec<String>,
}

#[derive(Debug)]
struct Block {
    file: String,
    line: usize,
    steps: Vec<Step>,
}

/// README.md and docs/*.md, in that order (docs by name).
fn doc_files() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "md")).collect();
    docs.sort();
    let mut out = vec![repo().join("README.md")];
    out.extend(docs);
    if let Ok(only) = std::env::var("TQ_DOCS_ONLY") {
        out.retain(|p| p.ends_with(&only));
    }
    out
}

/// The console blocks of `text` to run (`file` names it in messages). Errors: an unknown
/// info word, an unclosed fence, output before the first command.
fn parse_blocks(file: &str, text: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(info) = lines[i].trim_start().strip_prefix("```console") else {
            i += 1;
            continue;
        };
        let start = i + 1;
        let end = (start..lines.len()).find(|&j| lines[j].trim_start().starts_with("```")).ok_or(format!("{file}:{start}: console block never closed"))?;
        i = end + 1;
        match info.trim() {
            "" => {}
            w if NOT_RUN_HERE.contains(&w) => continue,
            w => return Err(format!("{file}:{start}: unknown console block kind `{w}` (known: none, {NOT_RUN_HERE:?})")),
        }
        let mut steps: Vec<Step> = Vec::new();
        for (j, l) in lines[start..end].iter().enumerate() {
            if let Some(cmd) = l.strip_prefix("$ ") {
                steps.push(Step { line: start + j + 1, command: cmd.to_string(), expected: Vec::new() });
            } else if let Some(s) = steps.last_mut() {
                s.expected.push(l.to_string());
            } else if !l.trim().is_empty() {
                return Err(format!("{file}:{}: output before the block's first `$ ` command", start + j + 1));
            }
        }
        for s in steps.iter_mut() {
            while s.expected.last().is_some_and(|l| l.trim().is_empty()) {
                s.expected.pop();
            }
        }
        blocks.push(Block { file: file.to_string(), line: start, steps });
    }
    Ok(blocks)
}

// ------------------------------------------------------------------------------- matching

/// `pattern` against one actual line: `[..]` matches any text; a JSON line is compared as JSON.
fn line_matches(pattern: &str, actual: &str) -> bool {
    // Trailing blanks are invisible in Markdown (and editors strip them).
    let (pattern, actual) = (pattern.trim_end(), actual.trim_end());
    if let (Some(p), Ok(a)) = (json_pattern(pattern), serde_json::from_str::<Value>(actual)) {
        return json_matches(&p, &a);
    }
    let parts: Vec<&str> = pattern.split("[..]").collect();
    if parts.len() == 1 {
        return pattern == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || actual.len() < first.len() + last.len() || !actual.ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(k) => rest = &rest[k + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The sentinel a `[..]` value becomes inside a JSON pattern.
const ANY: &str = "\u{1}any";

/// A JSON object or array pattern, `[..]` values turned into [`ANY`]; None if not JSON.
fn json_pattern(pattern: &str) -> Option<Value> {
    let t = pattern.trim_start();
    if !t.starts_with('{') && !t.starts_with('[') {
        return None;
    }
    serde_json::from_str(&pattern.replace("[..]", "\"\\u0001any\"")).ok()
}

/// Every field of `p` is in `a` with a matching value; arrays match element by element.
fn json_matches(p: &Value, a: &Value) -> bool {
    match (p, a) {
        (Value::String(s), _) if s == ANY => true,
        (Value::Object(po), Value::Object(ao)) => po.iter().all(|(k, pv)| ao.get(k).is_some_and(|av| json_matches(pv, av))),
        (Value::Array(pa), Value::Array(aa)) => pa.len() == aa.len() && pa.iter().zip(aa).all(|(p, a)| json_matches(p, a)),
        _ => p == a,
    }
}

/// Lines against lines: `...` matches any number of lines.
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.first() {
        None => actual.is_empty(),
        Some(e) if e == "..." => (0..=actual.len()).any(|k| lines_match(&expected[1..], &actual[k..])),
        Some(e) => !actual.is_empty() && line_matches(e, actual[0]) && lines_match(&expected[1..], &actual[1..]),
    }
}

/// The header lines and the body lines (None: no blank line, so no body shown) of an
/// HTTP response's lines, the status line excluded.
fn split_response<S: AsRef<str>>(lines: &[S]) -> (Vec<&str>, Option<Vec<&str>>) {
    let lines: Vec<&str> = lines.iter().map(|l| l.as_ref()).collect();
    match lines.iter().position(|l| l.trim().is_empty()) {
        Some(k) => (lines[..k].to_vec(), Some(lines[k + 1..].to_vec())),
        None => (lines, None),
    }
}

/// Whether `actual` (a command's whole output) is what `expected` shows; Err says why.
fn check(expected: &[String], actual: &str) -> Result<(), String> {
    let mut act: Vec<&str> = actual.lines().map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    while act.last().is_some_and(|l| l.trim().is_empty()) {
        act.pop();
    }
    let Some(status) = expected.first().filter(|l| l.starts_with("HTTP/")) else {
        return if lines_match(expected, &act) { Ok(()) } else { Err("the output differs".into()) };
    };
    if act.is_empty() || !line_matches(status, act[0]) {
        return Err(format!("status line: expected `{status}`, got `{}`", act.first().unwrap_or(&"")));
    }
    let (want_headers, want_body) = split_response(&expected[1..]);
    let (got_headers, got_body) = split_response(&act[1..]);
    for h in want_headers.into_iter().filter(|h| *h != "...") {
        let (name, value) = h.split_once(':').ok_or(format!("`{h}` is not a header line"))?;
        let found = got_headers.iter().filter_map(|g| g.split_once(':')).any(|(n, v)| n.trim().eq_ignore_ascii_case(name.trim()) && line_matches(value.trim(), v.trim()));
        if !found {
            let got: Vec<&&str> = got_headers.iter().filter(|g| g.split_once(':').is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name.trim()))).collect();
            return Err(format!("header `{h}`: got {got:?}"));
        }
    }
    if let Some(want) = want_body {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        if !lines_match(&want, &got_body.unwrap_or_default()) {
            return Err("the body differs".into());
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------- running

/// `make run`: envoy/envoy.yaml in front of envoy/demo_backend.py, every port the kernel's.
struct Demo {
    envoy: Envoy,
    backend: DemoBackend,
}

/// envoy/envoy.yaml with the admin and listener on port 0, the backend on `backend`, the
/// wasm at its absolute path, and the listener named `main` (what the harness waits for).
fn make_run_yaml(backend: u16) -> String {
    let yaml = std::fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap();
    let subs = [
        ("port_value: 9901 ", "port_value: 0 ".to_string()),
        ("port_value: 10000 ", "port_value: 0 ".to_string()),
        ("port_value: 10001 ", format!("port_value: {backend} ")),
        ("- name: tenant_quota_ingress\n", "- name: main\n".to_string()),
        ("filename: target/wasm32-wasip1/release/tenant_quota.wasm", format!("filename: \"{}\"", wasm_path().display())),
    ];
    let mut out = yaml;
    for (from, to) in subs {
        assert_eq!(out.matches(from).count(), 1, "envoy/envoy.yaml: expected `{from}` exactly once (the test rewrites it)");
        out = out.replace(from, &to);
    }
    out
}

fn start_demo() -> Demo {
    // Admin PUTs reach the backend and are reset unanswered (docs/admin-api.md): its stderr
    // is not kept, so no tracebacks.
    let backend = DemoBackend::start();
    let envoy = Envoy::start_yaml(&make_run_yaml(backend.port), 2);
    Demo { envoy, backend }
}

/// `text` with `host:from` replaced by `host:to` where no digit follows.
fn replace_port(text: &str, from: u16, to: u16) -> String {
    let mut out = text.to_string();
    for host in ["localhost", "127.0.0.1"] {
        let needle = format!("{host}:{from}");
        let mut done = String::new();
        let mut rest = out.as_str();
        while let Some(k) = rest.find(&needle) {
            let after = &rest[k + needle.len()..];
            let cut = if after.starts_with(|c: char| c.is_ascii_digit()) { needle.clone() } else { format!("{host}:{to}") };
            done.push_str(&rest[..k]);
            done.push_str(&cut);
            rest = after;
        }
        done.push_str(rest);
        out = done;
    }
    out
}

/// Run one transcript command against `demo`: its stdout (compared with the transcript; curl's
/// progress meter, shown when stdout is not a terminal, goes to stderr) and its stderr.
fn run(demo: &Demo, command: &str) -> (String, String) {
    let mut cmd = command.to_string();
    for (from, to) in [(10000, demo.envoy.port), (10001, demo.backend.port), (9901, demo.envoy.admin)] {
        cmd = replace_port(&cmd, from, to);
    }
    let out = Command::new("timeout").args(["60", "bash", "-c", &cmd]).current_dir(repo()).output().expect("cannot run bash");
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Wait for a new minute unless `need` of this one is left (blocks count per-minute windows).
fn wait_for_room(need: Duration) {
    let into = Duration::from_millis(now_ms() % 60_000);
    if into + need > Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(60) - into + Duration::from_millis(100));
    }
}

/// Run `block` against a fresh `make run`; the failures, each with the command's output.
fn run_block(block: &Block, show: bool) -> Vec<String> {
    wait_for_room(Duration::from_secs(20));
    let demo = start_demo();
    if show {
        eprintln!("== {}:{}: a fresh make run", block.file, block.line);
    }
    let mut failures = Vec::new();
    for s in &block.steps {
        let (actual, stderr) = run(&demo, &s.command);
        if show {
            eprintln!("{}:{}: $ {}\n{actual}", block.file, s.line, s.command);
        }
        if let Err(why) = check(&s.expected, &actual) {
            failures.push(format!(
                "{}:{}: `$ {}`: {why}\n--- expected ---\n{}\n--- actual ---\n{actual}--- stderr ---\n{stderr}",
                block.file,
                s.line,
                s.command,
                s.expected.join("\n")
            ));
        }
    }
    failures
}

#[test]
fn console_transcripts_in_the_docs_are_what_make_run_answers() {
    let show = std::env::var("TQ_DOCS_SHOW").is_ok();
    let started = Instant::now();
    let mut blocks = Vec::new();
    for f in doc_files() {
        let name = f.strip_prefix(repo()).unwrap().display().to_string();
        blocks.extend(parse_blocks(&name, &std::fs::read_to_string(&f).unwrap()).unwrap_or_else(|e| panic!("{e}")));
    }
    let only = std::env::var("TQ_DOCS_ONLY").is_ok();
    assert!(only || blocks.iter().any(|b| b.file == "README.md"), "README.md has no console transcript: the tour is gone?");
    let mut failures = Vec::new();
    for b in &blocks {
        failures.extend(run_block(b, show));
    }
    let steps: usize = blocks.iter().map(|b| b.steps.len()).sum();
    eprintln!("{} console blocks, {steps} commands, in {:.1} s", blocks.len(), started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{} transcript command(s) do not match what make run answers:\n\n{}", failures.len(), failures.join("\n\n"));
}

// ------------------------------------------------------------------------------- the matcher itself

fn exp(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

#[test]
fn matcher_checks_status_headers_and_json_fields_it_shows() {
    let actual = "HTTP/1.1 429 Too Many Requests\r\ndate: now\r\nretry-after: 48\r\nx-tenant-quota-limit: 5\r\n\r\n{\"status\":429,\"retry_after_s\":48,\"tenant\":\"t1\"}\r\n";
    assert_eq!(check(&exp("HTTP/1.1 429 Too Many Requests\nx-tenant-quota-limit: 5\nretry-after: [..]"), actual), Ok(()));
    assert_eq!(check(&exp("HTTP/1.1 429 Too Many Requests\nretry-after: [..]\n\n{\"tenant\":\"t1\",\"retry_after_s\":[..]}"), actual), Ok(()));
    // A wrong header value, a missing header, a wrong status, a wrong or missing JSON field fail.
    assert!(check(&exp("HTTP/1.1 429 Too Many Requests\nx-tenant-quota-limit: 6"), actual).is_err());
    assert!(check(&exp("HTTP/1.1 429 Too Many Requests\nx-tenant-quota-reason: burst_exhausted"), actual).is_err());
    assert!(check(&exp("HTTP/1.1 200 OK\nretry-after: [..]"), actual).is_err());
    assert!(check(&exp("HTTP/1.1 429 Too Many Requests\n\n{\"tenant\":\"t2\"}"), actual).is_err());
    assert!(check(&exp("HTTP/1.1 429 Too Many Requests\n\n{\"scope\":\"team\"}"), actual).is_err());
    assert!(check(&exp("HTTP/1.1 429 Too Many Requests\nretry-after: 12"), actual).is_err());
}

#[test]
fn matcher_checks_plain_lines_with_wildcards() {
    assert_eq!(check(&exp("200 200 429"), "200 200 429 \n"), Ok(()), "trailing blanks do not count");
    assert_eq!(check(&exp("200 200 200"), "200 200 429 \n"), Err("the output differs".into()));
    assert_eq!(check(&exp("a\n...\nz"), "a\nb\nc\nz\n"), Ok(()));
    assert!(check(&exp("a\nz"), "a\nb\nz\n").is_err(), "no `...`: every line is shown");
    assert!(check(&[], "unexpected\n").is_err(), "no output shown: none expected");
    assert!(line_matches("ratelimit: \"rpm\";r=0;t=[..]", "ratelimit: \"rpm\";r=0;t=48"));
    assert!(!line_matches("ratelimit: \"rpm\";r=1;t=[..]", "ratelimit: \"rpm\";r=0;t=48"));
    assert!(line_matches("{\"a\":{\"b\":[..]},\"c\":[1,2]}", "{\"c\":[1,2],\"a\":{\"b\":{\"x\":1}},\"d\":0}"));
    assert!(!line_matches("{\"c\":[1]}", "{\"c\":[1,2]}"));
}

#[test]
fn parser_finds_commands_outputs_and_refuses_unknown_kinds() {
    let md = "text\n```console\n$ curl a\nHTTP/1.1 200 OK\n\nbody\n\n$ curl b\n```\n```console e2e_ctl\n$ not run\n```\n";
    let b = parse_blocks("x.md", md).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].steps.len(), 2);
    assert_eq!((b[0].steps[0].command.as_str(), b[0].steps[0].expected.clone()), ("curl a", exp("HTTP/1.1 200 OK\n\nbody")));
    assert!(b[0].steps[1].expected.is_empty());
    assert!(parse_blocks("x.md", "```console shell\n$ ls\n```\n").is_err());
    assert!(parse_blocks("x.md", "```console\n$ ls\n").is_err());
    assert_eq!(replace_port("curl localhost:10000/ localhost:100001 127.0.0.1:10000", 10000, 5), "curl localhost:5/ localhost:100001 127.0.0.1:5");
    assert!(Path::new(&repo().join("envoy/envoy.yaml")).exists());
}
