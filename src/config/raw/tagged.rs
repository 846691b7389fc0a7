//! `counts`, `global.on_unavailable` and `llm.model`: serde's externally tagged shape, a name
//! (`"requests"`) or an object with one key (`{"request_header": "x-cost"}`). The names, keys
//! and values are parsed by serde's derived enums; the visitor only tells the two forms apart,
//! so that each refusal keeps the wording of the configuration reference and names the
//! value's key when the value is at fault (`budgets.b.counts.llm_tokens`).

use super::{RawCycle, RawDay, RawWindow};
use crate::config::error::WORDED;
use crate::config::{valid_header_name, ModelSource, OnUnavailable};
use crate::core::budget::{Counts, TokenKind};
use serde::de::value::Error as ValueError;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::marker::PhantomData;

/// A value written as a name or as an object with one key.
pub trait Tagged: Sized {
    /// The refusal of any other shape, at the value's own path.
    const EXPECTED: &'static str;
    /// The name form, `"name"`.
    fn named(name: &str) -> Result<Self, String>;
    /// The object form, `{key: value}`: reads the value (through [`value`], so that a refusal of
    /// it names `key` in the path), or refuses the key at the object's path.
    fn keyed<'de, A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<Self, A::Error>;
}

/// For `#[serde(deserialize_with)]` on a [`Tagged`] field.
pub fn deserialize<'de, D: Deserializer<'de>, T: Tagged>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(TaggedVisitor(PhantomData))
}

/// For `#[serde(default, deserialize_with)]` on an optional [`Tagged`] field (`null`: absent).
pub fn optional<'de, D: Deserializer<'de>, T: Tagged>(d: D) -> Result<Option<T>, D::Error> {
    struct Tag<T>(T);
    impl<'de, T: Tagged> Deserialize<'de> for Tag<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize(d).map(Tag)
        }
    }
    Ok(Option::<Tag<T>>::deserialize(d)?.map(|t| t.0))
}

struct TaggedVisitor<T>(PhantomData<T>);

impl<'de, T: Tagged> Visitor<'de> for TaggedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTED)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        T::named(s).map_err(refusal)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let Some(key) = map.next_key::<String>()? else { return Err(refusal(T::EXPECTED)) };
        let value = T::keyed(&key, &mut map)?;
        match map.next_key::<IgnoredAny>()? {
            None => Ok(value),
            Some(_) => Err(refusal(T::EXPECTED)),
        }
    }

    // Every other JSON type: our wording, not serde's "invalid type: ..., expected ...".
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
        Err(refusal(T::EXPECTED))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<T, E> {
        Err(refusal(T::EXPECTED))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<T, E> {
        Err(refusal(T::EXPECTED))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
        Err(refusal(T::EXPECTED))
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Err(refusal(T::EXPECTED))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<T, A::Error> {
        Err(refusal(T::EXPECTED))
    }
}

/// A refusal in our words (see [`WORDED`]).
fn refusal<E: de::Error>(message: impl fmt::Display) -> E {
    E::custom(format_args!("{WORDED}{message}"))
}

/// `s` as one of the names of a derived enum.
fn name<T: DeserializeOwned>(s: &str) -> Option<T> {
    T::deserialize(IntoDeserializer::<ValueError>::into_deserializer(s)).ok()
}

/// Any JSON value: `Is` when it has `T`'s shape. Reading a value this way never fails, so its
/// refusal is ours. (Names are read as strings, then matched with [`name`]: an enum read from
/// any JSON would also take `{"input": null}` for `"input"`.)
#[derive(Deserialize)]
#[serde(untagged)]
enum Loose<T> {
    Is(T),
    Not(IgnoredAny),
}

/// The value of the entry whose key was just read, checked by `check`. The refusal is raised
/// while the value is read, so the key is in its path (serde_path_to_error keeps the path where
/// an error first appears).
fn value<'de, A, T, U, F>(map: &mut A, check: F) -> Result<U, A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de>,
    F: FnOnce(Option<T>) -> Result<U, String>,
{
    struct Checked<T, F>(F, PhantomData<T>);
    impl<'de, T: Deserialize<'de>, U, F: FnOnce(Option<T>) -> Result<U, String>> DeserializeSeed<'de> for Checked<T, F> {
        type Value = U;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<U, D::Error> {
            let v = match Loose::<T>::deserialize(d)? {
                Loose::Is(v) => Some(v),
                Loose::Not(_) => None,
            };
            (self.0)(v).map_err(refusal)
        }
    }
    map.next_value_seed(Checked(check, PhantomData))
}

