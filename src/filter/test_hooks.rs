//! Test hooks (`test_hooks` in the configuration), for the end-to-end tests of VM traps:
//! trap this VM, or ask the sync leader's VM to trap.

use super::global;
use super::host::{self, map, HostStore};
use crate::config::Config;
use crate::store::SharedStore;

/// At a request's headers: traps the VM on `trap_path`; on `trap_sync_leader_path`, the
/// status of the local reply to send (202 once the note is left, 503 if it could not be).
pub(super) fn on_request(cfg: &Config) -> Option<u32> {
    if let Some(trap) = &cfg.trap_path {
        if host::header(map::REQUEST_HEADERS, ":path").is_some_and(|p| p == trap.as_bytes()) {
            host::log(host::LOG_WARN, "tenant-quota: test hook: trapping this VM");
            std::process::abort();
        }
    }
    if let Some(trap) = &cfg.trap_sync_leader_path {
        if host::header(map::REQUEST_HEADERS, ":path").is_some_and(|p| p == trap.as_bytes()) {
            // The sync loop may run in a VM no request reaches (Envoy ticks the main
            // thread's VM too), so the request leaves a note in shared data and the
            // lease holder traps on its next tick (reloaded under FAIL_RELOAD).
            let ok = HostStore.set(global::TRAP_KEY, &[1], 0).is_ok();
            return Some(if ok { 202 } else { 503 });
        }
    }
    None
}
