//! Reading JSON request bodies so that an error names the field (a JSON pointer), not a line and
//! column.

/// A request body that could not be read: where (a JSON pointer) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct UnreadableField {
    /// `/cpus`, `/1/cpus`, a missing `/id`; `/` for a syntax error.
    pub pointer: String,
    pub message: String,
}

/// Reads a JSON body into `T`, locating a type error at its field, where plain serde_json only
/// gives a line and column.
///
/// # Errors
/// The first field that cannot be read.
pub fn read_json<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, UnreadableField> {
    let mut de = serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| unreadable(e.path(), e.inner()))
}

/// [`read_json`] for a document already parsed (a PATCH merged into the stored one).
///
/// # Errors
/// As [`read_json`].
pub fn read_json_value<T: serde::de::DeserializeOwned>(
    json: serde_json::Value,
) -> Result<T, UnreadableField> {
    serde_path_to_error::deserialize(json).map_err(|e| unreadable(e.path(), e.inner()))
}

fn unreadable(path: &serde_path_to_error::Path, error: &serde_json::Error) -> UnreadableField {
    use serde_path_to_error::Segment;
    let message = error.to_string();
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } => pointer.push_str(&format!("/{key}")),
            Segment::Enum { variant } => pointer.push_str(&format!("/{variant}")),
            Segment::Unknown => pointer.push_str("/?"),
        }
    }
    // serde reports a missing field at the object that lacks it; name the field itself.
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        pointer.push('/');
        pointer.push_str(name);
    }
    if pointer.is_empty() {
        pointer.push('/');
    }
    UnreadableField { pointer, message }
}
