//! Whose counts: a tenant, or an id of a scope (SPEC 7). One type for every layer: the
//! engine commits under it, the store builds its keys from it (`store::keys`), global
//! budgets name it in descriptors, the admin API reports it, the filter labels metrics by it.

use super::id::OVERFLOW;

/// A tenant id, or an id within a scope. Scope names are `[A-Za-z0-9_-]` (config), ids are
/// visible ASCII and may contain `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject<'a> {
    Tenant(&'a str),
    Scope {
        /// Index into `Config::scopes` (scopes are in name order).
        ix: usize,
        /// The scope's name (what keys, descriptors and replies carry).
        name: &'a str,
        id: &'a str,
    },
}

impl<'a> Subject<'a> {
    /// The id, tenant or scope id.
    pub fn id(&self) -> &'a str {
        match self {
            Subject::Tenant(id) | Subject::Scope { id, .. } => id,
        }
    }

    /// The scope's index (None: a tenant).
    pub fn scope(&self) -> Option<usize> {
        match self {
            Subject::Tenant(_) => None,
            Subject::Scope { ix, .. } => Some(*ix),
        }
    }

    /// The scope's name (None: a tenant).
    pub fn scope_name(&self) -> Option<&'a str> {
        match self {
            Subject::Tenant(_) => None,
            Subject::Scope { name, .. } => Some(name),
        }
    }

    /// The same subject with another id in the same space (tenants, or the same scope).
    pub fn with_id(&self, id: &'a str) -> Subject<'a> {
        match *self {
            Subject::Tenant(_) => Subject::Tenant(id),
            Subject::Scope { ix, name, .. } => Subject::Scope { ix, name, id },
        }
    }

    /// The subject that stands for every id of this space past `max_tracked`.
    pub fn overflow(&self) -> Subject<'a> {
        self.with_id(OVERFLOW)
    }

    pub fn is_overflow(&self) -> bool {
        self.id() == OVERFLOW
    }

    /// What a global descriptor's first entry is keyed by: `tenant` or the scope's name.
    pub fn entry(&self) -> &'a str {
        self.scope_name().unwrap_or("tenant")
    }
}
