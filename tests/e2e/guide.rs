//! docs/deploy.md, run: the guide's shell blocks are executed in order on three "hosts" of this
//! machine, so the guide cannot drift from the binary, the shipped units or their flags.
//!
//! Every ```sh block of the guide carries an annotation on the line before it:
//! `<!-- guide: on=m1,m2,m3 retry=60 -->` runs it on those hosts (once each, in that order;
//! `retry` reruns it until it succeeds within that many seconds, for checks that wait on the
//! cluster), `<!-- guide: skip REASON -->` does not run it. A block without one fails the test.
//!
//! A host is a mount namespace (tests/guide/host) in which `/etc` (a copy of this machine's, its
//! `/etc/hosts` naming the hosts), `/usr/local/bin` and `/var/lib/agora` are the host's own
//! directories under a temporary directory, so the guide's paths are used as written; its home
//! (the working directory) has `deploy/` and `examples/` from this checkout and
//! `target/release/agora` = the binary under test. `systemctl`, `journalctl`, `ssh` and `scp` are
//! the small stand-ins in tests/guide/bin (units run as their ExecStart, in the background).
//!
//! The substitutions, all of them: on the blocks' text, `zk1:2181,zk2:2181,zk3:2181/` (the
//! ensemble) becomes `$AGORA_TEST_ZK/guide<unique>-` and `NAME:PORT` (PORT one of 5050, 5051,
//! 8080, 8090; NAME a host's name) becomes `NAME:<that host's free port>`; in the units, those
//! four ports become the host's, `%H` its first name (as `%H` is the machine's hostname: the
//! masters' certificates carry it, so `https://m1:…` verifies); two flags are added because several instances
//! share one machine: the master's `--port` (the guide leaves the default 5050), the agent's
//! `--port` and `--dns-port 0`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::free_port;

/// The hosts: their number (address 127.0.0.N) and the names the guide gives them.
const HOSTS: &[(u8, &[&str])] = &[
    (1, &["m1", "svc1", "batch1"]),
    (2, &["m2", "svc2", "batch2", "w1"]),
    (3, &["m3", "w2"]),
];

/// The well-known ports the guide and the units use; each host gets free ones instead.
const PORTS: &[u16] = &[5050, 5051, 8080, 8090];

/// How long one run of a block may take.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq)]
enum How {
    Run { on: Vec<String>, retry: Duration },
    Skip(String),
}

#[derive(Debug, Clone)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    text: String,
    how: How,
}

