//! Mesos's JSON input is lenient: unknown fields are ignored, a single object stands for a
//! one-element list, numbers and booleans may come as strings, an id may be `{"value": …}` or
//! a bare string. These deserializers say so once for every field of [`super::wire`].

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A list, a single element, or null/absent (empty).
pub fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|v| serde_json::from_value(v).map_err(D::Error::custom))
            .collect(),
        one => serde_json::from_value(one)
            .map(|v| vec![v])
            .map_err(D::Error::custom),
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

/// A Mesos id: `{"value": "x"}`, or a bare `"x"`; null/absent is empty.
pub fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s),
        Value::Object(mut o) => match o.remove("value") {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(other) => Err(D::Error::custom(format!(
                "an id's value must be a string, not {other}"
            ))),
        },
        other => Err(D::Error::custom(format!(
            "an id must be {{\"value\": \"…\"}}, not {other}"
        ))),
    }
}

/// A list of ids (each as [`id`]), or a single one.
pub fn ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct Id(#[serde(deserialize_with = "id")] String);
    list::<D, Id>(d).map(|v| v.into_iter().map(|Id(s)| s).collect())
}
