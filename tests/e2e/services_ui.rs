//! The services web UI (`/ui/`) in a real headless Chromium, clicked through as a user does
//! (mouse clicks and typed text over the DevTools protocol): from the master's UI to the services
//! UI, create a native app from pasted JSON, see it run, scale it to 2, see a refused app's error
//! beside the editor, destroy the app. Each click's effect is checked against the /v2 API. A
//! second test runs `agora services --api-token-file`: the page asks for the token, keeps it for
//! the tab, and works with it.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::browser::Browser;
use crate::harness::spawn_local as start_local;
use crate::harness::{eventually, free_port, Master, Process};

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut r = reqwest::Client::new().get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.expect("GET");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn running(app: &Value) -> Vec<Value> {
    app["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .collect()
}

/// `document.querySelectorAll(sel).length`, as JavaScript.
fn count(sel: &str) -> String {
    format!(
        "document.querySelectorAll({}).length",
        serde_json::to_string(sel).expect("selector")
    )
}

/// `agora services` against `master` with `extra` flags, once its API answers `/ping` (open with
/// or without a token); the process and its URL.
async fn start_services(
    dir: &std::path::Path,
    master: &Master,
    extra: &[&str],
) -> (Process, String) {
    let port = free_port();
    let work_dir = dir.join("services").display().to_string();
    let port_arg = port.to_string();
    let address = master.address();
    let mut args = vec![
        "services",
        "--master",
        &address,
        "--ip",
        "127.0.0.1",
        "--port",
        &port_arg,
        "--work-dir",
        &work_dir,
    ];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let process = Process::spawn("services", &args, dir);
    let url = format!("http://127.0.0.1:{port}");
    eventually("the services API", Duration::from_secs(30), || async {
        reqwest::get(format!("{url}/ping"))
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;
    (process, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_services_ui_creates_scales_refuses_and_destroys_an_app() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let services_port = free_port();
    let local = start_local(dir.path(), port, "local", services_port);
    eventually("agora local to be ready", Duration::from_secs(60), || {
        let log = local.log_text();
        async move {
            log.contains("Agora is running locally with 2 agents")
                .then_some(())
        }
    })
    .await;
    let services = format!("http://127.0.0.1:{services_port}");
    let app_url = format!("{services}/v2/apps/shop/ui-web");
    let mut b = Browser::start(dir.path()).await;

    // The master's UI links to the services UI it registered (FrameworkInfo.webui_url).
    b.open(&format!("http://127.0.0.1:{port}/#/frameworks"))
        .await;
    b.wait_for(
        "the master to list the services framework with its web UI",
        r#"[...document.querySelectorAll("a.webui")].some((a) => a.getAttribute("aria-label") === "web UI of services")"#,
    )
    .await;
    b.click(r#"a.webui[aria-label="web UI of services"]"#).await;
    b.wait_for(
        "the services UI",
        &format!(
            "location.href === {} && document.querySelector('#view .empty') !== null",
            serde_json::to_string(&format!("{services}/ui/")).expect("url")
        ),
    )
    .await;

    // Create: paste a native app's JSON into the editor and press Create.
    b.click("#nav-create").await;
    let app = json!({
        "id": "/shop/ui-web",
        "cmd": "sleep 600",
        "cpus": 0.1,
        "mem": 32,
        "instances": 1,
        "portDefinitions": [{ "port": 0, "name": "http" }],
    });
    b.type_into("#app-json", &app.to_string()).await;
    b.click("#create-submit").await;
    b.wait_for(
        "the app's page with one running task",
        &format!(
            "location.hash === '#/apps/shop/ui-web' && {} === 1",
            count("#tasks-table .pill.TASK_RUNNING")
        ),
    )
    .await;
    let (status, v) = get(&app_url, None).await;
    assert_eq!(status, 200, "the click did not create the app: {v}");
    assert_eq!(v["app"]["cmd"], "sleep 600");
    assert_eq!(running(&v["app"]).len(), 1);
    // The apps list shows it in its group, with its counts.
    b.click("#nav-apps").await;
    b.wait_for(
        "the group /shop and the app's row",
        r#"document.querySelector('tr.group[data-group="/shop"]') && document.querySelector('tr[data-app="/shop/ui-web"] td.n-running').textContent === "1""#,
    )
    .await;

    // Scale to 2 from the list's Scale button.
    b.click(r#"tr[data-app="/shop/ui-web"] button[data-act="scale"]"#)
        .await;
    b.type_into("#scale-instances", "2").await;
    b.click("#action-submit").await;
    b.wait_for(
        "2 running instances in the list",
        r#"(document.querySelector('tr[data-app="/shop/ui-web"] td.n-running') || {}).textContent === "2""#,
    )
    .await;
    let v = eventually(
        "the API to show 2 running tasks",
        Duration::from_secs(40),
        || async {
            let (_, v) = get(&app_url, None).await;
            (running(&v["app"]).len() == 2).then_some(v)
        },
    )
    .await;
    assert_eq!(v["app"]["instances"], 2, "{v}");
    // The app's page lists both tasks, each with a link to its host:port.
    b.click(r#"tr[data-app="/shop/ui-web"] th a"#).await;
    b.wait_for(
        "2 running tasks on the app's page",
        &format!("{} === 2", count("#tasks-table .pill.TASK_RUNNING")),
    )
    .await;
    let links = b
        .eval(r##"[...document.querySelectorAll("#tasks-table a")].map((a) => a.getAttribute("href")).sort()"##)
        .await;
    let mut expected: Vec<String> = running(&v["app"])
        .iter()
        .map(|t| {
            format!(
                "http://{}:{}/",
                t["host"].as_str().unwrap_or(""),
                t["ports"][0]
            )
        })
        .collect();
    expected.sort();
    assert_eq!(links, json!(expected), "the tasks' host:port links");

    // Restart from the app's page: both tasks are replaced by new ones.
    let before: HashSet<String> = running(&v["app"])
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect();
    b.click(r#"#app-page button[data-act="restart"]"#).await;
    b.click("#action-submit").await;
    eventually(
        "the restart to replace both tasks",
        Duration::from_secs(60),
        || async {
            let (_, v) = get(&app_url, None).await;
            let now: HashSet<String> = running(&v["app"])
                .iter()
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect();
            let done = v["app"]["deployments"]
                .as_array()
                .is_some_and(|d| d.is_empty());
            (done && now.len() == 2 && now.is_disjoint(&before)).then_some(())
        },
    )
    .await;
    b.wait_for(
        "the new tasks on the page",
        &format!(
            "{} === 2 && ![...document.querySelectorAll('#tasks-table code')].some((c) => {}.includes(c.textContent))",
            count("#tasks-table .pill.TASK_RUNNING"),
            serde_json::to_string(&before).expect("ids")
        ),
    )
    .await;

    // A refused app: its error is listed beside the editor, and its key is marked in it.
    let bad = json!({ "id": "/shop/ui-bad", "cmd": "sleep 600", "cpus": -1, "mem": 32 });
    let refused = reqwest::Client::new()
        .post(format!("{services}/v2/apps"))
        .json(&bad)
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status().as_u16(), 422);
    let refused: Value = refused.json().await.expect("422 JSON");
    let cpus_errors = refused["details"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["path"] == "/cpus"))
        .map(|d| d["errors"][0].as_str().unwrap_or("").to_string())
        .expect("the API names /cpus");
    b.click("#nav-create").await;
    b.type_into(
        "#app-json",
        &serde_json::to_string_pretty(&bad).expect("json"),
    )
    .await;
    b.click("#create-submit").await;
    b.wait_for(
        "the /cpus error beside the editor",
        r##"document.querySelector('#create-errors li[data-path="/cpus"]')"##,
    )
    .await;
    let shown = b
        .text(r#"#create-errors li[data-path="/cpus"] .errors"#)
        .await;
    assert_eq!(shown, cpus_errors, "the UI shows the API's error for /cpus");
    assert_eq!(
        b.text(r#"#app-json-marks mark[data-path="/cpus"]"#).await,
        "\"cpus\"",
        "the offending key is marked in the editor"
    );
    assert_eq!(
        b.eval("document.getElementById('app-json').getAttribute('aria-invalid')")
            .await,
        "true"
    );
    // Its path button selects the key in the editor.
    b.click(r#"#create-errors button[data-select="/cpus"]"#)
        .await;
    let selected = b
        .eval("(() => { const t = document.getElementById('app-json'); return t.value.slice(t.selectionStart, t.selectionEnd); })()")
        .await;
    assert_eq!(selected, "\"cpus\"");
    let (status, _) = get(&format!("{services}/v2/apps/shop/ui-bad"), None).await;
    assert_eq!(status, 404, "a refused app was created");

    // Destroy from the list, confirmed in the action panel.
    b.click("#nav-apps").await;
    b.click(r#"tr[data-app="/shop/ui-web"] button[data-act="destroy"]"#)
        .await;
    b.click("#action-submit").await;
    b.wait_for(
        "the app to leave the list",
        r##"document.querySelector('tr[data-app="/shop/ui-web"]') === null && document.querySelector("#view .empty") !== null"##,
    )
    .await;
    let (status, _) = get(&app_url, None).await;
    assert_eq!(status, 404, "the click did not destroy the app");
    eventually(
        "the app's tasks to end at the master",
        Duration::from_secs(40),
        || async {
            let (_, state) = get(&format!("http://127.0.0.1:{port}/state"), None).await;
            let live = state["tasks"].as_array().is_some_and(|t| {
                t.iter().any(|t| {
                    t["id"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("shop_ui-web."))
                        && t["state"] == "TASK_RUNNING"
                })
            });
            (!live).then_some(())
        },
    )
    .await;
    // The refused app's 422 is the one failed request the browser may log.
    let unexpected: Vec<&String> = b
        .errors
        .iter()
        .filter(|e| !(e.starts_with("network:") && e.contains("status of 422")))
        .collect();
    assert!(
        unexpected.is_empty(),
        "the pages logged errors: {unexpected:#?}"
    );
    b.close().await;
    drop(local);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_services_ui_asks_for_the_api_token_and_keeps_it_for_the_tab() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let token_file = dir.path().join("services-token");
    std::fs::write(&token_file, "services-ui-secret\n").expect("write token");
    let (_services, url) = start_services(
        dir.path(),
        &master,
        &["--api-token-file", &token_file.display().to_string()],
    )
    .await;
    let (status, _) = get(&format!("{url}/v2/apps"), None).await;
    assert_eq!(status, 401, "the API is open without its token");

    let mut b = Browser::start(dir.path()).await;
    b.open(&format!("{url}/")).await;
    b.wait_for(
        "the token prompt",
        "!document.getElementById('token-form').hidden && document.getElementById('error').textContent.includes('missing bearer token')",
    )
    .await;
    b.type_into("#token-input", "services-ui-secret").await;
    b.click("#token-submit").await;
    b.wait_for(
        "the apps view",
        "document.getElementById('token-form').hidden && document.getElementById('error').textContent === '' && document.querySelector('#view .empty') !== null",
    )
    .await;
    assert_eq!(
        b.eval("sessionStorage.getItem('agora-token')").await,
        "services-ui-secret"
    );
    // A write with the token: an app no agent can run (the master has none) waits in the queue.
    b.click("#nav-create").await;
    let app =
        json!({ "id": "/tok-app", "cmd": "sleep 600", "cpus": 0.1, "mem": 32, "instances": 1 });
    b.type_into("#app-json", &app.to_string()).await;
    b.click("#create-submit").await;
    b.wait_for(
        "the app's page",
        "location.hash === '#/apps/tok-app' && document.getElementById('app-page') !== null",
    )
    .await;
    let (status, v) = get(
        &format!("{url}/v2/apps/tok-app"),
        Some("services-ui-secret"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    b.click("#nav-queue").await;
    b.wait_for(
        "the app waiting in the queue",
        r##"[...document.querySelectorAll("#queue-table a")].some((a) => a.textContent === "/tok-app")"##,
    )
    .await;
    // Suspend from the queue's app: its deployment (waiting for offers that never come) holds
    // it, so the API answers 409 and the panel offers `force`; with it, the app is scaled to 0
    // and leaves the queue.
    b.click(r#"#queue-table a"#).await;
    b.click(r#"#app-page button[data-act="suspend"]"#).await;
    b.click("#action-submit").await;
    b.wait_for(
        "the lock and the force option",
        "!document.getElementById('action-force-label').hidden && document.getElementById('action-message').textContent.includes('locked')",
    )
    .await;
    b.click("#action-force").await;
    b.click("#action-submit").await;
    b.wait_for(
        "the app suspended",
        "document.querySelector('#app-page .pill.Suspended') !== null && document.getElementById('count-queue').textContent === ''",
    )
    .await;
    let (_, v) = get(
        &format!("{url}/v2/apps/tok-app"),
        Some("services-ui-secret"),
    )
    .await;
    assert_eq!(v["app"]["instances"], 0, "{v}");
    // The token outlives a reload of the tab.
    b.open(&format!("{url}/ui/#/apps")).await;
    b.wait_for(
        "the apps list after a reload, without a prompt",
        r#"document.querySelector('tr[data-app="/tok-app"]') !== null && document.getElementById('token-form').hidden"#,
    )
    .await;
    // The only failed requests the browser may log: the 401s of the first load, before the
    // token was given, and the 409 of the locked app.
    let unexpected: Vec<&String> = b
        .errors
        .iter()
        .filter(|e| {
            !(e.starts_with("network:")
                && (e.contains("status of 401") || e.contains("status of 409")))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "the pages logged errors: {unexpected:#?}"
    );
    b.close().await;
}

/// The page's pure helpers, run in the browser on inputs the other tests do not reach: where a
/// refused path is in the pasted text (JSON pointers and Marathon's `name(0)` paths, escaped
/// keys, strings holding brackets, text cut short), the group tree of nested ids, and the queue's
/// reasons in Marathon's `processedOffersSummary` / `lastUnusedOffers` shapes.
#[tokio::test(flavor = "multi_thread")]
async fn the_services_ui_locates_refused_paths_groups_apps_and_explains_the_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = Master::start(dir.path(), &[]).await;
    let (_services, url) = start_services(dir.path(), &master, &[]).await;
    let mut b = Browser::start(dir.path()).await;
    b.open(&format!("{url}/ui/")).await;
    b.wait_for("the first refresh", "data !== null").await;

    // [pasted text, path as the API gives it, the text marked for it]
    let cases = json!([
        [r#"{"cpus": -1}"#, "/cpus", r#""cpus""#],
        [r#"{"a": {"b": [1, {"c": 2}]}}"#, "/a/b/1/c", r#""c""#],
        [
            r#"{"healthChecks": [{"path": 1}]}"#,
            "/healthChecks(0)/path",
            r#""path""#
        ],
        [r#"{"x": [true, false]}"#, "/x/1", "false"],
        [r#"{"a/b": 1, "t~": 2}"#, "/a~1b", r#""a/b""#],
        [r#"{"a/b": 1, "t~": 2}"#, "/t~0", r#""t~""#],
        [r#"{"cmd": "echo \"}{\"", "mem": 1}"#, "/mem", r#""mem""#],
        [r#"{"env": {"A": 1}}"#, "/env/B", r#""env""#],
        [r#"{"mem": 1, "cpus": [1, 2"#, "/mem", r#""mem""#],
        [r#"{"mem": 1}"#, "/", ""],
    ]);
    for case in cases.as_array().expect("cases") {
        let (text, path, marked) = (&case[0], &case[1], case[2].as_str().unwrap_or(""));
        let got = b
            .eval(&format!(
                "(() => {{ const text = {text}; let p = pointerOf({path}); const at = locate(text);
                   while (p && !at.has(p)) p = p.slice(0, p.lastIndexOf('/'));
                   return p ? text.slice(...at.get(p)) : ''; }})()"
            ))
            .await;
        assert_eq!(got, marked, "{text} at {path}");
    }

    let rows = b
        .eval(
            r#"(() => { const apps = ["/e", "/a/d", "/a/b/c", "/a/b/f"].map((id) => ({ id, instances: 1, tasksRunning: 1, tasksStaged: 0, tasksHealthy: 0, healthChecks: [], deployments: [] }));
                const t = document.createElement("div"); t.innerHTML = appsTree(apps);
                return [...t.querySelectorAll("tbody tr")].map((r) => (r.dataset.group ? "group " + r.dataset.group + " " + r.cells[1].textContent : r.dataset.app)); })()"#,
        )
        .await;
    assert_eq!(
        rows,
        json!([
            "group /a 3 apps",
            "group /a/b 2 apps",
            "/a/b/c",
            "/a/b/f",
            "/a/d",
            "/e"
        ])
    );

    let reasons = b
        .eval(
            r#"(() => { const t = document.createElement("div"); t.innerHTML = queueReasons({
                count: 1, delay: { timeLeftSeconds: 0, overdue: true },
                processedOffersSummary: { processedOffersCount: 3, unusedOffersCount: 3, lastUnusedOfferAt: "2026-12-01T10:00:00.000Z",
                  rejectSummaryLastOffers: [{ reason: "UnfulfilledRole", declined: 0, processed: 3 }, { reason: "InsufficientMemory", declined: 3, processed: 3 }] },
                lastUnusedOffers: [{ offer: { id: "o1", agentId: "s1", hostname: "node-7" }, timestamp: "2026-12-01T10:00:00.000Z", reason: ["InsufficientMemory", "InsufficientPorts"] }] });
                return t.textContent; })()"#,
        )
        .await;
    let reasons = reasons.as_str().unwrap_or("");
    for expected in [
        "3 offers processed, 3 unused",
        "Insufficient Memory33",
        "node-7 2026-12-01 10:00:00 UTC: Insufficient Memory, Insufficient Ports",
    ] {
        assert!(
            reasons.contains(expected),
            "{expected:?} not in {reasons:?}"
        );
    }
    assert!(!reasons.contains("Unfulfilled Role"), "{reasons}");
    assert!(
        b.errors.is_empty(),
        "the page logged errors: {:#?}",
        b.errors
    );
    b.close().await;
}
