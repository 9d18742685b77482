//! The binary's own command line.

use std::process::Command;

fn agora(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(args)
        .output()
        .expect("the agora binary runs")
}

#[test]
fn version_names_the_contract() {
    let out = agora(&["version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("agora 0.1.0"), "{text}");
    assert!(text.contains("agora.v1"), "{text}");
}

#[test]
fn help_lists_subcommands() {
    let out = agora(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "version",
        "resources",
        "master",
        "agent",
        "local",
        "framework",
        "task",
        "cluster",
    ] {
        assert!(text.contains(sub), "--help lacks {sub}: {text}");
    }
}

#[test]
fn resources_are_normalised() {
    let out = agora(&[
        "resources",
        "mem:8192; cpus:4;ports:[32000-32100,31000-32000]",
    ]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "cpus:4;mem:8192;ports:[31000-32100]"
    );
}

#[test]
fn bad_resource_token_is_named_and_exit_code_is_nonzero() {
    let out = agora(&["resources", "cpus:4;mem:lots"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mem:lots") && err.contains("not a number"),
        "{err}"
    );
}
