//! `deploy/docker-compose.yml` end to end: the images are built from this test's `agora` binary by
//! `deploy/build-images.sh` (FROM scratch, no registry), the cluster (ZooKeeper, three masters,
//! two agents, services) comes up under a project name of its own with its ports published on
//! free loopback ports, an app runs two native tasks, and the leading master's container is
//! killed: a new leader must show both agents and the same two tasks. `down -v` runs when the
//! test ends, passed or failed, so no container, network or volume is left behind (the images are
//! kept, tagged `agora-e2e:local` and `agora-e2e-zookeeper:local`, so a later run reuses layers).
//!
//! Skipped, with the reason printed, only when the `docker` client or compose is not installed
//! (`scripts/test` installs both); an installed client with no engine is a failure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{eventually, free_port};

const AGORA_IMAGE: &str = "agora-e2e:local";
const ZK_IMAGE: &str = "agora-e2e-zookeeper:local";
const APP: &str = "/compose/sleeper";

/// How compose is invoked here: the v2 plugin (`docker compose`) or Debian's `docker-compose`.
fn compose_program() -> Option<Vec<String>> {
    let works = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works("docker", &["compose", "version"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else if works("docker-compose", &["version"]) {
        Some(vec!["docker-compose".into()])
    } else {
        None
    }
}

/// One compose project: every command names it, and dropping it takes the project down.
struct Project {
    program: Vec<String>,
    name: String,
    file: PathBuf,
    env: Vec<(String, String)>,
}

impl Project {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program[0]);
        c.args(&self.program[1..])
            .arg("-p")
            .arg(&self.name)
            .arg("-f")
            .arg(&self.file)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("compose {args:?} did not start: {e}"));
        assert!(
            out.status.success(),
            "compose {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(out) = self
                .command(&["logs", "--no-color", "--tail", "40"])
                .output()
            {
                eprintln!(
                    "---- compose logs ----\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        let task_cgroups = self.task_cgroups();
        match self
            .command(&["down", "-v", "--remove-orphans", "--timeout", "2"])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "compose down -v for {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("compose down -v for {} did not start: {e}", self.name),
        }
        // The tasks died with their agents' containers; their cgroups and the agents' parents
        // (created in the host's hierarchies, bound into the agents) are empty now and would
        // otherwise stay behind (containers first, then their parent). Empty cgroups can take a
        // moment to become removable after their last process dies.
        for dir in task_cgroups {
            for _ in 0..20 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Project {
    /// The cgroup directories the agents made in the host's hierarchies (v1: every hierarchy;
    /// v2: the unified one): for each agent its parent (`agora/<id>`, in its `meta/cgroup-parent`)
    /// and, listed before it, the native containers checkpointed under its `meta/containers/`.
    fn task_cgroups(&self) -> Vec<PathBuf> {
        let exec = |agent: &str, args: &[&str]| -> String {
            let mut all = vec!["exec", "-T", agent];
            all.extend_from_slice(args);
            self.command(&all)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let root = Path::new("/sys/fs/cgroup");
        let mut hierarchies = vec![root.to_path_buf()];
        if let Ok(entries) = std::fs::read_dir(root) {
            hierarchies.extend(entries.flatten().map(|e| e.path()));
        }
        let mut dirs = Vec::new();
        for agent in ["agent1", "agent2"] {
            let parent = exec(agent, &["cat", "/var/lib/agora/agent/meta/cgroup-parent"]);
            let parent = parent.trim();
            let valid = |s: &str| {
                !s.is_empty()
                    && s.split('/').all(|c| {
                        !c.is_empty()
                            && c != ".."
                            && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                    })
            };
            if !valid(parent) {
                continue;
            }
            let ids = exec(agent, &["ls", "/var/lib/agora/agent/meta/containers"]);
            for h in &hierarchies {
                for id in ids.split_whitespace().filter(|id| valid(id)) {
                    dirs.push(h.join(parent).join(id));
                }
                dirs.push(h.join(parent));
            }
        }
        dirs.into_iter().filter(|d| d.is_dir()).collect()
    }
}

/// The leading master among `ports`: the one whose `/state` answers 200 (standbys answer 307 to
/// the leader's compose name, which the host cannot resolve, or 503 before an election).
async fn leader_state(client: &reqwest::Client, ports: &[u16]) -> Option<(u16, Value)> {
    for &port in ports {
        let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/state"))
            .send()
            .await
        else {
            continue;
        };
        if r.status() == 200 {
            return Some((port, r.json().await.ok()?));
        }
    }
    None
}

fn active_agents(state: &Value) -> BTreeSet<String> {
    state["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["active"] == true)
        .filter_map(|a| a["hostname"].as_str().map(str::to_string))
        .collect()
}

fn running_tasks(state: &Value) -> BTreeSet<String> {
    state["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect()
}

fn build_images(root: &Path) {
    let started = Instant::now();
    let out = Command::new(root.join("deploy/build-images.sh"))
        .arg(env!("CARGO_BIN_EXE_agora"))
        .env("AGORA_IMAGE", AGORA_IMAGE)
        .env("AGORA_ZK_IMAGE", ZK_IMAGE)
        .output()
        .expect("deploy/build-images.sh starts");
    assert!(
        out.status.success(),
        "deploy/build-images.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("images built in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_cluster_runs_an_app_and_survives_losing_its_leading_master() {
    if Command::new("docker").arg("--version").output().is_err() {
        eprintln!("SKIPPED: the docker client is not installed (scripts/test installs docker.io)");
        return;
    }
    let Some(program) = compose_program() else {
        eprintln!("SKIPPED: neither `docker compose` nor `docker-compose` is installed (scripts/test installs docker-compose)");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    build_images(root);

    let masters = [free_port(), free_port(), free_port()];
    let services_port = free_port();
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        ^ u128::from(std::process::id());
    let project = Project {
        program,
        name: format!("agora-e2e-{:x}", unique & 0xffff_ffff_ffff),
        file: root.join("deploy/docker-compose.yml"),
        env: vec![
            ("AGORA_IMAGE".into(), AGORA_IMAGE.into()),
            ("AGORA_ZK_IMAGE".into(), ZK_IMAGE.into()),
            ("AGORA_MASTER1_PORT".into(), masters[0].to_string()),
            ("AGORA_MASTER2_PORT".into(), masters[1].to_string()),
            ("AGORA_MASTER3_PORT".into(), masters[2].to_string()),
            ("AGORA_SERVICES_PORT".into(), services_port.to_string()),
        ],
    };
    let started = Instant::now();
    project.run(&["up", "-d"]);
    eprintln!("compose up in {:?}", started.elapsed());

    // Standbys answer with a redirect to a name only the compose network resolves: look at the
    // status, do not follow it.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    let both = BTreeSet::from(["agent1".to_string(), "agent2".to_string()]);
    let (leader, _) = eventually(
        "a leading master with agent1 and agent2",
        Duration::from_secs(60),
        || async {
            let (port, state) = leader_state(&client, &masters).await?;
            (active_agents(&state) == both).then_some((port, state))
        },
    )
    .await;
    eprintln!(
        "leader on port {leader} with both agents after {:?}",
        started.elapsed()
    );

    // The services framework may still be subscribing: retry the create until it is accepted.
    let services = format!("http://127.0.0.1:{services_port}");
    let app = json!({"id": APP, "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "instances": 2});
    eventually(
        "the services API to accept the app",
        Duration::from_secs(30),
        || async {
            let r = client
                .post(format!("{services}/v2/apps"))
                .json(&app)
                .send()
                .await
                .ok()?;
            (r.status() == 201).then_some(())
        },
    )
    .await;
    let tasks = eventually(
        "two running tasks on the leader",
        Duration::from_secs(40),
        || async {
            let (_, state) = leader_state(&client, &masters).await?;
            let tasks = running_tasks(&state);
            (tasks.len() == 2).then_some(tasks)
        },
    )
    .await;
    eprintln!("2 tasks running after {:?}", started.elapsed());

    let leader_service = match masters.iter().position(|p| *p == leader) {
        Some(0) => "master1",
        Some(1) => "master2",
        _ => "master3",
    };
    let killed = Instant::now();
    project.run(&["kill", "-s", "SIGKILL", leader_service]);

    // A new leader (another container: the killed one stays down) sees both agents re-register
    // with the very same tasks: none lost, none relaunched.
    let (new_leader, _) = eventually(
        "a new leader with both agents and the same two running tasks",
        Duration::from_secs(60),
        || async {
            let (port, state) = leader_state(&client, &masters).await?;
            (port != leader && active_agents(&state) == both && running_tasks(&state) == tasks)
                .then_some((port, state))
        },
    )
    .await;
    eprintln!(
        "{leader_service} killed; new leader on port {new_leader} with both agents and the tasks after {:?}",
        killed.elapsed()
    );

    // The services framework follows the new leader and still counts the app's two tasks.
    eventually(
        "the services API to report the app's two tasks running",
        Duration::from_secs(30),
        || async {
            let r = client
                .get(format!("{services}/v2/apps{APP}"))
                .send()
                .await
                .ok()?;
            let body: Value = r.json().await.ok()?;
            let ids: BTreeSet<String> = body["app"]["tasks"]
                .as_array()?
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect();
            (ids == tasks).then_some(())
        },
    )
    .await;
    eprintln!("whole test body took {:?}", started.elapsed());
}
