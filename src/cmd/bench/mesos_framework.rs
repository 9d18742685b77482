//! A simulated framework that speaks Apache Mesos's v1 scheduler HTTP API (`--api mesos`)
//! instead of gRPC, as a pymesos or mesoshttp framework does: SUBSCRIBE with a JSON body, the
//! RecordIO event stream read off the chunked answer, and each ACCEPT, DECLINE, SUPPRESS and
//! ACKNOWLEDGE as its own POST with the `Mesos-Stream-Id` header, at most [`CONNECTIONS`] in
//! flight on kept-alive connections. It launches the same tasks as
//! the gRPC one, so that the two paths' figures compare.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use agora_proto::v1;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::counters::Shared;
use super::frameworks::{claim, record_update};

/// Seconds an offer declined after the budget is spent stays away from this framework.
const REFUSE_WHEN_DONE: f64 = 3600.0;

/// Calls one framework has in flight at most, each on a kept-alive connection of its own. A Mesos
/// client library makes its calls over one connection (pymesos) or a few; without a bound, a
/// burst of accepts and acknowledgements opened a connection per call and overflowed the
/// master's listen queue (SYNs dropped and retried after a second).
const CONNECTIONS: usize = 16;

fn scalar_of(offer: &Value, name: &str) -> f64 {
    offer["resources"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter(|r| r["name"] == name)
                .filter_map(|r| r["scalar"]["value"].as_f64())
                .sum()
        })
        .unwrap_or(0.0)
}

/// POSTs one call; a non-202 answer is an error naming the status and Mesos's message.
async fn post(caller: &Caller, body: Value) -> anyhow::Result<()> {
    // The URL parsed and the headers built once per framework, not once per call.
    let r = caller
        .client
        .post(caller.url.clone())
        .headers(caller.headers.clone())
        .body(serde_json::to_vec(&body)?)
        .send()
        .await?;
    if r.status() != reqwest::StatusCode::ACCEPTED {
        let status = r.status();
        anyhow::bail!("{status}: {}", r.text().await.unwrap_or_default());
    }
    Ok(())
}

/// Sends a call from a task of its own, counting a failure unless the run is stopping.
#[derive(Clone)]
struct Caller {
    client: reqwest::Client,
    url: reqwest::Url,
    /// `Content-Type` and `Mesos-Stream-Id`.
    headers: reqwest::header::HeaderMap,
    /// [`CONNECTIONS`] permits.
    in_flight: Arc<tokio::sync::Semaphore>,
}

