//! Mesos's JSON input is lenient: unknown fields are ignored, a single object stands for a
//! one-element list, numbers and booleans may come as strings, an id may be `{"value": …}` or
//! a bare string. These deserializers say so once for every field of [`super::wire`].

use serde::de::value::MapAccessDeserializer;
use serde::de::{Error as _, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A list, a single element, or null/absent (empty). Read straight off the input (no
/// intermediate `Value` of the subtree: a call's lists nest five deep, and each level was
/// rebuilt once per level above it).
pub fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_any(ListVisitor(std::marker::PhantomData))
}

struct ListVisitor<T>(std::marker::PhantomData<T>);

/// One element given where a list is expected, from a scalar.
fn one<'de, T: Deserialize<'de>, E: serde::de::Error>(
    d: impl Deserializer<'de, Error = E>,
) -> Result<Vec<T>, E> {
    T::deserialize(d).map(|x| vec![x])
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list, a single element or null")
    }

    fn visit_unit<E>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }

    fn visit_none<E>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(x) = seq.next_element()? {
            out.push(x);
        }
        Ok(out)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
        one(MapAccessDeserializer::new(map))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<T>, E> {
        one(v.into_deserializer())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Vec<T>, E> {
        one(v.into_deserializer())
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Vec<T>, E> {
        one(v.into_deserializer())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Vec<T>, E> {
        one(v.into_deserializer())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Vec<T>, E> {
        one(v.into_deserializer())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Vec<T>, E> {
        one(v.into_deserializer())
    }
}

/// A number, or a string holding one; null/absent is 0.
pub fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(0.0),
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| D::Error::custom(format!("{n} is not a number"))),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| D::Error::custom(format!("'{s}' is not a number"))),
        other => Err(D::Error::custom(format!("{other} is not a number"))),
    }
}

/// An optional number (absent stays absent).
pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => f64(v).map(Some).map_err(D::Error::custom),
    }
}

/// A non-negative integer, or a string holding one; null/absent is 0.
pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| D::Error::custom(format!("{n} is not a non-negative integer"))),
        Value::String(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| D::Error::custom(format!("'{s}' is not a non-negative integer"))),
        other => Err(D::Error::custom(format!(
            "{other} is not a non-negative integer"
        ))),
    }
}

/// An integer that may be negative (nanoseconds), or a string holding one.
pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| D::Error::custom(format!("{n} is not an integer"))),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| D::Error::custom(format!("'{s}' is not an integer"))),
        other => Err(D::Error::custom(format!("{other} is not an integer"))),
    }
}

/// A boolean, or `"true"` / `"false"`; null/absent is `None`.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(b)),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        other => Err(D::Error::custom(format!("{other} is not a boolean"))),
    }
}

/// A boolean as [`opt_bool`], absent is false.
pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    opt_bool(d).map(|b| b.unwrap_or(false))
}

/// A string; a number is taken as its decimal text, null/absent is empty.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(D::Error::custom(format!("{other} is not a string"))),
    }
}

/// A Mesos id: `{"value": "x"}`, or a bare `"x"`; null/absent is empty. Read off the input
/// without building the object (every call carries several).
pub fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(IdVisitor { inner: false })
}

/// `inner`: reading the `value` of `{"value": …}` (a string or a number).
struct IdVisitor {
    inner: bool,
}

impl<'de> Visitor<'de> for IdVisitor {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.inner {
            f.write_str("an id's value, a string")
        } else {
            f.write_str("an id, {\"value\": \"…\"}")
        }
    }

    fn visit_unit<E>(self) -> Result<String, E> {
        Ok(String::new())
    }

    fn visit_none<E>(self) -> Result<String, E> {
        Ok(String::new())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        if self.inner {
            Ok(v.to_string())
        } else {
            Err(E::invalid_type(serde::de::Unexpected::Unsigned(v), &self))
        }
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        if self.inner {
            Ok(v.to_string())
        } else {
            Err(E::invalid_type(serde::de::Unexpected::Signed(v), &self))
        }
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        if self.inner {
            Ok(v.to_string())
        } else {
            Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        if self.inner {
            return Err(A::Error::custom(
                "an id's value must be a string, not an object",
            ));
        }
        let mut value = String::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "value" {
                value = map.next_value_seed(IdVisitor { inner: true })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(value)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for IdVisitor {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

/// A list of ids (each as [`id`]), or a single one.
pub fn ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_any(IdsVisitor)
}

struct IdsVisitor;

impl<'de> Visitor<'de> for IdsVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of ids, one id or null")
    }

    fn visit_unit<E>(self) -> Result<Vec<String>, E> {
        Ok(Vec::new())
    }

    fn visit_none<E>(self) -> Result<Vec<String>, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(x) = seq.next_element_seed(IdVisitor { inner: false })? {
            out.push(x);
        }
        Ok(out)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<String>, A::Error> {
        IdVisitor { inner: false }.visit_map(map).map(|x| vec![x])
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<String>, E> {
        Ok(vec![v.to_string()])
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Vec<String>, E> {
        Ok(vec![v])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Ids {
        #[serde(default, deserialize_with = "ids")]
        ids: Vec<String>,
        #[serde(default, deserialize_with = "id")]
        one: String,
        #[serde(default, deserialize_with = "list")]
        roles: Vec<String>,
    }

    fn read(json: &str) -> Result<Ids, String> {
        // Both ways a body is read: off the bytes, and from a `Value` (the protobuf path).
        let direct: Result<Ids, String> = serde_json::from_str(json).map_err(|e| e.to_string());
        let value: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let via_value: Result<Ids, String> =
            serde_json::from_value(value).map_err(|e| e.to_string());
        assert_eq!(direct.is_ok(), via_value.is_ok(), "{json}");
        if let (Ok(a), Ok(b)) = (&direct, &via_value) {
            assert_eq!(a, b, "{json}");
        }
        direct
    }

    #[test]
    fn lists_and_ids_take_every_form_mesos_clients_send() {
        let r = read(
            r#"{"ids":[{"value":"a","extra":{"x":[1]}},"b",{"value":7}],"one":{"value":"x"},"roles":"web"}"#,
        )
        .expect("reads");
        assert_eq!(r.ids, ["a", "b", "7"]);
        assert_eq!(r.one, "x");
        assert_eq!(r.roles, ["web"]);
        let r = read(r#"{"ids":{"value":"solo"},"one":"bare","roles":null}"#).expect("reads");
        assert_eq!(r.ids, ["solo"]);
        assert_eq!(r.one, "bare");
        assert!(r.roles.is_empty());
        let r = read(r#"{"one":{"value":null},"roles":["a","b"]}"#).expect("reads");
        assert_eq!(r.one, "");
        assert_eq!(r.roles, ["a", "b"]);
        assert_eq!(read(r#"{"one":{}}"#).expect("reads").one, "");
        for bad in [
            r#"{"one":{"value":{"deep":1}}}"#,
            r#"{"one":{"value":true}}"#,
            r#"{"one":5}"#,
            r#"{"one":[1]}"#,
            r#"{"roles":[{"x":1}]}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
