//! End-to-end harness: a real Envoy with the built filter, a test upstream, and a small
//! HTTP/1.1 client. Every Envoy gets its own config whose listeners and admin bind port 0:
//! the kernel picks ports nobody holds, Envoy keeps them bound, and the harness reads them
//! back (admin from `--admin-address-path`, listeners from the admin `/listeners`). No port
//! is ever picked, released, then rebound, so two Envoys can never share a port (Envoy sets
//! SO_REUSEPORT on its listeners). Envoy is killed when dropped; a panicking test prints the
//! tail of its log first.
#![allow(dead_code, unused_imports)]

pub mod global;
pub mod llm;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn wasm_path() -> PathBuf {
    let p = std::env::var("TQ_WASM").map(PathBuf::from).unwrap_or_else(|_| repo().join("target/wasm32-wasip1/release/tenant_quota.wasm"));
    assert!(p.exists(), "{} missing: run `make build` (or `make test`)", p.display());
    p
}

pub fn envoy_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("envoy")
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

pub fn tmpdir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!("tq-{}-{}-{}", tag, std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

// One file per fixture, re-exported: tests `use common::*`.
mod envoy;
mod http;
mod lds;
mod upstream;
pub use envoy::*;
pub use http::*;
pub use lds::*;
pub use upstream::*;
