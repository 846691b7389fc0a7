//! Every proxy-wasm host call the filter makes. The SDK's wrappers panic on statuses they do
//! not expect, and a panic traps the VM; the raw calls here map every status instead and
//! avoid allocating beyond what the host itself allocates.
//!
//! Two calls still go through the SDK underneath, [`dispatch_http_call`] and
//! [`dispatch_grpc_call`]: the SDK's dispatcher routes an answer to the context that sent the
//! call only if its own wrapper registered the token (a raw call's answer would hit the SDK's
//! `expect("invalid token_id")` and trap). Their wrappers panic only on statuses outside
//! Ok/BadArgument/InternalFailure (HTTP) and Ok/ParseFailure/InternalFailure (gRPC); the
//! wrappers here refuse, before calling, the inputs for which the host answers anything else
//! (an empty cluster name or a timeout that does not fit the ABI's u32).

use crate::store::{SharedStore, StoreError};
use std::ptr::null_mut;

#[allow(dead_code)]
pub mod map {
    pub const REQUEST_HEADERS: u32 = 0;
    pub const RESPONSE_HEADERS: u32 = 2;
    pub const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
}

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const CAS_MISMATCH: u32 = 8;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_define_metric(metric_type: u32, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_buffer_bytes(buffer_type: u32, start: usize, size: usize, data: *const u8, data_size: usize) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

/// Take ownership of a buffer the host allocated through `proxy_on_memory_allocate`.
fn owned(ptr: *mut u8, len: usize) -> Vec<u8> {
    if ptr.is_null() || len == 0 {
        if !ptr.is_null() {
            // SAFETY: the host allocated `ptr` with our allocator for `len` (0) bytes.
            drop(unsafe { Vec::from_raw_parts(ptr, 0, 0) });
        }
        return Vec::new();
    }
    // SAFETY: the SDK's allocator hands out boxed slices of exactly `len` bytes.
    unsafe { Vec::from_raw_parts(ptr, len, len) }
}

pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;
pub const LOG_CRITICAL: u32 = 5;

pub fn log(level: u32, msg: &str) {
    // SAFETY: pointer and length of a live str.
    unsafe {
        proxy_log(level, msg.as_ptr(), msg.len());
    }
}

/// Host wall-clock time in Unix ms (0 if the host refuses).
pub fn now_ms() -> u64 {
    let mut t: u64 = 0;
    // SAFETY: `t` outlives the call.
    let s = unsafe { proxy_get_current_time_nanoseconds(&mut t) };
    if s == OK {
        t / 1_000_000
    } else {
        0
    }
}

pub fn header(map_type: u32, name: &str) -> Option<Vec<u8>> {
    let mut p: *mut u8 = null_mut();
    let mut n: usize = 0;
    // SAFETY: out-pointers outlive the call; the returned buffer is ours.
    let s = unsafe { proxy_get_header_map_value(map_type, name.as_ptr(), name.len(), &mut p, &mut n) };
    match s {
        OK => Some(owned(p, n)),
        _ => None,
    }
}

/// Every header of a map in one host call, in the host's serialized form; look values up
/// with [`pairs_get`]. Parsing is left to the lookups, which allocate only what they return.
pub fn headers_raw(map_type: u32) -> Option<Vec<u8>> {
    let mut p: *mut u8 = null_mut();
    let mut n: usize = 0;
    // SAFETY: out-pointers outlive the call; the returned buffer is ours.
    let s = unsafe { proxy_get_header_map_pairs(map_type, &mut p, &mut n) };
    (s == OK).then(|| owned(p, n))
}

pub fn add_header(map_type: u32, name: &str, value: &str) -> bool {
    // SAFETY: pointers and lengths of live strs.
    unsafe { proxy_add_header_map_value(map_type, name.as_ptr(), name.len(), value.as_ptr(), value.len()) == OK }
}

/// Set a header (replacing every value it had). False when the host refuses (e.g. request
/// headers already sent upstream).
pub fn replace_header(map_type: u32, name: &str, value: &str) -> bool {
    // SAFETY: pointers and lengths of live strs.
    unsafe { proxy_replace_header_map_value(map_type, name.as_ptr(), name.len(), value.as_ptr(), value.len()) == OK }
}

/// Envoy's `clear_route_cache` foreign function: the route is chosen again from the request
/// headers as they are now (after the filter changed one a route matches). False when the
/// host has no such function (NotFound) or no stream to act on.
pub fn clear_route_cache() -> bool {
    let name = "clear_route_cache";
    let mut p: *mut u8 = null_mut();
    let mut n: usize = 0;
    // SAFETY: pointers of a live str and locals; a returned buffer is ours.
    let s = unsafe { proxy_call_foreign_function(name.as_ptr(), name.len(), null_mut(), 0, &mut p, &mut n) };
    drop(owned(p, n));
    s == OK
}

#[allow(dead_code)]
pub fn remove_header(map_type: u32, name: &str) -> bool {
    // SAFETY: pointer and length of a live str.
    unsafe { proxy_remove_header_map_value(map_type, name.as_ptr(), name.len()) == OK }
}

/// An Envoy attribute by path, e.g. `["metadata", "filter_metadata", "jwt", "tenant"]`.
pub fn property(path: &[String]) -> Option<Vec<u8>> {
    let mut enc = Vec::new();
    for (i, part) in path.iter().enumerate() {
        if i > 0 {
            enc.push(0);
        }
        enc.extend_from_slice(part.as_bytes());
    }
    let mut p: *mut u8 = null_mut();
    let mut n: usize = 0;
    // SAFETY: as above.
    let s = unsafe { proxy_get_property(enc.as_ptr(), enc.len(), &mut p, &mut n) };
    match s {
        OK => Some(owned(p, n)),
        _ => None,
    }
}

/// Set a property of the current request: Envoy stores it as filter state `wasm.<path>`
/// (a one-segment path; Envoy's `setProperty`), readable by access logs and tracers. False
/// when the host refuses (no stream: NotFound; a read-only value already set: BadArgument).
pub fn set_property(path: &str, value: &[u8]) -> bool {
    // SAFETY: pointers and lengths of a live str and slice.
    unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) == OK }
}