fn spawn_call(
    caller: &Caller,
    body: Value,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
    what: &'static str,
) -> tokio::task::JoinHandle<bool> {
    let caller = caller.clone();
    let (shared, stop) = (shared.clone(), stop.clone());
    tokio::spawn(async move {
        let Ok(_permit) = caller.in_flight.acquire().await else {
            return false;
        };
        match post(&caller, body).await {
            Ok(()) => {
                if what == "acknowledge" {
                    shared.acks_sent.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
            Err(_) if *stop.borrow() || shared.killed() => false,
            Err(e) => {
                if what == "accept" {
                    shared.accept_errors.fetch_add(1, Ordering::Relaxed);
                }
                shared.error(format!("{what}: {e:#}"));
                false
            }
        }
    })
}

pub(crate) async fn run_mesos_framework(
    f: usize,
    address: String,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()?;
    let url: Arc<str> = format!("http://{address}/api/v1/scheduler").into();
    let subscribe = json!({
        "type": "SUBSCRIBE",
        "subscribe": { "framework_info": {
            "user": "bench", "name": format!("bench-{f}"), "roles": ["bench"],
            "capabilities": [{ "type": "MULTI_ROLE" }], "failover_timeout": 0,
        }},
    });
    let mut events = client
        .post(&*url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(subscribe.to_string())
        .send()
        .await?;
    if events.status() != reqwest::StatusCode::OK {
        anyhow::bail!("SUBSCRIBE answered {}", events.status());
    }
    let stream_id: Arc<str> = events
        .headers()
        .get("mesos-stream-id")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow::anyhow!("SUBSCRIBE answered without a Mesos-Stream-Id"))?
        .into();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    headers.insert("mesos-stream-id", stream_id.parse()?);
    let caller = Caller {
        client: client.clone(),
        url: reqwest::Url::parse(&url)?,
        headers,
        in_flight: Arc::new(tokio::sync::Semaphore::new(CONNECTIONS)),
    };
    let mut framework_id = String::new();
    let mut suppressed = false;
    // The stream's bytes; those before `read` are parsed. Records are read in place and the
    // parsed front is dropped once per chunk (a chunk often holds many records: moving the rest
    // down after each one was the driver's largest cost in a profile).
    let mut buf: Vec<u8> = Vec::new();
    let mut read = 0;
    let args = &shared.args;
    loop {
        // One RecordIO record: `<length>\n<json>`.
        let mut record: Value = loop {
            let rest = &buf[read..];
            if let Some(nl) = rest.iter().position(|b| *b == b'\n') {
                let len: usize = std::str::from_utf8(&rest[..nl])?.trim().parse()?;
                if rest.len() >= nl + 1 + len {
                    read += nl + 1 + len;
                    break serde_json::from_slice(&rest[nl + 1..nl + 1 + len])?;
                }
            }
            buf.drain(..read);
            read = 0;
            let chunk = tokio::select! {
                c = events.chunk() => c?,
                _ = stop.changed() => return Ok(()),
            };
            let Some(chunk) = chunk else {
                anyhow::bail!("the master closed the event stream")
            };
            buf.extend_from_slice(&chunk);
        };
        match record["type"].as_str().unwrap_or("") {
            "SUBSCRIBED" => {
                framework_id = record["subscribed"]["framework_id"]["value"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
            }
            "OFFERS" => {
                let offers = match record["offers"]["offers"].take() {
                    Value::Array(offers) => offers,
                    _ => Vec::new(),
                };
                shared.offers.fetch_add(offers.len(), Ordering::Relaxed);
                let mut declined = Vec::new();
                for offer in offers {
                    let fit = ((scalar_of(&offer, "cpus") / args.task_cpus + 1e-9).floor())
                        .min((scalar_of(&offer, "mem") / args.task_mem + 1e-9).floor())
                        .max(0.0) as usize;
                    let ids = claim(&shared, fit.min(args.tasks_per_offer.max(1)));
                    if ids.is_empty() {
                        declined.push(offer["id"].clone());
                        continue;
                    }
                    let role = offer["allocation_info"]["role"].clone();
                    let scalar = |name: &str, value: f64| {
                        json!({"name": name, "type": "SCALAR", "scalar": {"value": value},
                               "allocation_info": {"role": role}})
                    };
                    let tasks: Vec<Value> = ids
                        .clone()
                        .map(|n| {
                            json!({
                                "name": format!("bench-{n}"),
                                "task_id": {"value": format!("bench-{n}")},
                                "agent_id": offer["agent_id"],
                                "resources": [scalar("cpus", args.task_cpus), scalar("mem", args.task_mem)],
                                "command": {"value": "true"},
                            })
                        })
                        .collect();
                    let accept = json!({
                        "type": "ACCEPT", "framework_id": {"value": framework_id},
                        "accept": {"offer_ids": [offer["id"]],
                                   "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}]},
                    });
                    let caller = caller.clone();
                    let (shared, stop) = (shared.clone(), stop.clone());
                    tokio::spawn(async move {
                        // --launch-rate: hold the offer until this batch's turn comes.
                        if let Some(rate) = shared.args.launch_rate.filter(|r| *r > 0.0) {
                            let t0 = *shared.pace_start.get_or_init(tokio::time::Instant::now);
                            let due =
                                t0 + std::time::Duration::from_secs_f64(ids.start as f64 / rate);
                            tokio::time::sleep_until(due).await;
                        }
                        let at = shared.since_start_ns();
                        for n in ids {
                            shared.accept_ns[n].store(at, Ordering::Relaxed);
                        }
                        let _ = spawn_call(&caller, accept, &shared, &stop, "accept").await;
                    });
                }
                if !declined.is_empty() && !suppressed {
                    // Nothing left to launch: stop the offers, as a finished scheduler should.
                    suppressed = true;
                    let call = json!({"type": "SUPPRESS", "framework_id": {"value": framework_id}});
                    spawn_call(&caller, call, &shared, &stop, "suppress");
                }
                if !declined.is_empty() {
                    let call = json!({
                        "type": "DECLINE", "framework_id": {"value": framework_id},
                        "decline": {"offer_ids": declined,
                                    "filters": {"refuse_seconds": REFUSE_WHEN_DONE}},
                    });
                    spawn_call(&caller, call, &shared, &stop, "decline");
                }
            }
            "UPDATE" => {
                let st = &record["update"]["status"];
                let task_id = st["task_id"]["value"].as_str().unwrap_or("");
                let state = st["state"]
                    .as_str()
                    .and_then(v1::TaskState::from_str_name)
                    .unwrap_or(v1::TaskState::TaskUnknown);
                record_update(
                    &shared,
                    task_id,
                    state,
                    st["message"].as_str().unwrap_or(""),
                );
                if let Some(uuid) = st.get("uuid") {
                    shared.acks_wanted.fetch_add(1, Ordering::Relaxed);
                    let ack = json!({
                        "type": "ACKNOWLEDGE", "framework_id": {"value": framework_id},
                        "acknowledge": {"agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": uuid},
                    });
                    spawn_call(&caller, ack, &shared, &stop, "acknowledge");
                }
            }
            "ERROR" => anyhow::bail!("the master sent ERROR: {}", record["error"]["message"]),
            _ => {}
        }
    }
}
