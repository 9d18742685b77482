//! `application/x-protobuf` bodies: Mesos's binary messages translated to and from Mesos's JSON
//! mapping, so that both content types share one adapter ([`super::wire`] reads and writes the
//! JSON).
//!
//! ```text
//!  protobuf Call ──decode (descriptors of proto/proto/mesos/v1)──▶ JSON ──▶ wire.rs ──▶ core
//!  core ──▶ wire.rs ──▶ JSON Event / Response ──encode──▶ protobuf (RecordIO record / body)
//! ```
//!
//! The mapping is Mesos's: proto field names, enums by name, `bytes` as base64, 64-bit integers
//! as JSON numbers. Decoding keeps every field the descriptors know (unknown fields are ignored,
//! as Mesos's parser does); encoding writes every JSON field the descriptors know and fails,
//! naming the field, on a value of the wrong kind — what the adapter writes is ours, so that is a
//! bug to see, not a client's error.

use std::sync::OnceLock;

use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value as Pb,
};
use serde_json::{Map, Value};

/// The scheduler API's call.
pub const SCHEDULER_CALL: &str = "mesos.v1.scheduler.Call";
/// The scheduler API's event.
pub const SCHEDULER_EVENT: &str = "mesos.v1.scheduler.Event";
/// The operator API's call.
pub const OPERATOR_CALL: &str = "mesos.v1.master.Call";
/// The operator API's response.
pub const OPERATOR_RESPONSE: &str = "mesos.v1.master.Response";

/// Deepest message nesting decoded or encoded (Mesos's messages nest fewer than 10 deep).
const MAX_DEPTH: usize = 32;

/// The media type of these bodies.
pub const MEDIA_TYPE: &str = "application/x-protobuf";

/// Why a body could not be translated, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("not a valid {message} message: {source}")]
    Decode {
        message: &'static str,
        source: prost::DecodeError,
    },
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
    #[error("no descriptor for {0}")]
    Unknown(String),
}

fn pool() -> Result<&'static DescriptorPool, ProtobufError> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(
            &include_bytes!(concat!(env!("OUT_DIR"), "/mesos_descriptors.bin"))[..],
        )
        .ok()
    })
    .as_ref()
    .ok_or_else(|| ProtobufError::Unknown("the Mesos descriptor set".into()))
}

fn descriptor(name: &str) -> Result<MessageDescriptor, ProtobufError> {
    pool()?
        .get_message_by_name(name)
        .ok_or_else(|| ProtobufError::Unknown(name.to_string()))
}

/// Decodes a `message` (one of this module's names) into Mesos's JSON mapping.
pub fn decode(message: &'static str, bytes: &[u8]) -> Result<Value, ProtobufError> {
    let desc = descriptor(message)?;
    let msg = DynamicMessage::decode(desc, bytes)
        .map_err(|source| ProtobufError::Decode { message, source })?;
    message_to_json(&msg, 0, "")
}

/// Encodes Mesos's JSON mapping of a `message` (one of this module's names).
pub fn encode(message: &str, json: &Value) -> Result<Vec<u8>, ProtobufError> {
    let desc = descriptor(message)?;
    Ok(json_to_message(desc, json, 0, "")?.encode_to_vec())
}

fn field_error(path: &str, problem: impl Into<String>) -> ProtobufError {
    ProtobufError::Field {
        field: if path.is_empty() {
            "(message)".into()
        } else {
            path.to_string()
        },
        problem: problem.into(),
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn message_to_json(msg: &DynamicMessage, depth: usize, path: &str) -> Result<Value, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(field_error(path, format!("nested deeper than {MAX_DEPTH}")));
    }
    let mut o = Map::new();
    for (field, value) in msg.fields() {
        let here = join(path, field.name());
        o.insert(
            field.name().to_string(),
            value_to_json(&field, value, depth, &here)?,
        );
    }
    Ok(Value::Object(o))
}

