//! Bounds on what enters the master: every duration, count and string a caller sends is checked
//! here before the master keeps it or forwards it, with an error naming the field; and the
//! checked conversions (seconds → [`Duration`], `Instant + Duration`) that no value can panic.
//!
//! The bounds are generous for honest callers and small enough that `/state`, the registry and
//! the agents' conversions stay bounded whatever a framework, an operator or an agent sends.

use std::time::{Duration, Instant};

use agora_proto::v1;

use crate::error::MasterError;

/// `kill_policy.grace_period_seconds` (task, Kill, DrainAgent): at most an hour.
pub const MAX_KILL_GRACE_SECONDS: f64 = 3600.0;
/// `filters.refuse_seconds`: at most a year.
pub const MAX_REFUSE_SECONDS: f64 = 31_536_000.0;
/// Every health-check timing (grace, interval, timeout, delay): at most a day.
pub const MAX_HEALTH_SECONDS: f64 = 86_400.0;
/// `health_check.consecutive_failures`.
pub const MAX_HEALTH_FAILURES: u32 = 1000;
/// `health_check.http.statuses` entries.
pub const MAX_HEALTH_STATUSES: usize = 100;
/// Ids (task, executor) and other short names (label keys, env names).
pub const MAX_ID_BYTES: usize = 255;
/// A task's or executor's `name`, a label value, a URI, a path, an image.
pub const MAX_NAME_BYTES: usize = 4096;
/// A command: its value plus all its arguments.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Arguments of a command.
pub const MAX_ARGUMENTS: usize = 1000;
/// Environment variables of a command.
pub const MAX_ENV_VARS: usize = 1000;
/// Environment of a command: all names and values together.
pub const MAX_ENV_BYTES: usize = 256 * 1024;
/// Labels of a task.
pub const MAX_LABELS: usize = 100;
/// URIs, volumes, port mappings, docker parameters of a task.
pub const MAX_LIST_ITEMS: usize = 1000;
/// Resource entries of a task or executor, or of a quota.
pub const MAX_RESOURCES: usize = 128;
/// Ranges in one ranges resource.
pub const MAX_RANGES: usize = 1024;
/// The highest port of a `ports` range.
pub const MAX_PORT: u64 = 65_535;
/// A task's opaque `data`.
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// Of an agent's status-update `message`, the master keeps this much (the rest is cut, marked).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// A role weight.
pub const MAX_WEIGHT: f64 = 1_000_000.0;
/// Entries of one UpdateWeights call.
pub const MAX_WEIGHTS: usize = 1000;

/// `value` as a duration in seconds, between 0 and `max`; negative, NaN and infinite refused.
///
/// # Errors
/// [`MasterError::InvalidArgument`] naming `field`.
pub fn seconds(field: &str, value: f64, max: f64) -> Result<Duration, MasterError> {
    let refused =
        || MasterError::invalid(field, format!("must be between 0 and {max} (got {value})"));
    if !(value.is_finite() && (0.0..=max).contains(&value)) {
        return Err(refused());
    }
    Duration::try_from_secs_f64(value).map_err(|_| refused())
}

/// A duration of `secs` seconds clamped to `[0, cap]`, NaN as 0: for values the master only
/// reads from trusted-but-unchecked sources (an agent's report of a framework).
pub fn clamped_duration(secs: f64, cap: Duration) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).map_or(cap, |d| d.min(cap))
}

/// `now + d`, or the latest instant a year ahead can reach when that overflows (never panics).
pub fn later(now: Instant, d: Duration) -> Instant {
    const YEAR: Duration = Duration::from_secs(31_536_000);
    now.checked_add(d)
        .or_else(|| now.checked_add(YEAR))
        .unwrap_or(now)
}

/// Cuts `message` to [`MAX_MESSAGE_BYTES`] on a char boundary, marking the cut with how many
/// bytes were dropped.
pub fn bound_message(message: &mut String) {
    if message.len() <= MAX_MESSAGE_BYTES {
        return;
    }
    let total = message.len();
    let mut cut = MAX_MESSAGE_BYTES - 64;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    message.truncate(cut);
    message.push_str(&format!(" …[truncated by the master: {total} bytes]"));
}

/// Bounds an agent-sent status: its message (cut, see [`bound_message`]) and its data (dropped
/// past [`MAX_DATA_BYTES`]).
pub fn bound_status(status: &mut v1::TaskStatus) {
    bound_message(&mut status.message);
    if status.data.len() > MAX_DATA_BYTES {
        status.data.clear();
    }
    status.ip_addresses.truncate(MAX_LIST_ITEMS.min(64));
    for ip in &mut status.ip_addresses {
        if ip.len() > MAX_ID_BYTES {
            ip.clear();
        }
    }
}

