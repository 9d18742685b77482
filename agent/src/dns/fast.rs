//! The UDP fast path: replies made with hickory-proto once per table change, sent with only the
//! query's own id, flags and question put in.
//!
//! For each name of the zone and each query type it answers (A, SRV, ANY, and SOA at the apex), a
//! whole reply is encoded once (hickory-proto's encoder, name compression on) for the name in
//! lower case. A query is decoded with hickory-proto (header, question, an optional OPT record);
//! when its question is one of those names (compared without case, class IN) the reply is: a
//! header made from the query's (id, RD, CD copied, as `Header::response_from_request` does) with
//! the prepared counts and code, then the query's own question bytes (so the asker's case comes
//! back, and the prepared answers' compression pointers to the question name read it), then the
//! prepared bytes after the question, then an OPT record when the query had one. Unknown names
//! under the domain get NXDOMAIN and known names without records of the type NODATA, both with
//! the zone's SOA encoded without compression (so it can follow any question). Anything else —
//! names outside the domain, other opcodes or classes, EDNS versions other than 0, a question
//! that is not plain labels, a reply larger than the asker can take — is left to the
//! hickory-server handler (`None`).
//!
//! Pure: bytes in, bytes out, no I/O.

use std::collections::HashMap;
use std::sync::Arc;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

/// Largest UDP reply to a query without EDNS (RFC 1035).
pub const PLAIN_UDP_MAX: usize = 512;
/// The UDP payload size this server advertises in its OPT records, and the most it sends to an
/// EDNS asker (the DNS flag day 2020 figure).
pub const EDNS_UDP_MAX: u16 = 1232;

/// One reply, but for the query's own id, flags and question.
#[derive(Debug, Default)]
struct Wire {
    /// Counts, code and flags (id, RD and CD are the query's).
    header: Header,
    /// The length of the question this reply was encoded after, when the bytes after it may point
    /// into it (the asker's question must then be as long: same labels, only case may differ).
    question_len: Option<usize>,
    /// Everything after the question.
    body: Vec<u8>,
}

/// The prepared replies of one name.
#[derive(Debug, Default)]
struct Entry {
    a: Option<Arc<Wire>>,
    srv: Option<Arc<Wire>>,
    any: Option<Arc<Wire>>,
    soa: Option<Arc<Wire>>,
}

/// What a fast reply said (for the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Records of the name.
    Answer,
    /// The name exists but has no records of that type.
    NoData,
    /// The name does not exist under the domain.
    NxDomain,
}

/// The records of one name, lower case, as the zone prepared them.
pub struct NameRecords<'a> {
    pub name: &'a str,
    pub a: &'a [Record],
    pub srv: &'a [Record],
    pub srv_additionals: &'a [Record],
}

/// All prepared replies of one zone snapshot (the default answers nothing).
#[derive(Debug, Default)]
pub struct Replies {
    names: HashMap<Name, Entry>,
    /// `None`: no zone, every query goes to the handler.
    domain: Option<Name>,
    nxdomain: Wire,
    nodata: Wire,
    /// OPT record bytes, without and with the DO bit.
    opt: [Vec<u8>; 2],
}

fn response_header(forward: bool, code: ResponseCode) -> Header {
    let mut h = Header::new();
    h.set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_authoritative(true)
        .set_recursion_available(forward)
        .set_response_code(code);
    h
}

/// A whole reply for `name`/`qtype` encoded once, split after its question.
fn encode(
    name: &Name,
    qtype: RecordType,
    answers: &[Record],
    additionals: &[Record],
    forward: bool,
) -> Option<Arc<Wire>> {
    let mut m = Message::new();
    m.set_header(response_header(forward, ResponseCode::NoError));
    m.add_query(Query::query(name.clone(), qtype));
    m.add_answers(answers.iter().cloned());
    m.add_additionals(additionals.iter().cloned());
    let bytes = m.to_vec().ok()?;
    let mut d = BinDecoder::new(&bytes);
    let header = Header::read(&mut d).ok()?;
    let start = d.index();
    Query::read(&mut d).ok()?;
    let end = d.index();
    Some(Arc::new(Wire {
        header,
        question_len: Some(end - start),
        body: bytes.get(end..)?.to_vec(),
    }))
}

/// A negative reply: `code`, the SOA in the authority section, encoded without compression.
fn negative(soa: &Record, forward: bool, code: ResponseCode) -> Wire {
    let mut body = Vec::new();
    let mut e = BinEncoder::new(&mut body);
    e.set_canonical_names(true);
    let ok = soa.emit(&mut e).is_ok();
    let mut header = response_header(forward, code);
    header.set_name_server_count(u16::from(ok));
    if !ok {
        body.clear();
    }
    Wire {
        header,
        question_len: None,
        body,
    }
}

fn opt_bytes(dnssec_ok: bool) -> Vec<u8> {
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_UDP_MAX).set_version(0);
    edns.set_dnssec_ok(dnssec_ok);
    let mut out = Vec::new();
    let mut e = BinEncoder::new(&mut out);
    if Record::from(&edns).emit(&mut e).is_err() {
        out.clear();
    }
    out
}

