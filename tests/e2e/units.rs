//! The systemd units shipped in deploy/systemd: `systemd-analyze verify` accepts each of them
//! without a warning, every ExecStart line is a command line the binary accepts, and every
//! variable the example environment file sets is one the binary reads.

use std::path::Path;
use std::process::Command;

const UNITS: [&str; 4] = [
    "agora-master.service",
    "agora-agent.service",
    "agora-services.service",
    "agora-batch.service",
];

fn deploy_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd")
}

/// The ExecStart command line of a unit, continuation lines joined.
fn exec_start(unit: &str) -> Vec<String> {
    let line = unit
        .replace("\\\n", " ")
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=").map(str::to_string))
        .expect("an ExecStart line");
    line.split_whitespace()
        .map(|w| w.replace("%H", "host1.example.org"))
        .collect()
}

#[test]
fn shipped_units_verify_cleanly_and_their_command_lines_parse() {
    let binary = env!("CARGO_BIN_EXE_agora");
    let dir = tempfile::tempdir().expect("tempdir");
    for name in UNITS {
        let text = std::fs::read_to_string(deploy_dir().join(name)).expect("the unit is shipped");
        // The binary is installed at /usr/local/bin/agora; verify checks that it is executable.
        let local = text.replace("/usr/local/bin/agora", binary);
        let path = dir.path().join(name);
        std::fs::write(&path, &local).expect("write");
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .expect("systemd-analyze runs (Debian's systemd package)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {name}: {:?}\n{stderr}",
            out.status
        );
        for key in ["TimeoutStopSec=", "Restart=", "Type=exec"] {
            assert!(text.contains(key), "{name} has no {key}");
        }
        // The command line must be one the binary takes: `--help` after it parses every flag
        // before it (an unknown or misspelled one is an error).
        let words = exec_start(&local);
        let help = Command::new(&words[0])
            .args(&words[1..])
            .arg("--help")
            .output()
            .expect("the binary runs");
        assert!(
            help.status.success(),
            "{name}: ExecStart is not a valid command line: {words:?}\n{}",
            String::from_utf8_lossy(&help.stderr)
        );
    }
    let agent = std::fs::read_to_string(deploy_dir().join("agora-agent.service")).expect("unit");
    assert!(
        agent.contains("KillMode=process"),
        "tasks must outlive an agent restart"
    );
    assert!(
        agent.contains("Delegate=yes"),
        "the agent manages cgroups below its own"
    );
}

#[test]
fn the_example_environment_sets_only_variables_the_binary_reads() {
    let example = std::fs::read_to_string(deploy_dir().join("agora.env.example")).expect("example");
    let mut help = String::new();
    for cmd in ["master", "agent", "services", "batch"] {
        let out = Command::new(env!("CARGO_BIN_EXE_agora"))
            .args([cmd, "--help"])
            .output()
            .expect("the binary runs");
        help.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    let mut seen = 0;
    for line in example.lines() {
        let line = line.trim_start_matches("# ").trim();
        let Some((var, _)) = line.split_once('=') else {
            continue;
        };
        if !var.starts_with("AGORA_") || var.contains(' ') {
            continue;
        }
        seen += 1;
        assert!(
            help.contains(&format!("env: {var}")),
            "agora.env.example sets {var}, which no component reads"
        );
    }
    assert!(seen >= 8, "only {seen} variables found in the example");
}