/// Bounds what an agent reports of a task it runs (re-registration): its status and the sizes
/// of its TaskInfo are not re-validated (the master launched it), but the status is cut.
pub fn bound_reported_task(task: &mut v1::Task) {
    if let Some(st) = task.status.as_mut() {
        bound_status(st);
    }
}

fn too_long(field: &str, len: usize, max: usize) -> Result<(), MasterError> {
    if len > max {
        return Err(MasterError::invalid(
            field,
            format!("must be at most {max} bytes (got {len})"),
        ));
    }
    Ok(())
}

fn too_many(field: &str, len: usize, max: usize) -> Result<(), MasterError> {
    if len > max {
        return Err(MasterError::invalid(
            field,
            format!("must have at most {max} entries (got {len})"),
        ));
    }
    Ok(())
}

/// A kill policy (`field` is where it sits: `kill_policy`).
///
/// # Errors
/// [`MasterError::InvalidArgument`] naming `field.grace_period_seconds`.
pub fn kill_policy(field: &str, policy: Option<&v1::KillPolicy>) -> Result<(), MasterError> {
    if let Some(p) = policy {
        seconds(
            &format!("{field}.grace_period_seconds"),
            p.grace_period_seconds,
            MAX_KILL_GRACE_SECONDS,
        )?;
    }
    Ok(())
}

/// `filters.refuse_seconds`: `None` when absent.
///
/// # Errors
/// [`MasterError::InvalidArgument`] naming `filters.refuse_seconds`.
pub fn refuse_seconds(filters: Option<&v1::Filters>) -> Result<Option<Duration>, MasterError> {
    filters
        .and_then(|f| f.refuse_seconds)
        .map(|s| seconds("filters.refuse_seconds", s, MAX_REFUSE_SECONDS))
        .transpose()
}

/// A command's sizes.
fn command(field: &str, c: &v1::CommandInfo) -> Result<(), MasterError> {
    too_many(
        &format!("{field}.arguments"),
        c.arguments.len(),
        MAX_ARGUMENTS,
    )?;
    let size = c.value.len() + c.arguments.iter().map(String::len).sum::<usize>();
    too_long(&format!("{field}.value"), size, MAX_COMMAND_BYTES)?;
    too_many(
        &format!("{field}.environment"),
        c.environment.len(),
        MAX_ENV_VARS,
    )?;
    let mut env = 0usize;
    for (k, v) in &c.environment {
        too_long(&format!("{field}.environment key"), k.len(), MAX_ID_BYTES)?;
        env += k.len() + v.len();
    }
    too_long(&format!("{field}.environment"), env, MAX_ENV_BYTES)?;
    too_long(&format!("{field}.user"), c.user.len(), MAX_ID_BYTES)?;
    too_many(&format!("{field}.uris"), c.uris.len(), MAX_LIST_ITEMS)?;
    for (i, u) in c.uris.iter().enumerate() {
        too_long(
            &format!("{field}.uris[{i}].value"),
            u.value.len(),
            MAX_NAME_BYTES,
        )?;
        too_long(
            &format!("{field}.uris[{i}].output_file"),
            u.output_file.len(),
            MAX_NAME_BYTES,
        )?;
    }
    Ok(())
}

