//! Headless Chromium for the web UI tests (Debian's, installed by `scripts/test`): the flags every
//! test uses, a DOM dump for a page that only shows (`--dump-dom`), and a browser a test drives
//! as a user does: the DevTools protocol over `--remote-debugging-pipe` (JSON messages ended by
//! a NUL byte on the browser's fds 3 and 4; no WebSocket, no port), with real mouse clicks and
//! typed text, and JavaScript evaluated in the page to read what it shows.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The Chromium binary on this machine.
pub fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("which")
            .arg(c)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_string();
        }
    }
    panic!("no headless Chromium found: `apt-get install chromium` (scripts/test does)");
}

/// What every test's browser runs with: headless, no sandbox (tests may run as root), nothing
/// fetched from the network but the page under test.
pub const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
];

/// Loads `url` in headless Chromium with a fresh profile; the DOM after scripts ran, and the
/// browser's log.
pub async fn dump_dom(url: String, profile: PathBuf) -> (String, String) {
    let browser = chromium();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(browser)
            .args(FLAGS)
            .args([
                &format!("--user-data-dir={}", profile.display()),
                "--virtual-time-budget=5000",
                "--dump-dom",
                &url,
            ])
            .output()
    })
    .await
    .expect("join")
    .expect("chromium runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The console errors, uncaught exceptions and refused loads (a content security policy
/// violation, say) in a `--enable-logging` log.
pub fn console_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Error") || l.contains("Uncaught")))
        .collect()
}

/// How long one protocol call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless Chromium with one page, driven over the DevTools protocol. Killed when dropped.
pub struct Browser {
    child: tokio::process::Child,
    to: tokio::process::ChildStdin,
    from: BufReader<tokio::process::ChildStdout>,
    next_id: u64,
    session: String,
    /// Uncaught exceptions, `console.error` calls and error log entries of the page, in order.
    pub errors: Vec<String>,
    log: PathBuf,
}

impl Browser {
    /// Starts Chromium with a fresh profile under `dir` and opens a blank page.
    pub async fn start(dir: &Path) -> Browser {
        let profile = dir.join(format!("chromium-{}", std::process::id()));
        let log = dir.join("chromium.log");
        let log_file = std::fs::File::create(&log).expect("chromium log file");
        // The protocol is spoken on the browser's fds 3 (in) and 4 (out): the shell moves our
        // stdin and stdout pipes there before it becomes the browser.
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2"#)
            .arg(chromium())
            .args(FLAGS)
            .arg("--remote-debugging-pipe")
            .arg("--window-size=1280,900")
            .arg(format!("--user-data-dir={}", profile.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        let to = child.stdin.take().expect("stdin");
        let from = BufReader::new(child.stdout.take().expect("stdout"));
        let mut b = Browser {
            child,
            to,
            from,
            next_id: 0,
            session: String::new(),
            errors: Vec::new(),
            log,
        };
        let target = b
            .browser_call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let target = target["targetId"].as_str().expect("targetId").to_string();
        let attached = b
            .browser_call(
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .await;
        b.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            b.call(domain, json!({})).await;
        }
        b
    }

    /// The browser's own log (stderr).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None).await
    }

    /// Calls `method` on the page; its result. A protocol error fails the test.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(session)).await
    }

    async fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("serialize");
        bytes.push(0);
        self.to.write_all(&bytes).await.expect("write to chromium");
        self.to.flush().await.expect("flush to chromium");
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let mut buf = Vec::new();
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, self.from.read_until(0, &mut buf))
                .await
                .unwrap_or_else(|_| panic!("chromium did not answer {method} in {CALL_TIMEOUT:?}"))
                .expect("read from chromium");
            assert!(
                n > 0,
                "chromium closed the pipe during {method}:\n{}",
                self.log_text()
            );
            if buf.last() == Some(&0) {
                buf.pop();
            }
            let m: Value = serde_json::from_slice(&buf).expect("chromium sends JSON");
            if m["id"] == json!(id) {
                if let Some(e) = m.get("error") {
                    panic!("{method} failed: {e}");
                }
                return m["result"].clone();
            }
            self.event(&m);
        }
    }

    fn event(&mut self, m: &Value) {
        let p = &m["params"];
        match m["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let d = &p["exceptionDetails"];
                let text = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("an exception");
                self.errors.push(format!("uncaught: {text}"));
            }
            Some("Runtime.consoleAPICalled") if p["type"] == "error" => {
                self.errors.push(format!("console.error: {}", p["args"]));
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                let e = &p["entry"];
                self.errors.push(format!(
                    "{}: {} {}",
                    e["source"].as_str().unwrap_or("log"),
                    e["text"].as_str().unwrap_or(""),
                    e["url"].as_str().unwrap_or("")
                ));
            }
            _ => {}
        }
    }

    /// Opens `url` and waits until the document has loaded.
    pub async fn open(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({ "url": url })).await;
        if let Some(e) = r.get("errorText") {
            panic!("cannot open {url}: {e}");
        }
        self.wait_for(
            &format!("{url} to load"),
            "document.readyState === 'complete'",
        )
        .await;
    }

    /// The value of the JavaScript expression `js` in the page (promises awaited).
    pub async fn eval(&mut self, js: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{js} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Evaluates `js` every 100 ms until its value is truthy (within 40 s); that value. On a
    /// timeout the test fails with the page's text.
    pub async fn wait_for(&mut self, what: &str, js: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let v = self.eval(js).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let page = self
                    .eval("document.body ? document.body.innerText : ''")
                    .await;
                panic!(
                    "timed out waiting for {what} ({js}); the page shows:\n{}",
                    page.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the middle of the element `selector` with the mouse, as a user does: it must be
    /// visible and not covered by another element.
    pub async fn click(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).expect("selector");
        let at = self
            .wait_for(
                &format!("{selector} to be visible"),
                &format!(
                    "(() => {{ const e = document.querySelector({sel}); if (!e) return null;
                       e.scrollIntoView({{ block: 'center' }}); const r = e.getBoundingClientRect();
                       if (!r.width || !r.height) return null;
                       const x = r.x + r.width / 2, y = r.y + r.height / 2;
                       const top = document.elementFromPoint(x, y);
                       return top && (top === e || e.contains(top)) ? [x, y] : null; }})()"
                ),
            )
            .await;
        let (x, y) = (at[0].as_f64().unwrap_or(0.0), at[1].as_f64().unwrap_or(0.0));
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// Clicks into the field `selector`, selects what it holds and types `text` over it.
    pub async fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector).await;
        let sel = serde_json::to_string(selector).expect("selector");
        self.eval(&format!("document.querySelector({sel}).select()"))
            .await;
        self.call("Input.insertText", json!({ "text": text })).await;
    }

    /// The text of the element `selector` (empty when there is none).
    pub async fn text(&mut self, selector: &str) -> String {
        let sel = serde_json::to_string(selector).expect("selector");
        self.eval(&format!(
            "(document.querySelector({sel}) || {{ textContent: '' }}).textContent"
        ))
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// Closes the browser and waits for it to exit.
    pub async fn close(mut self) {
        // Not `call`: the browser may close the pipe before it answers.
        let _ = self
            .to
            .write_all(b"{\"id\":0,\"method\":\"Browser.close\",\"params\":{}}\0")
            .await;
        let _ = self.to.flush().await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
