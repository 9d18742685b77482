//! Service ports, as Marathon assigns them: every app port (`portDefinitions[i].port` on host
//! networking, `container.portMappings[i].servicePort` on the bridge) is a cluster-wide service
//! port that load balancers (marathon-lb) bind. A port of 0 is given one from the range
//! (`--service-port-range`, 10000-20000 by default); the assigned number is written into the app
//! definition, so that it is saved with the app (kept across restarts and failovers), shown by
//! `GET /v2/apps`, and freed when the app is deleted. Pure: the range and every other app are
//! passed in.
//!
//! Rules (Marathon's `assignDynamicServicePorts` and its port conflict validation):
//! - an update keeps the ports the app already had: a 0 takes back the app's previous service
//!   ports (those in the range, in order) before any new one;
//! - a requested non-zero port may lie outside the range, but no other app may hold it (422,
//!   "Requested service port 80 conflicts with a service port in app /other", at the field);
//! - new ports are the lowest free ones of the range; when none is left, 422 at the field.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::app::{App, FieldError};

/// The service port range (`--service-port-range MIN-MAX`), both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl Default for PortRange {
    /// Marathon's `--local_port_min`/`--local_port_max`: 10000-20000.
    fn default() -> Self {
        PortRange {
            min: 10000,
            max: 20000,
        }
    }
}

impl PortRange {
    pub fn contains(&self, port: u32) -> bool {
        (u32::from(self.min)..=u32::from(self.max)).contains(&port)
    }

    /// How many ports the range holds.
    pub fn len(&self) -> u32 {
        u32::from(self.max) - u32::from(self.min) + 1
    }

    /// Never: a range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;

    /// `10000-20000`: 1 ≤ MIN ≤ MAX ≤ 65535.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("'{s}' must be MIN-MAX with 1 <= MIN <= MAX <= 65535, e.g. 10000-20000");
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let min: u16 = a.trim().parse().map_err(|_| bad())?;
        let max: u16 = b.trim().parse().map_err(|_| bad())?;
        if min == 0 || min > max {
            return Err(bad());
        }
        Ok(PortRange { min, max })
    }
}