/// Resource entry count, ranges per entry, and `ports` ranges inside 0–65535.
///
/// # Errors
/// [`MasterError::InvalidArgument`] naming `field` or the entry.
pub fn resource_list(field: &str, list: &[v1::Resource]) -> Result<(), MasterError> {
    too_many(field, list.len(), MAX_RESOURCES)?;
    for (i, r) in list.iter().enumerate() {
        if let Some(v1::resource::Value::Ranges(ranges)) = &r.value {
            let f = format!("{field}[{i}].ranges");
            too_many(&f, ranges.range.len(), MAX_RANGES)?;
            if r.name == "ports" {
                if let Some(bad) = ranges.range.iter().find(|x| x.end > MAX_PORT) {
                    return Err(MasterError::invalid(
                        f,
                        format!("ports {}-{} go past {MAX_PORT}", bad.begin, bad.end),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn container(field: &str, c: &v1::ContainerInfo) -> Result<(), MasterError> {
    too_long(&format!("{field}.hostname"), c.hostname.len(), MAX_ID_BYTES)?;
    agora_proto::host_aliases::check(&c.host_aliases)
        .map_err(|(f, why)| MasterError::invalid(format!("{field}.{f}"), why))?;
    too_many(&format!("{field}.volumes"), c.volumes.len(), MAX_LIST_ITEMS)?;
    for (i, v) in c.volumes.iter().enumerate() {
        let f = format!("{field}.volumes[{i}]");
        too_long(
            &format!("{f}.container_path"),
            v.container_path.len(),
            MAX_NAME_BYTES,
        )?;
        too_long(&format!("{f}.host_path"), v.host_path.len(), MAX_NAME_BYTES)?;
        too_long(&format!("{f}.mode"), v.mode.len(), MAX_ID_BYTES)?;
    }
    if let Some(d) = &c.docker {
        let f = format!("{field}.docker");
        too_long(&format!("{f}.image"), d.image.len(), MAX_NAME_BYTES)?;
        too_many(
            &format!("{f}.port_mappings"),
            d.port_mappings.len(),
            MAX_LIST_ITEMS,
        )?;
        for (i, m) in d.port_mappings.iter().enumerate() {
            let p = format!("{f}.port_mappings[{i}]");
            for (name, port) in [
                ("host_port", m.host_port),
                ("container_port", m.container_port),
            ] {
                if u64::from(port) > MAX_PORT {
                    return Err(MasterError::invalid(
                        format!("{p}.{name}"),
                        format!("must be at most {MAX_PORT} (got {port})"),
                    ));
                }
            }
            too_long(&format!("{p}.protocol"), m.protocol.len(), MAX_ID_BYTES)?;
            too_long(&format!("{p}.name"), m.name.len(), MAX_ID_BYTES)?;
        }
        too_many(
            &format!("{f}.parameters"),
            d.parameters.len(),
            MAX_LIST_ITEMS,
        )?;
        for (i, p) in d.parameters.iter().enumerate() {
            too_long(
                &format!("{f}.parameters[{i}].key"),
                p.key.len(),
                MAX_ID_BYTES,
            )?;
            too_long(
                &format!("{f}.parameters[{i}].value"),
                p.value.len(),
                MAX_NAME_BYTES,
            )?;
        }
    }
    Ok(())
}

fn health_check(field: &str, h: &v1::HealthCheck) -> Result<(), MasterError> {
    for (name, value) in [
        ("grace_period_seconds", h.grace_period_seconds),
        ("interval_seconds", h.interval_seconds),
        ("timeout_seconds", h.timeout_seconds),
        ("delay_seconds", h.delay_seconds),
    ] {
        seconds(&format!("{field}.{name}"), value, MAX_HEALTH_SECONDS)?;
    }
    if h.consecutive_failures > MAX_HEALTH_FAILURES {
        return Err(MasterError::invalid(
            format!("{field}.consecutive_failures"),
            format!(
                "must be between 0 and {MAX_HEALTH_FAILURES} (got {})",
                h.consecutive_failures
            ),
        ));
    }
    let port = |name: &str, port: u32| {
        if u64::from(port) > MAX_PORT {
            Err(MasterError::invalid(
                format!("{field}.{name}"),
                format!("must be at most {MAX_PORT} (got {port})"),
            ))
        } else {
            Ok(())
        }
    };
    if let Some(http) = &h.http {
        port("http.port", http.port)?;
        too_long(
            &format!("{field}.http.path"),
            http.path.len(),
            MAX_NAME_BYTES,
        )?;
        too_long(
            &format!("{field}.http.scheme"),
            http.scheme.len(),
            MAX_ID_BYTES,
        )?;
        too_many(
            &format!("{field}.http.statuses"),
            http.statuses.len(),
            MAX_HEALTH_STATUSES,
        )?;
    }
    if let Some(tcp) = &h.tcp {
        port("tcp.port", tcp.port)?;
    }
    if let Some(c) = &h.command {
        command(&format!("{field}.command"), c)?;
    }
    Ok(())
}

/// Every bound on a TaskInfo, with the field named relative to the task (`kill_policy.…`).
///
/// # Errors
/// [`MasterError::InvalidArgument`] for the first field out of bounds.
pub fn task_info(t: &v1::TaskInfo) -> Result<(), MasterError> {
    too_long("task_id", t.task_id.len(), MAX_ID_BYTES)?;
    too_long("agent_id", t.agent_id.len(), MAX_ID_BYTES)?;
    too_long("name", t.name.len(), MAX_NAME_BYTES)?;
    too_long("data", t.data.len(), MAX_DATA_BYTES)?;
    too_many("labels", t.labels.len(), MAX_LABELS)?;
    for (k, v) in &t.labels {
        too_long("labels key", k.len(), MAX_ID_BYTES)?;
        too_long(&format!("labels[{}]", short(k)), v.len(), MAX_NAME_BYTES)?;
    }
    resource_list("resources", &t.resources)?;
    if let Some(c) = &t.command {
        command("command", c)?;
    }
    if let Some(c) = &t.container {
        container("container", c)?;
    }
    if let Some(e) = &t.executor {
        too_long("executor.executor_id", e.executor_id.len(), MAX_ID_BYTES)?;
        too_long("executor.framework_id", e.framework_id.len(), MAX_ID_BYTES)?;
        too_long("executor.name", e.name.len(), MAX_NAME_BYTES)?;
        resource_list("executor.resources", &e.resources)?;
        if let Some(c) = &e.command {
            command("executor.command", c)?;
        }
        if let Some(c) = &e.container {
            container("executor.container", c)?;
        }
    }
    if let Some(h) = &t.health_check {
        health_check("health_check", h)?;
    }
    if let Some(d) = &t.discovery {
        discovery("discovery", d)?;
    }
    kill_policy("kill_policy", t.kill_policy.as_ref())
}

/// Most roles of one framework.
pub const MAX_ROLES: usize = 100;

/// A framework's info as SUBSCRIBE and UPDATE_FRAMEWORK take it: ids, names and labels bounded,
/// at most [`MAX_ROLES`] roles.
///
/// # Errors
/// [`MasterError::InvalidArgument`] naming the `framework_info.…` field.
pub fn framework_info(f: &v1::FrameworkInfo) -> Result<(), MasterError> {
    too_long("framework_info.id", f.id.len(), MAX_ID_BYTES)?;
    for (field, len) in [
        ("framework_info.name", f.name.len()),
        ("framework_info.user", f.user.len()),
        ("framework_info.principal", f.principal.len()),
        ("framework_info.hostname", f.hostname.len()),
        ("framework_info.webui_url", f.webui_url.len()),
    ] {
        too_long(field, len, MAX_NAME_BYTES)?;
    }
    too_many("framework_info.roles", f.roles.len(), MAX_ROLES)?;
    too_many(
        "framework_info.capabilities",
        f.capabilities.len(),
        MAX_LABELS,
    )?;
    too_many("framework_info.labels", f.labels.len(), MAX_LABELS)?;
    for (k, v) in &f.labels {
        too_long("framework_info.labels key", k.len(), MAX_ID_BYTES)?;
        too_long(
            &format!("framework_info.labels[{}]", short(k)),
            v.len(),
            MAX_NAME_BYTES,
        )?;
    }
    Ok(())
}

/// Most ports of a task's discovery info.
pub const MAX_DISCOVERY_PORTS: usize = MAX_LIST_ITEMS;

fn discovery(field: &str, d: &v1::DiscoveryInfo) -> Result<(), MasterError> {
    if d.name.is_empty() && !d.ports.is_empty() {
        return Err(MasterError::invalid(
            format!("{field}.name"),
            "must not be empty when ports are given",
        ));
    }
    too_long(&format!("{field}.name"), d.name.len(), MAX_ID_BYTES)?;
    too_many(
        &format!("{field}.ports"),
        d.ports.len(),
        MAX_DISCOVERY_PORTS,
    )?;
    for (i, p) in d.ports.iter().enumerate() {
        for (name, port) in [("number", p.number), ("service_port", p.service_port)] {
            if u64::from(port) > MAX_PORT {
                return Err(MasterError::invalid(
                    format!("{field}.ports[{i}].{name}"),
                    format!("must be at most {MAX_PORT} (got {port})"),
                ));
            }
        }
        too_long(
            &format!("{field}.ports[{i}].name"),
            p.name.len(),
            MAX_ID_BYTES,
        )?;
        too_long(
            &format!("{field}.ports[{i}].protocol"),
            p.protocol.len(),
            MAX_ID_BYTES,
        )?;
    }
    too_many(&format!("{field}.labels"), d.labels.len(), MAX_LABELS)?;
    for (k, v) in &d.labels {
        too_long(&format!("{field}.labels key"), k.len(), MAX_ID_BYTES)?;
        too_long(
            &format!("{field}.labels[{}]", short(k)),
            v.len(),
            MAX_NAME_BYTES,
        )?;
    }
    Ok(())
}

/// A short, printable prefix of `s` for an error message.
pub fn short(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = s[..end]
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if end < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_aliases_are_bounded_naming_the_field() {
        let mut t = v1::TaskInfo {
            task_id: "t".into(),
            container: Some(v1::ContainerInfo {
                host_aliases: vec!["db".into(), "shop_db".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(task_info(&t).is_ok());
        if let Some(c) = t.container.as_mut() {
            c.host_aliases.push("bad name".into());
        }
        let e = task_info(&t).expect_err("a space is refused");
        assert!(
            matches!(&e, MasterError::InvalidArgument { field, .. } if field == "container.host_aliases[2]"),
            "{e}"
        );
        if let Some(c) = t.container.as_mut() {
            c.host_aliases = (0..513).map(|i| format!("s{i}")).collect();
        }
        let e = task_info(&t).expect_err("too many");
        assert!(
            matches!(&e, MasterError::InvalidArgument { field, .. } if field == "container.host_aliases"),
            "{e}"
        );
    }
}