/// The shell blocks of a markdown text with their annotations.
///
/// # Errors
/// Every block without a usable annotation, by line.
fn blocks(markdown: &str) -> Result<Vec<Block>, Vec<String>> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_start();
        let indent = lines[i].len() - fence.len();
        if !(fence == "```sh" || fence == "```bash" || fence == "```shell") {
            i += 1;
            continue;
        }
        let start = i;
        let mut text = String::new();
        i += 1;
        while i < lines.len() && lines[i].trim() != "```" {
            let l = lines[i];
            text.push_str(
                l.get(indent.min(l.len() - l.trim_start().len())..)
                    .unwrap_or(l),
            );
            text.push('\n');
            i += 1;
        }
        i += 1;
        let annotation = lines[..start]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim())
            .and_then(|l| l.strip_prefix("<!-- guide:"))
            .and_then(|l| l.strip_suffix("-->"))
            .map(str::trim);
        match annotation.map(parse_annotation) {
            Some(Ok(how)) => out.push(Block {
                line: start + 1,
                text,
                how,
            }),
            Some(Err(e)) => errors.push(format!("line {}: {e}", start + 1)),
            None => errors.push(format!(
                "line {}: a shell block without a `<!-- guide: on=HOSTS -->` or `<!-- guide: skip REASON -->` line before it",
                start + 1
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn parse_annotation(a: &str) -> Result<How, String> {
    if let Some(reason) = a.strip_prefix("skip") {
        let reason = reason.trim();
        return if reason.is_empty() {
            Err("`skip` needs a reason".into())
        } else {
            Ok(How::Skip(reason.to_string()))
        };
    }
    let mut on = Vec::new();
    let mut retry = Duration::ZERO;
    for word in a.split_whitespace() {
        match word.split_once('=') {
            Some(("on", hosts)) => on.extend(hosts.split(',').map(str::to_string)),
            Some(("retry", secs)) => {
                retry = Duration::from_secs(
                    secs.parse()
                        .map_err(|_| format!("retry={secs}: not a number of seconds"))?,
                )
            }
            _ => return Err(format!("unknown annotation word `{word}`")),
        }
    }
    for h in &on {
        if host_of(h).is_none() {
            return Err(format!("unknown host `{h}`"));
        }
    }
    if on.is_empty() {
        return Err("no `on=` hosts".into());
    }
    Ok(How::Run { on, retry })
}

fn host_of(name: &str) -> Option<u8> {
    HOSTS
        .iter()
        .find(|(_, names)| names.contains(&name))
        .map(|(n, _)| *n)
}

/// The hosts on this machine, under a temporary directory; dropping it stops what they run.
struct Hosts {
    root: tempfile::TempDir,
    /// The ports of host N at index N-1, in the order of [`PORTS`].
    ports: Vec<Vec<u16>>,
    unique: String,
    zk: String,
    made_mount_point: bool,
}

impl Hosts {
    fn new() -> Hosts {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = tempfile::tempdir().expect("tempdir");
        let made_mount_point = !Path::new("/var/lib/agora").exists();
        if made_mount_point {
            std::fs::create_dir_all("/var/lib/agora").expect("the /var/lib/agora mount point");
        }
        let mut hosts_lines = String::from("127.0.0.1 zk1 zk2 zk3\n");
        for (n, names) in HOSTS {
            hosts_lines.push_str(&format!("127.0.0.{n} {}\n", names.join(" ")));
        }
        let mut aliases = String::new();
        let mut ports = Vec::new();
        for (n, names) in HOSTS {
            let h = root.path().join(format!("host{n}"));
            for d in ["usr-local-bin", "var-lib-agora", "home/target/release"] {
                std::fs::create_dir_all(h.join(d)).expect("host dir");
            }
            let copied = Command::new("cp")
                .args(["-a", "/etc"])
                .arg(h.join("etc"))
                .status()
                .expect("cp runs");
            assert!(copied.success(), "copying /etc for host {n}");
            let etc_hosts = h.join("etc/hosts");
            let _ = std::fs::remove_file(&etc_hosts);
            std::fs::write(&etc_hosts, format!("127.0.0.1 localhost\n{hosts_lines}"))
                .expect("/etc/hosts");
            for d in ["deploy", "examples"] {
                std::os::unix::fs::symlink(repo.join(d), h.join("home").join(d)).expect("link");
            }
            std::os::unix::fs::symlink(
                env!("CARGO_BIN_EXE_agora"),
                h.join("home/target/release/agora"),
            )
            .expect("link the binary");
            let mine: Vec<u16> = PORTS.iter().map(|_| free_port()).collect();
            let sed: String = PORTS
                .iter()
                .zip(&mine)
                .map(|(p, m)| format!("s/\\b{p}\\b/{m}/g\n"))
                .collect();
            std::fs::write(h.join("ports.sed"), sed).expect("ports.sed");
            std::fs::write(
                h.join("guide.env"),
                format!(
                    "GUIDE_HOSTNAME={}\n\
                     GUIDE_EXTRA_agora_master='--port {}'\n\
                     GUIDE_EXTRA_agora_agent='--port {} --dns-port 0 --mesh=false'\n",
                    names[0], mine[0], mine[1]
                ),
            )
            .expect("guide.env");
            for name in names.iter() {
                aliases.push_str(&format!("{name} {n}\n"));
            }
            ports.push(mine);
        }
        std::fs::write(root.path().join("aliases"), aliases).expect("aliases");
        std::os::unix::fs::symlink(repo.join("tests/guide/host"), root.path().join("host"))
            .expect("link the host script");
        let unique = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or(0)
                ^ u128::from(std::process::id())
        );
        Hosts {
            root,
            ports,
            unique,
            zk: std::env::var("AGORA_TEST_ZK").unwrap_or_else(|_| "127.0.0.1:2181".into()),
            made_mount_point,
        }
    }

    fn dir(&self, n: u8) -> PathBuf {
        self.root.path().join(format!("host{n}"))
    }

    /// The block's text with the substitutions listed in the module documentation.
    fn substitute(&self, text: &str) -> String {
        let mut t = text.replace(
            "zk1:2181,zk2:2181,zk3:2181/",
            &format!("{}/guide{}-", self.zk, self.unique),
        );
        for (n, names) in HOSTS {
            for name in names.iter() {
                for (p, mine) in PORTS.iter().zip(&self.ports[usize::from(*n) - 1]) {
                    t = t.replace(&format!("{name}:{p}"), &format!("{name}:{mine}"));
                }
            }
        }
        t
    }

    /// Runs `script` on host `n`: its status, its standard output and both outputs.
    fn run(&self, n: u8, script: &str) -> (bool, String, String) {
        let file = self.dir(n).join("block.sh");
        std::fs::write(&file, format!("set -euo pipefail\n{script}")).expect("write the block");
        let out = Command::new("timeout")
            .arg(BLOCK_TIMEOUT.as_secs().to_string())
            .arg(self.root.path().join("host"))
            .arg(n.to_string())
            .arg("/bin/bash")
            .arg(&file)
            .env("GUIDE_ROOT", self.root.path())
            .env(
                "GUIDE_SHIMS",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guide/bin"),
            )
            .env_remove("AGORA_MASTER")
            .env_remove("AGORA_TOKEN")
            .env_remove("AGORA_TOKEN_FILE")
            .env_remove("AGORA_TLS_CA")
            .output()
            .expect("the host script runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Every unit log of every host, for a failure message.
    fn logs(&self) -> String {
        let mut all = String::new();
        for (n, _) in HOSTS {
            let Ok(entries) = std::fs::read_dir(self.dir(*n).join("log")) else {
                continue;
            };
            for e in entries.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                all.push_str(&format!(
                    "---- host {n}: {} ----\n",
                    e.file_name().to_string_lossy()
                ));
                for l in tail.iter().rev() {
                    all.push_str(l);
                    all.push('\n');
                }
            }
        }
        all
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let mut pids = Vec::new();
        for (n, _) in HOSTS {
            let Ok(entries) = std::fs::read_dir(self.dir(*n).join("run")) else {
                continue;
            };
            for e in entries.flatten() {
                if let Some(pid) = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                {
                    pids.push(pid);
                }
            }
        }
        for pid in &pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Tasks outlive their agent by design; the test's do not outlive the test.
        for (n, _) in HOSTS {
            let work_dir = self.dir(*n).join("var-lib-agora/agent");
            if work_dir.join("meta").is_dir() {
                let _ = Command::new(env!("CARGO_BIN_EXE_agora"))
                    .args(["agent", "cleanup", "--work-dir"])
                    .arg(&work_dir)
                    .output();
            }
        }
        if self.made_mount_point {
            let _ = std::fs::remove_dir("/var/lib/agora");
        }
    }
}

#[test]
fn every_shell_block_of_the_guide_is_annotated_and_annotations_parse() {
    let md = "a\n<!-- guide: on=m1,w1 retry=5 -->\n```sh\necho hi\n```\n\n\
              <!-- guide: skip needs root -->\n\n  ```sh\n  echo x\n  ```\n```sh\nnope\n```\n";
    let err = blocks(md).expect_err("the last block has no annotation");
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].starts_with("line 12"), "{err:?}");
    let ok = blocks(&md[..md.find("```sh\nnope").expect("the last block")]).expect("parses");
    assert_eq!(ok.len(), 2);
    assert_eq!(
        ok[0].how,
        How::Run {
            on: vec!["m1".into(), "w1".into()],
            retry: Duration::from_secs(5)
        }
    );
    assert_eq!(ok[1].how, How::Skip("needs root".into()));
    assert_eq!(ok[1].text, "echo x\n");
    assert!(parse_annotation("on=m9").is_err());
    assert!(parse_annotation("skip").is_err());
    assert!(parse_annotation("on=m1 fast").is_err());
}

/// The guide followed literally on three hosts: ZooKeeper's path, three masters, two agents with
/// the join token, two services and two batch instances, the checks of section 5 — and the
/// cluster they describe is there at the end, as the CLI sees it through ZooKeeper (the probe:
/// `agora cluster status --json` on m1).
#[test]
fn the_deploy_guide_runs_as_written_on_three_hosts() {
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/deploy.md"))
            .expect("docs/deploy.md");
    let blocks = blocks(&guide).unwrap_or_else(|e| panic!("docs/deploy.md:\n{}", e.join("\n")));
    let hosts = Hosts::new();
    let started = Instant::now();
    let mut ran = 0;
    for b in &blocks {
        let How::Run { on, retry } = &b.how else {
            continue;
        };
        let script = hosts.substitute(&b.text);
        for name in on {
            let n = host_of(name).expect("checked when parsed");
            let deadline = Instant::now() + *retry;
            loop {
                let (ok, _, output) = hosts.run(n, &script);
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "docs/deploy.md line {} failed on {name} (host {n}):\n{script}\n---- output ----\n{output}\n{}",
                    b.line,
                    hosts.logs()
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            ran += 1;
        }
    }
    assert!(
        ran >= 8,
        "only {ran} block runs: the guide lost its annotations?"
    );
    eprintln!(
        "the guide ran ({ran} block runs) in {:?}",
        started.elapsed()
    );

    // The cluster the guide describes, seen by the CLI through ZooKeeper with the login the
    // guide made on m1 (section 5: `agora login`, kept in that host's ~/.agora).
    let zk_master = format!("zk://{}/guide{}-agora", hosts.zk, hosts.unique);
    let probe = format!("AGORA_MASTER={zk_master} agora cluster status --json");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, stdout, out) = hosts.run(1, &hosts.substitute(&probe));
        let status: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
        // The only frameworks are the guide's services and batch.
        let done = ok && status["agents"]["active"] == 2 && status["frameworks"] == 2;
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the guide's cluster is not complete (2 active agents, services and batch): {out}\n{}",
            hosts.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