/// The field each of an app's service ports is in, with its value (0: to be assigned).
fn slots(app: &App) -> Vec<(String, u32)> {
    if app.bridged() {
        app.container
            .as_ref()
            .map(|c| {
                c.port_mappings
                    .iter()
                    .enumerate()
                    .map(|(i, pm)| {
                        (
                            format!("/container/portMappings/{i}/servicePort"),
                            pm.service_port.unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        app.port_definitions
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("/portDefinitions/{i}/port"), p.port))
            .collect()
    }
}

fn write(app: &mut App, ports: &[u32]) {
    if app.bridged() {
        if let Some(c) = app.container.as_mut() {
            for (pm, p) in c.port_mappings.iter_mut().zip(ports) {
                pm.service_port = Some(*p);
            }
        }
    } else {
        for (pd, p) in app.port_definitions.iter_mut().zip(ports) {
            pd.port = *p;
        }
    }
}

/// An app's service ports, in port index order (a 0 — never assigned — is left out).
pub fn service_ports(app: &App) -> Vec<u32> {
    slots(app)
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| *p != 0)
        .collect()
}

/// Whether the app has a port still to assign.
pub fn unassigned(app: &App) -> bool {
    slots(app).iter().any(|(_, p)| *p == 0)
}

/// Gives every 0 port of `app` a service port and checks the requested ones; `previous` is the
/// app as it is now (an update), `others` every other app of this framework.
///
/// # Errors
/// One [`FieldError`] per refused port, at its field: held by another app, given twice in the
/// app, or none left in the range.
pub fn assign<'a>(
    app: &mut App,
    previous: Option<&App>,
    others: impl IntoIterator<Item = &'a App>,
    range: PortRange,
) -> Result<(), Vec<FieldError>> {
    let slots = slots(app);
    if slots.is_empty() {
        return Ok(());
    }
    let mut held: BTreeMap<u32, &str> = BTreeMap::new();
    for other in others {
        if other.id == app.id {
            continue;
        }
        for p in service_ports(other) {
            held.entry(p).or_insert(other.id.as_str());
        }
    }
    let mut errors: Vec<FieldError> = Vec::new();
    let mut taken: BTreeSet<u32> = held.keys().copied().collect();
    for (path, p) in &slots {
        if *p == 0 {
            continue;
        }
        if let Some(owner) = held.get(p) {
            errors.push(FieldError {
                path: path.clone(),
                errors: vec![format!(
                    "Requested service port {p} conflicts with a service port in app {owner}"
                )],
            });
        } else if !taken.insert(*p) {
            errors.push(FieldError {
                path: path.clone(),
                errors: vec![format!("service port {p} is given twice")],
            });
        }
    }
    // An update keeps the ports it had: the previous ones in the range that the new definition
    // does not request itself, in order.
    let mut reusable: VecDeque<u32> = previous
        .map(service_ports)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| range.contains(*p) && !taken.contains(p))
        .collect();
    let mut next = u32::from(range.min);
    let mut ports = Vec::with_capacity(slots.len());
    for (path, p) in &slots {
        if *p != 0 {
            ports.push(*p);
            continue;
        }
        let port = match reusable.pop_front() {
            Some(p) => Some(p),
            None => {
                while next <= u32::from(range.max) && taken.contains(&next) {
                    next += 1;
                }
                (next <= u32::from(range.max)).then_some(next)
            }
        };
        match port {
            Some(port) => {
                taken.insert(port);
                ports.push(port);
            }
            None => errors.push(FieldError {
                path: path.clone(),
                errors: vec![format!(
                    "no service port is left: all {} ports of the service port range {range} are taken",
                    range.len()
                )],
            }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    write(app, &ports);
    Ok(())
}

/// [`assign`] for one change of several apps (a group update): `puts` are the new definitions,
/// `current` every app as it is, `removed` the ids the change deletes (their ports are free).
/// Each put keeps its previous ports, and no two puts share one.
///
/// # Errors
/// The index in `puts` of the first app refused, with its errors.
pub fn assign_all<'a>(
    puts: &mut [App],
    current: impl IntoIterator<Item = &'a App>,
    removed: &[String],
    range: PortRange,
) -> Result<(), (usize, Vec<FieldError>)> {
    let current: Vec<&App> = current.into_iter().collect();
    let put_ids: BTreeSet<String> = puts.iter().map(|a| a.id.clone()).collect();
    let untouched: Vec<App> = current
        .iter()
        .filter(|a| !put_ids.contains(&a.id) && !removed.contains(&a.id))
        .map(|a| (*a).clone())
        .collect();
    for i in 0..puts.len() {
        let previous = current.iter().find(|a| a.id == puts[i].id).copied();
        let (before, rest) = puts.split_at_mut(i);
        let Some((app, after)) = rest.split_first_mut() else {
            break;
        };
        let others = untouched.iter().chain(before.iter()).chain(after.iter());
        assign(app, previous, others, range).map_err(|e| (i, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(json: &str) -> App {
        let mut a: App = serde_json::from_str(json).expect("app json");
        a.normalize();
        a
    }

    fn range(min: u16, max: u16) -> PortRange {
        PortRange { min, max }
    }

    #[test]
    fn the_range_flag_is_min_dash_max() {
        assert_eq!("10000-20000".parse(), Ok(PortRange::default()));
        assert_eq!("5-5".parse(), Ok(range(5, 5)));
        for bad in [
            "",
            "10000",
            "20000-10000",
            "0-10",
            "1-70000",
            "a-b",
            "1-2-3",
        ] {
            let e = bad.parse::<PortRange>().expect_err(bad);
            assert!(e.contains("MIN-MAX"), "{bad}: {e}");
        }
    }

    #[test]
    fn zero_ports_get_the_lowest_free_ports_of_the_range_unique_across_apps() {
        let mut a = app(r#"{"id":"/a","cmd":"x","portDefinitions":[{"port":0},{"port":0}]}"#);
        assign(&mut a, None, [], range(10000, 10010)).expect("a");
        assert_eq!(service_ports(&a), [10000, 10001]);
        let mut b = app(
            r#"{"id":"/b","cmd":"x","networks":[{"mode":"container/bridge"}],
                "container":{"type":"DOCKER","docker":{"image":"i"},
                  "portMappings":[{"containerPort":80},{"containerPort":81,"servicePort":0}]}}"#,
        );
        assign(&mut b, None, [&a], range(10000, 10010)).expect("b");
        assert_eq!(service_ports(&b), [10002, 10003]);
        assert!(!unassigned(&b));
    }

    #[test]
    fn an_update_keeps_the_ports_the_app_had_at_each_index() {
        let r = range(10000, 10010);
        let mut a = app(r#"{"id":"/a","cmd":"x","portDefinitions":[{"port":0},{"port":0}]}"#);
        let other = {
            let mut o = app(r#"{"id":"/o","cmd":"x","portDefinitions":[{"port":0}]}"#);
            assign(&mut o, None, [], range(10005, 10010)).expect("o");
            o
        };
        assign(&mut a, None, [&other], r).expect("a");
        assert_eq!(service_ports(&a), [10000, 10001]);
        // The same definition again (port 0): the same ports.
        let mut again =
            app(r#"{"id":"/a","cmd":"y","portDefinitions":[{"port":0},{"port":0},{"port":0}]}"#);
        assign(&mut again, Some(&a), [&other, &a], r).expect("update");
        assert_eq!(service_ports(&again), [10000, 10001, 10002]);
        // A port the update requests itself is not given to another index.
        let mut moved =
            app(r#"{"id":"/a","cmd":"y","portDefinitions":[{"port":0},{"port":10000}]}"#);
        assign(&mut moved, Some(&again), [&other], r).expect("moved");
        assert_eq!(service_ports(&moved), [10001, 10000]);
    }

    #[test]
    fn a_port_held_by_another_app_is_refused_at_its_field_one_outside_the_range_is_fine() {
        let r = range(10000, 10010);
        let mut a = app(r#"{"id":"/a","cmd":"x","portDefinitions":[{"port":80},{"port":0}]}"#);
        assign(&mut a, None, [], r).expect("outside the range is allowed");
        assert_eq!(service_ports(&a), [80, 10000]);
        let mut b = app(r#"{"id":"/b","cmd":"x","portDefinitions":[{"port":0},{"port":80}]}"#);
        let before = b.clone();
        let e = assign(&mut b, None, [&a], r).expect_err("80 is /a's");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "/portDefinitions/1/port");
        assert_eq!(
            e[0].errors,
            ["Requested service port 80 conflicts with a service port in app /a"]
        );
        assert_eq!(b, before, "a refused app is not changed");
        let mut c = app(
            r#"{"id":"/c","cmd":"x","networks":[{"mode":"container/bridge"}],
                "container":{"type":"DOCKER","docker":{"image":"i"},
                  "portMappings":[{"containerPort":80,"servicePort":10000},{"containerPort":81,"servicePort":7},{"containerPort":82,"servicePort":7}]}}"#,
        );
        let e = assign(&mut c, None, [&a], r).expect_err("conflicts");
        let paths: Vec<&str> = e.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/container/portMappings/0/servicePort",
                "/container/portMappings/2/servicePort"
            ]
        );
        assert!(e[1].errors[0].contains("given twice"), "{e:?}");
    }

    #[test]
    fn an_exhausted_range_names_the_field() {
        let r = range(10000, 10001);
        let mut a = app(r#"{"id":"/a","cmd":"x","portDefinitions":[{"port":0},{"port":0}]}"#);
        assign(&mut a, None, [], r).expect("a");
        let mut b = app(r#"{"id":"/b","cmd":"x","portDefinitions":[{"port":12345},{"port":0}]}"#);
        let e = assign(&mut b, None, [&a], r).expect_err("exhausted");
        assert_eq!(e[0].path, "/portDefinitions/1/port");
        assert!(
            e[0].errors[0].contains("all 2 ports of the service port range 10000-10001"),
            "{e:?}"
        );
    }

    #[test]
    fn one_change_of_several_apps_gives_each_its_own_ports_and_frees_the_removed_ones() {
        let r = range(10000, 10002);
        let mut old = app(r#"{"id":"/old","cmd":"x","portDefinitions":[{"port":0},{"port":0}]}"#);
        assign(&mut old, None, [], r).expect("old");
        let mut keep = app(r#"{"id":"/keep","cmd":"x","portDefinitions":[{"port":0}]}"#);
        assign(&mut keep, None, [&old], r).expect("keep");
        assert_eq!(service_ports(&keep), [10002]);
        // /old goes, /x takes a dynamic port, /y asks for /old's first port explicitly.
        let mut puts = vec![
            app(r#"{"id":"/x","cmd":"x","portDefinitions":[{"port":0}]}"#),
            app(r#"{"id":"/y","cmd":"x","portDefinitions":[{"port":10000}]}"#),
        ];
        assign_all(&mut puts, [&old, &keep], &["/old".to_string()], r).expect("change");
        assert_eq!(service_ports(&puts[0]), [10001]);
        assert_eq!(service_ports(&puts[1]), [10000]);
        // Two apps of one change asking for the same port: the second one is refused.
        let mut clash = vec![
            app(r#"{"id":"/p","cmd":"x","portDefinitions":[{"port":80}]}"#),
            app(r#"{"id":"/q","cmd":"x","portDefinitions":[{"port":80}]}"#),
        ];
        let (i, e) = assign_all(&mut clash, [&keep], &[], r).expect_err("clash");
        assert_eq!(i, 0, "the first one already sees the second's request");
        assert!(e[0].errors[0].contains("app /q"), "{e:?}");
    }
}