pub fn define_metric(metric_type: u32, name: &str) -> Option<u32> {
    let mut id: u32 = 0;
    // SAFETY: pointers of a live str and a local.
    let s = unsafe { proxy_define_metric(metric_type, name.as_ptr(), name.len(), &mut id) };
    (s == OK && id != 0).then_some(id)
}

pub fn increment_metric(id: u32, by: i64) {
    // SAFETY: plain values.
    unsafe {
        proxy_increment_metric(id, by);
    }
}

pub fn record_metric(id: u32, v: u64) {
    // SAFETY: plain values.
    unsafe {
        proxy_record_metric(id, v);
    }
}

pub fn get_metric(id: u32) -> Option<u64> {
    let mut v: u64 = 0;
    // SAFETY: `v` outlives the call.
    let s = unsafe { proxy_get_metric(id, &mut v) };
    (s == OK).then_some(v)
}

/// Buffer types of `proxy_get_buffer_bytes`.
pub const HTTP_REQUEST_BODY: u32 = 0;
pub const HTTP_RESPONSE_BODY: u32 = 1;

pub fn buffer(buffer_type: u32, start: usize, max: usize) -> Option<Vec<u8>> {
    let mut p: *mut u8 = null_mut();
    let mut n: usize = 0;
    // SAFETY: out-pointers outlive the call; the returned buffer is ours.
    let s = unsafe { proxy_get_buffer_bytes(buffer_type, start, max, &mut p, &mut n) };
    match s {
        OK => Some(owned(p, n)),
        NOT_FOUND => Some(Vec::new()),
        _ => None,
    }
}

/// Make later host calls act on context `id` (a paused request, from the root's tick).
pub fn set_effective_context(id: u32) -> bool {
    // SAFETY: a plain value.
    unsafe { proxy_set_effective_context(id) == OK }
}