/// A header name, lower-cased.
fn header(h: Option<String>, wording: &str) -> Result<String, String> {
    match h {
        Some(h) if valid_header_name(&h) => Ok(h.to_ascii_lowercase()),
        _ => Err(wording.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum CountsName {
    Requests,
    RequestBytes,
    InFlight,
    LlmCost,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum CountsKey {
    RequestHeader,
    ResponseHeader,
    LlmTokens,
}

/// `budgets.<name>.counts`: `"requests"`, `"request_bytes"`, `"in_flight"`, `"llm_cost"`,
/// `{"request_header": H}`, `{"response_header": H}` or `{"llm_tokens": K}`.
impl Tagged for Counts {
    const EXPECTED: &'static str = "expected a string or an object with one key `request_header` or `response_header`";

    fn named(s: &str) -> Result<Counts, String> {
        match name(s) {
            Some(CountsName::Requests) => Ok(Counts::Requests),
            Some(CountsName::RequestBytes) => Ok(Counts::RequestBytes),
            Some(CountsName::InFlight) => Ok(Counts::InFlight),
            Some(CountsName::LlmCost) => Ok(Counts::LlmCost),
            None => Err(format!("unknown counts kind `{s}`, expected one of `requests`, `request_bytes`, `in_flight`, `llm_cost`, {{\"request_header\": H}}, {{\"response_header\": H}}, {{\"llm_tokens\": K}}")),
        }
    }

    fn keyed<'de, A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<Counts, A::Error> {
        let kind = name::<CountsKey>(key);
        if let Some(CountsKey::LlmTokens) = kind {
            let tokens = |k: Option<String>| k.as_deref().and_then(name::<TokenKind>).map(Counts::LlmTokens);
            return value(map, |k| tokens(k).ok_or_else(|| "expected `input`, `output` or `total`".to_string()));
        }
        // The header is checked before the key: `{"bogus": 5}` is refused for its value.
        value(map, |h: Option<String>| {
            let h = header(h, "expected a header name (string)")?;
            match kind {
                Some(CountsKey::RequestHeader) => Ok(Counts::RequestHeader(h)),
                Some(CountsKey::ResponseHeader) => Ok(Counts::ResponseHeader(h)),
                _ => Err(format!("unknown key `{key}`, expected `request_header` or `response_header`")),
            }
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum OnUnavailableName {
    Local,
    Deny,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum OnUnavailableKey {
    LocalShare,
}

/// `global.on_unavailable`: `"local"`, `"deny"` or `{"local_share": N}`.
impl Tagged for OnUnavailable {
    const EXPECTED: &'static str = "expected `local`, `deny` or {\"local_share\": N}";

    fn named(s: &str) -> Result<OnUnavailable, String> {
        match name(s) {
            Some(OnUnavailableName::Local) => Ok(OnUnavailable::Local),
            Some(OnUnavailableName::Deny) => Ok(OnUnavailable::Deny),
            None => Err(Self::EXPECTED.to_string()),
        }
    }

    fn keyed<'de, A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<OnUnavailable, A::Error> {
        match name(key) {
            Some(OnUnavailableKey::LocalShare) => value(map, |n: Option<u64>| match n {
                Some(n) if n >= 1 => Ok(OnUnavailable::LocalShare(n)),
                _ => Err("must be a whole number of Envoys, at least 1".to_string()),
            }),
            None => Err(refusal(Self::EXPECTED)),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ModelKey {
    Header,
    RequestBody,
}

/// The one field of the request body the model can come from.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum BodyField {
    Model,
}

/// `llm.model`: `{"header": H}` or `{"request_body": "model"}` (which `compile` allows only
/// with `llm.request_body: true`).
impl Tagged for ModelSource {
    const EXPECTED: &'static str = "expected {\"header\": H} or {\"request_body\": \"model\"}";

    fn named(_: &str) -> Result<ModelSource, String> {
        Err(Self::EXPECTED.to_string())
    }

    fn keyed<'de, A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<ModelSource, A::Error> {
        match name(key) {
            Some(ModelKey::Header) => value(map, |h: Option<String>| header(h, "expected a header name").map(ModelSource::Header)),
            Some(ModelKey::RequestBody) => value(map, |f: Option<String>| match f.as_deref().and_then(name::<BodyField>) {
                Some(BodyField::Model) => Ok(ModelSource::RequestBody),
                None => Err("expected \"model\" (the body's top-level field)".to_string()),
            }),
            None => Err(refusal(Self::EXPECTED)),
        }
    }
}

/// `budgets.<name>.window`: `"calendar_month"`, or a billing cycle object whose keys serde
/// reads (a refusal inside names its key: `budgets.b.window.cycle`).
impl<'de> Deserialize<'de> for RawWindow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawWindow, D::Error> {
        const EXPECTED: &str = "expected \"calendar_month\" or a billing cycle {\"cycle\": \"monthly\" | \"daily\", \"day\": D, \"time_zone\": Z}";
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawWindow;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawWindow, E> {
                Ok(RawWindow::Named(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawWindow, A::Error> {
                RawCycle::deserialize(MapAccessDeserializer::new(map)).map(RawWindow::Cycle)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawWindow, E> {
                Err(refusal(EXPECTED))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawWindow, E> {
                Err(refusal(EXPECTED))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawWindow, E> {
                Err(refusal(EXPECTED))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawWindow, E> {
                Err(refusal(EXPECTED))
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawWindow, E> {
                Err(refusal(EXPECTED))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<RawWindow, A::Error> {
                Err(refusal(EXPECTED))
            }
        }
        d.deserialize_any(V)
    }
}

/// `day` of a cycle or a `billing` entry: 1 to 31, or `"last"`.
impl<'de> Deserialize<'de> for RawDay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawDay, D::Error> {
        struct V;
        fn bad<E: de::Error>(got: impl fmt::Display) -> E {
            refusal(format_args!("expected a day of the month from 1 to 31 or \"last\", got {got}"))
        }
        impl<'de> Visitor<'de> for V {
            type Value = RawDay;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a day of the month from 1 to 31 or \"last\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<RawDay, E> {
                match u8::try_from(n) {
                    Ok(d @ 1..=31) => Ok(RawDay(d)),
                    _ => Err(bad(n)),
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<RawDay, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(bad(n)),
                }
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<RawDay, E> {
                Err(bad(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawDay, E> {
                match s {
                    "last" => Ok(RawDay(31)),
                    _ => Err(bad(format_args!("{s:?}"))),
                }
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<RawDay, E> {
                Err(bad(b))
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawDay, E> {
                Err(bad("null"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<RawDay, A::Error> {
                Err(bad("a list"))
            }
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<RawDay, A::Error> {
                Err(bad("an object"))
            }
        }
        d.deserialize_any(V)
    }
}
