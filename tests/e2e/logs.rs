//! Logs as an operator collects them: written to a file (or journald), they carry no ANSI colour
//! codes; with `--log-format json` every line is one JSON object a collector can parse.

use crate::harness::Master;

fn assert_no_ansi(log: &str) {
    assert!(!log.is_empty(), "the master logged nothing");
    assert!(
        !log.contains('\u{1b}'),
        "log written to a file carries ANSI escape codes:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_written_to_a_file_are_plain_text_or_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (text_dir, json_dir) = (dir.path().join("text"), dir.path().join("json"));
    std::fs::create_dir_all(&text_dir).expect("dir");
    std::fs::create_dir_all(&json_dir).expect("dir");
    let text = Master::start(&text_dir, &[]).await;
    let log = text.process.log_text();
    assert_no_ansi(&log);
    assert!(
        log.contains("INFO") && log.contains("master started"),
        "{log}"
    );

    let json = Master::start(&json_dir, &["--log-format", "json"]).await;
    let log = json.process.log_text();
    assert_no_ansi(&log);
    let mut started = false;
    // The log file also holds the process's stdout (the "listening on" line for scripts).
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        if !line.starts_with('{') {
            assert!(
                !(line.contains(" INFO ") || line.contains(" WARN ") || line.contains(" ERROR ")),
                "a text log line with --log-format json: {line}"
            );
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string(), "no level in {line}");
        assert!(v["timestamp"].is_string(), "no timestamp in {line}");
        started |= v["fields"]["message"] == "master started";
    }
    assert!(started, "no 'master started' line in:\n{log}");
}
