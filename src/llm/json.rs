//! Lenient, allocation-light reading of the few JSON fields this module needs.
//!
//! Bodies come from clients and upstreams: a field of an unexpected type (a string where a
//! count was expected, `null`, an array) must not make the whole document unreadable, so
//! these readers turn a mismatch into `None` instead of an error. Fields that are not asked
//! for are skipped with [`IgnoredAny`] (validated, never allocated), so a 1 MiB prompt or a
//! long generated text costs a scan, not a tree. Only malformed JSON is an error.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;

/// A scalar that [`Loose`] can read; every other JSON value gives `None`.
pub(crate) trait Scalar: Sized {
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_str(_: &str) -> Option<Self> {
        None
    }
}

impl Scalar for u64 {
    fn from_u64(v: u64) -> Option<Self> {
        Some(v)
    }
}

impl Scalar for bool {
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

impl Scalar for String {
    fn from_str(v: &str) -> Option<Self> {
        Some(v.to_owned())
    }
}

/// Any JSON value; `Some` when it is a `T` (`u64`: a non-negative integer that fits, not a
/// float; `bool`; `String`).
pub(crate) struct Loose<T>(pub Option<T>);

/// The fields of a JSON object that a type reads, by index into `KEYS`.
pub(crate) trait Fields: Default {
    const KEYS: &'static [&'static str];
    /// Reads the value of `KEYS[key]` with `map.next_value()` (exactly once).
    fn set<'de, A: MapAccess<'de>>(&mut self, key: usize, map: &mut A) -> Result<(), A::Error>;
}

/// Any JSON value; `Some` when it is an object (its other keys skipped).
pub(crate) struct Obj<T>(pub Option<T>);

/// Reads a lenient value of a field (for [`Fields::set`]).
pub(crate) fn next<'de, A: MapAccess<'de>, T: Scalar>(map: &mut A) -> Result<Option<T>, A::Error> {
    Ok(map.next_value::<Loose<T>>()?.0)
}

/// Reads a lenient object-valued field (for [`Fields::set`]).
pub(crate) fn next_obj<'de, A: MapAccess<'de>, T: Fields>(map: &mut A) -> Result<Option<T>, A::Error> {
    Ok(map.next_value::<Obj<T>>()?.0)
}

impl<'de, T: Scalar> Deserialize<'de> for Loose<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor(PhantomData))
    }
}

impl<'de, T: Fields> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjVisitor(PhantomData))
    }
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

struct LooseVisitor<T>(PhantomData<T>);

impl<'de, T: Scalar> Visitor<'de> for LooseVisitor<T> {
    type Value = Loose<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Loose(T::from_bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Loose(u64::try_from(v).ok().and_then(T::from_u64)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Loose(T::from_u64(v)))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Loose(None))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Loose(T::from_str(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Loose(None))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Loose(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq)?;
        Ok(Loose(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map)?;
        Ok(Loose(None))
    }
}

struct ObjVisitor<T>(PhantomData<T>);

impl<'de, T: Fields> Visitor<'de> for ObjVisitor<T> {
    type Value = Obj<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Obj(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Obj(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Obj(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Obj(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Obj(None))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Obj(None))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Obj(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq)?;
        Ok(Obj(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut t = T::default();
        while let Some(key) = map.next_key_seed(Key(T::KEYS))? {
            match key {
                Some(k) => t.set(k, &mut map)?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Obj(Some(t)))
    }
}

/// A map key, as its index in the wanted keys (no allocation for keys without escapes).
struct Key(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|k| *k == v))
    }
}