impl Replies {
    /// The replies of `names` under `domain` (whose SOA is `soa`); `forward` sets RA.
    pub fn build<'a>(
        names: impl Iterator<Item = NameRecords<'a>>,
        domain: &Name,
        soa: &Record,
        forward: bool,
    ) -> Replies {
        let mut map: HashMap<Name, Entry> = HashMap::new();
        for n in names {
            let Ok(name) = Name::from_ascii(n.name) else {
                continue;
            };
            let mut entry = Entry::default();
            if !n.a.is_empty() {
                entry.a = encode(&name, RecordType::A, n.a, &[], forward);
            }
            if !n.srv.is_empty() {
                entry.srv = encode(&name, RecordType::SRV, n.srv, n.srv_additionals, forward);
            }
            // ANY: A and SRV together; a name with only one kind shares that reply (the query
            // type sits in the question, which is the asker's).
            entry.any = match (&entry.a, &entry.srv) {
                (Some(_), Some(_)) => {
                    let both: Vec<Record> = n.a.iter().chain(n.srv).cloned().collect();
                    encode(&name, RecordType::ANY, &both, n.srv_additionals, forward)
                }
                (Some(a), None) => Some(a.clone()),
                (None, Some(s)) => Some(s.clone()),
                (None, None) => None,
            };
            map.insert(name, entry);
        }
        let apex = map.entry(domain.clone()).or_default();
        apex.soa = encode(
            domain,
            RecordType::SOA,
            std::slice::from_ref(soa),
            &[],
            forward,
        );
        Replies {
            names: map,
            domain: Some(domain.clone()),
            nxdomain: negative(soa, forward, ResponseCode::NXDomain),
            nodata: negative(soa, forward, ResponseCode::NoError),
            opt: [opt_bytes(false), opt_bytes(true)],
        }
    }

    /// How many names have prepared replies.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The reply to `query` in `out` (cleared first), or `None` when the hickory-server handler
    /// must answer it.
    pub fn reply(&self, query: &[u8], out: &mut Vec<u8>) -> Option<Outcome> {
        let mut d = BinDecoder::new(query);
        let h = Header::read(&mut d).ok()?;
        if h.message_type() != MessageType::Query
            || h.op_code() != OpCode::Query
            || h.truncated()
            || h.query_count() != 1
            || h.answer_count() != 0
            || h.name_server_count() != 0
            || h.additional_count() > 1
        {
            return None;
        }
        let q_start = d.index();
        let q = Query::read(&mut d).ok()?;
        let q_end = d.index();
        if q.query_class() != DNSClass::IN {
            return None;
        }
        // EDNS: version 0 only; the asker's payload size bounds the reply.
        let (limit, opt) = if h.additional_count() == 1 {
            let r = Record::read(&mut d).ok()?;
            if r.record_type() != RecordType::OPT {
                return None;
            }
            let edns = Edns::from(&r);
            if edns.version() != 0 {
                return None;
            }
            let limit = edns.max_payload().clamp(PLAIN_UDP_MAX as u16, EDNS_UDP_MAX);
            let opt = &self.opt[usize::from(edns.flags().dnssec_ok)];
            (usize::from(limit), Some(opt))
        } else {
            (PLAIN_UDP_MAX, None)
        };
        let name = q.name();
        let (wire, outcome) = match self.names.get(name) {
            Some(entry) => {
                let slot = match q.query_type() {
                    RecordType::A => &entry.a,
                    RecordType::SRV => &entry.srv,
                    RecordType::ANY => &entry.any,
                    RecordType::SOA => &entry.soa,
                    _ => &None,
                };
                match slot {
                    Some(w) => (w.as_ref(), Outcome::Answer),
                    None => (&self.nodata, Outcome::NoData),
                }
            }
            None if self.domain.as_ref().is_some_and(|d| d.zone_of(name)) => {
                (&self.nxdomain, Outcome::NxDomain)
            }
            None => return None,
        };
        let question = query.get(q_start..q_end)?;
        // Plain labels only (a compression pointer in a question could only point into the
        // header, which the reply's differs from): the name's own length, type and class.
        let plain_len = name.iter().map(|l| l.len() + 1).sum::<usize>() + 1 + 4;
        if question.len() != plain_len || wire.question_len.is_some_and(|l| l != plain_len) {
            return None;
        }
        let opt = opt.filter(|o| !o.is_empty());
        let size = q_start + question.len() + wire.body.len() + opt.map_or(0, |o| o.len());
        if size > limit {
            return None;
        }
        let mut header = wire.header;
        header
            .set_id(h.id())
            .set_recursion_desired(h.recursion_desired())
            .set_checking_disabled(h.checking_disabled())
            .set_query_count(1);
        if opt.is_some() {
            header.set_additional_count(header.additional_count().checked_add(1)?);
        }
        out.clear();
        header.emit(&mut BinEncoder::new(out)).ok()?;
        out.extend_from_slice(question);
        out.extend_from_slice(&wire.body);
        if let Some(o) = opt {
            out.extend_from_slice(o);
        }
        Some(outcome)
    }
}