/// Resume a request paused in its header phase (e.g. after a gRPC answer).
pub fn resume_request() -> bool {
    // SAFETY: a plain value. Stream type 0 is the HTTP request.
    unsafe { proxy_continue_stream(0) == OK }
}

/// Replace `size` bytes of a buffer from `start` (e.g. a request body being held).
pub fn set_buffer(buffer_type: u32, start: usize, size: usize, data: &[u8]) -> bool {
    // SAFETY: pointer and length of a live slice.
    unsafe { proxy_set_buffer_bytes(buffer_type, start, size, data.as_ptr(), data.len()) == OK }
}

pub fn send_local_response(status: u32, details: &str, body: &str, headers: &[(String, String)]) -> bool {
    let h = crate::wire::serialize_pairs(headers);
    // SAFETY: all buffers live across the call.
    unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            h.as_ptr(),
            h.len(),
            -1,
        ) == OK
    }
}

/// Envoy's shared data, as a [`SharedStore`].
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str, buf: &mut Vec<u8>) -> Result<Option<u32>, StoreError> {
        let mut p: *mut u8 = null_mut();
        let mut n: usize = 0;
        let mut cas: u32 = 0;
        // SAFETY: out-pointers outlive the call; the returned buffer is ours.
        let s = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut p, &mut n, &mut cas) };
        match s {
            OK => {
                let v = owned(p, n);
                if v.is_empty() {
                    return Ok(None);
                }
                // The host's copy becomes the buffer (no second copy); the old one is freed.
                *buf = v;
                Ok(Some(cas))
            }
            NOT_FOUND => Ok(None),
            _ => Err(StoreError::Unavailable),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        // SAFETY: pointers and lengths of live buffers.
        let s = unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) };
        match s {
            OK => Ok(()),
            CAS_MISMATCH => Err(StoreError::CasMismatch),
            _ => Err(StoreError::Unavailable),
        }
    }
}

/// The plugin configuration's bytes (`{}` when there is none; `Err`: the host's status).
pub fn plugin_configuration(size: usize) -> Result<Vec<u8>, u32> {
    const PLUGIN_CONFIGURATION: u32 = 7;
    let mut p: *mut u8 = null_mut();
    let mut n: usize = 0;
    // SAFETY: out-pointers outlive the call; the returned buffer is ours.
    let s = unsafe { proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, size, &mut p, &mut n) };
    match s {
        OK if n > 0 => Ok(owned(p, n)),
        // No configuration at all: the defaults.
        OK | NOT_FOUND => {
            drop(owned(p, n));
            Ok(b"{}".to_vec())
        }
        s => Err(s),
    }
}

/// Ask for `on_tick` every `ms` milliseconds.
pub fn set_tick_period(ms: u32) -> bool {
    // SAFETY: a plain value.
    unsafe { proxy_set_tick_period_milliseconds(ms) == OK }
}

fn call_timeout(ms: u64) -> Option<std::time::Duration> {
    (ms <= u64::from(u32::MAX)).then(|| std::time::Duration::from_millis(ms))
}

/// An HTTP call to `cluster` from the current context; its answer comes to that context's
/// `on_http_call_response`. `None` if the host refused it.
pub fn dispatch_http_call(cluster: &str, headers: Vec<(&str, &str)>, body: &[u8], timeout_ms: u64) -> Option<u32> {
    let timeout = call_timeout(timeout_ms)?;
    if cluster.is_empty() {
        return None;
    }
    proxy_wasm::hostcalls::dispatch_http_call(cluster, headers, Some(body), vec![], timeout).ok()
}

/// A unary gRPC call to `cluster` from the current context; its answer comes to that
/// context's `on_grpc_call_response`. `None` if the host refused it.
pub fn dispatch_grpc_call(cluster: &str, service: &str, method: &str, message: &[u8], timeout_ms: u64) -> Option<u32> {
    let timeout = call_timeout(timeout_ms)?;
    if cluster.is_empty() {
        return None;
    }
    proxy_wasm::hostcalls::dispatch_grpc_call(cluster, service, method, Vec::new(), Some(message), timeout).ok()
}