fn value_to_json(
    field: &FieldDescriptor,
    v: &Pb,
    depth: usize,
    path: &str,
) -> Result<Value, ProtobufError> {
    Ok(match v {
        Pb::Bool(b) => Value::Bool(*b),
        Pb::I32(n) => Value::from(*n),
        Pb::I64(n) => Value::from(*n),
        Pb::U32(n) => Value::from(*n),
        Pb::U64(n) => Value::from(*n),
        Pb::F32(n) => {
            serde_json::Number::from_f64(f64::from(*n)).map_or(Value::Null, Value::Number)
        }
        Pb::F64(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Pb::String(s) => Value::String(s.clone()),
        Pb::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Pb::EnumNumber(n) => match field.kind() {
            Kind::Enum(e) => e
                .get_value(*n)
                .map_or(Value::from(*n), |ev| Value::String(ev.name().to_string())),
            _ => Value::from(*n),
        },
        Pb::Message(m) => message_to_json(m, depth + 1, path)?,
        Pb::List(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| value_to_json(field, item, depth, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Pb::Map(_) => return Err(field_error(path, "maps are not part of these messages")),
    })
}

fn json_to_message(
    desc: MessageDescriptor,
    json: &Value,
    depth: usize,
    path: &str,
) -> Result<DynamicMessage, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(field_error(path, format!("nested deeper than {MAX_DEPTH}")));
    }
    let Value::Object(o) = json else {
        return Err(field_error(path, "expected an object"));
    };
    let mut msg = DynamicMessage::new(desc.clone());
    for (name, v) in o {
        if v.is_null() {
            continue;
        }
        let Some(field) = desc.get_field_by_name(name) else {
            // A field the descriptors do not carry is not on Mesos's wire either.
            continue;
        };
        let here = join(path, name);
        let value = if field.is_list() {
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                one => vec![one],
            };
            Pb::List(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| scalar(&field, item, depth, &format!("{here}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        } else {
            scalar(&field, v, depth, &here)?
        };
        msg.set_field(&field, value);
    }
    Ok(msg)
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn integer<T: TryFrom<i128>>(v: &Value, path: &str) -> Result<T, ProtobufError> {
    let n: Option<i128> = match v {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    n.and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| field_error(path, format!("expected an integer in range, got {v}")))
}

fn scalar(
    field: &FieldDescriptor,
    v: &Value,
    depth: usize,
    path: &str,
) -> Result<Pb, ProtobufError> {
    let wrong = |what: &str| field_error(path, format!("expected {what}, got {v}"));
    Ok(match field.kind() {
        Kind::Bool => match v {
            Value::Bool(b) => Pb::Bool(*b),
            Value::String(s) if s == "true" || s == "false" => Pb::Bool(s == "true"),
            _ => return Err(wrong("a boolean")),
        },
        Kind::Double => Pb::F64(number(v).ok_or_else(|| wrong("a number"))?),
        // A float field holds a narrower number by definition.
        #[allow(clippy::cast_possible_truncation)]
        Kind::Float => Pb::F32(number(v).ok_or_else(|| wrong("a number"))? as f32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Pb::I32(integer(v, path)?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Pb::I64(integer(v, path)?),
        Kind::Uint32 | Kind::Fixed32 => Pb::U32(integer(v, path)?),
        Kind::Uint64 | Kind::Fixed64 => Pb::U64(integer(v, path)?),
        Kind::String => match v {
            Value::String(s) => Pb::String(s.clone()),
            Value::Number(n) => Pb::String(n.to_string()),
            _ => return Err(wrong("a string")),
        },
        Kind::Bytes => match v {
            Value::String(s) => Pb::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|_| wrong("base64"))?
                    .into(),
            ),
            _ => return Err(wrong("a base64 string")),
        },
        Kind::Enum(e) => match v {
            Value::String(s) => Pb::EnumNumber(
                e.get_value_by_name(s)
                    .ok_or_else(|| wrong(&format!("a value of {}", e.name())))?
                    .number(),
            ),
            Value::Number(_) => Pb::EnumNumber(integer(v, path)?),
            _ => return Err(wrong("an enum name")),
        },
        Kind::Message(m) => Pb::Message(json_to_message(m, v, depth + 1, path)?),
    })
}

/// One RecordIO record of an encoded event: `<length>\n<bytes>`.
pub fn event_record(event: &Value) -> Result<Vec<u8>, ProtobufError> {
    Ok(super::wire::record(&encode(SCHEDULER_EVENT, event)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A SUBSCRIBE call as a Mesos client library encodes it, by hand from the field numbers:
    /// Call{type(2)=SUBSCRIBE(1), subscribe(3){framework_info(1){user(1)="u", name(2)="n",
    /// roles(12)="r", capabilities(10){type(1)=MULTI_ROLE(6)}}}, a field 99 Agora does not know}.
    const SUBSCRIBE: &[u8] = &[
        0x10, 0x01, // type = 1
        0x1a, 0x0f, // subscribe, 15 bytes
        0x0a, 0x0d, // framework_info, 13 bytes
        0x0a, 0x01, b'u', // user
        0x12, 0x01, b'n', // name
        0x62, 0x01, b'r', // roles (12 << 3 | 2)
        0x52, 0x02, 0x08, 0x06, // capabilities (10 << 3 | 2) { type = 6 }
        0x98, 0x06, 0x01, // field 99, varint 1 (99 << 3 = 792 = 0x98 0x06)
    ];

    #[test]
    fn a_hand_encoded_subscribe_decodes_into_mesos_json() {
        let v = decode(SCHEDULER_CALL, SUBSCRIBE).expect("decodes");
        assert_eq!(
            v,
            json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {
                "user": "u", "name": "n", "roles": ["r"],
                "capabilities": [{"type": "MULTI_ROLE"}]}}})
        );
    }

    #[test]
    fn an_event_encodes_to_the_bytes_mesos_clients_read() {
        let event = json!({"type": "HEARTBEAT"});
        assert_eq!(
            encode(SCHEDULER_EVENT, &event).expect("encodes"),
            vec![0x08, 0x08]
        );
        let update = json!({"type": "UPDATE", "update": {"status": {
            "task_id": {"value": "t"}, "state": "TASK_RUNNING", "uuid": "AQI=",
            "timestamp": 1.5, "source": "SOURCE_EXECUTOR"}}});
        let bytes = encode(SCHEDULER_EVENT, &update).expect("encodes");
        // type=UPDATE(4); update(5){status(1){task_id(1){"t"}, state(2)=1, timestamp(6)=1.5,
        // source(9)=2, uuid(11)=01 02}} — fields in number order, as protobuf encoders write.
        let mut status = vec![0x0a, 0x03, 0x0a, 0x01, b't', 0x10, 0x01, 0x31];
        status.extend_from_slice(&1.5f64.to_le_bytes());
        status.extend_from_slice(&[0x48, 0x02, 0x5a, 0x02, 0x01, 0x02]);
        let mut update_bytes = vec![0x0a, u8::try_from(status.len()).expect("small")];
        update_bytes.extend_from_slice(&status);
        let mut expected = vec![
            0x08,
            0x04,
            0x2a,
            u8::try_from(update_bytes.len()).expect("small"),
        ];
        expected.extend_from_slice(&update_bytes);
        assert_eq!(bytes, expected);
        assert_eq!(decode(SCHEDULER_EVENT, &bytes).expect("decodes"), update);
    }

    #[test]
    fn a_bad_value_names_its_field_and_bad_bytes_are_an_error() {
        let e = encode(SCHEDULER_EVENT, &json!({"type": "NOPE"})).expect_err("bad enum");
        assert!(e.to_string().starts_with("type:"), "{e}");
        let e = encode(
            OPERATOR_RESPONSE,
            &json!({"get_agents": {"agents": [{"active": "maybe"}]}}),
        )
        .expect_err("bad bool");
        assert!(
            e.to_string().starts_with("get_agents.agents[0].active:"),
            "{e}"
        );
        assert!(decode(SCHEDULER_CALL, &[0x1a, 0x05, 0x00]).is_err());
    }
}
