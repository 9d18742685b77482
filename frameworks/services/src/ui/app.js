// The services web UI: apps and groups, tasks, deployments, the launch queue, and the actions a
// Marathon user takes (create, scale, restart, suspend, destroy). It talks only to the public /v2
// API, with the API token when one is set (Agora.request, in common.js), and polls it every two
// seconds. Forms live outside #view, so that a refresh never replaces what is being typed.
"use strict";
const { esc, pill, table } = Agora;
const POLL_MS = 2000;
let data = null;       // {apps, deployments, queue} of the last successful refresh
let info = null;       // GET /v2/info, once
let loadError = "";

const $ = (id) => document.getElementById(id);
const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
const fmt = (v) => (Number.isInteger(v) ? String(v) : num(v).toFixed(2));
// /v2/apps/prod/web for the app /prod/web (ids are checked by the API; segments are encoded anyway).
const appPath = (id) => "/v2/apps/" + String(id).split("/").filter(Boolean).map(encodeURIComponent).join("/");
const appLink = (id) => `<a href="#/apps${esc(id)}">${esc(id)}</a>`;
const words = (s) => String(s).replace(/([a-z])([A-Z])/g, "$1 $2");
const when = (t) => (t ? esc(String(t).replace("T", " ").replace(/\.\d+/, "").replace(/\+00:00$|Z$/, " UTC")) : "—");

// ---------------------------------------------------------------------------------------------
// Loading

class Unauthorized extends Error {}

// One API call; a 401 opens the token prompt and throws.
async function api(method, path, body) {
  const r = await Agora.request(method, path, body);
  if (r.status === 401) {
    showTokenForm();
    throw new Unauthorized((r.json && r.json.message) || "this services framework requires an API token");
  }
  return r;
}

async function getJson(path) {
  const r = await api("GET", path);
  if (!r.ok || r.json === null) throw new Error(`GET ${path} answered ${r.status}${r.json && r.json.message ? ": " + r.json.message : ""}`);
  return r.json;
}

async function refresh() {
  try {
    const [apps, deployments, queue] = await Promise.all([
      getJson("/v2/apps?embed=apps.tasks&embed=apps.lastTaskFailure"),
      getJson("/v2/deployments"),
      getJson("/v2/queue?embed=lastUnusedOffers"),
    ]);
    data = { apps: apps.apps || [], deployments: Array.isArray(deployments) ? deployments : [], queue: queue.queue || [] };
    if (!info) info = await getJson("/v2/info").catch(() => null);
    loadError = "";
  } catch (e) {
    loadError = e instanceof Unauthorized
      ? "An API token is required: " + e.message
      : "Cannot load the services state: " + e.message + " (retrying)";
  }
  render();
}

// ---------------------------------------------------------------------------------------------
// Views

function appStatus(app) {
  const queued = data.queue.find((q) => q.app && q.app.id === app.id);
  if ((app.deployments || []).length) return "Deploying";
  if (queued && queued.delay && !queued.delay.overdue) return "Delayed";
  if (app.instances === 0 && num(app.tasksRunning) === 0) return "Suspended";
  if (num(app.tasksRunning) >= app.instances) return "Running";
  return "Waiting";
}

const hasChecks = (app) => (app.healthChecks || []).length > 0;
function healthCell(app) {
  if (!hasChecks(app)) return `<span title="no health checks">—</span>`;
  const bad = num(app.tasksUnhealthy);
  return String(num(app.tasksHealthy)) + (bad ? ` ${pill("unhealthy", bad + " unhealthy")}` : "");
}

function actionButtons(id) {
  const b = (act, label, cls) => `<button type="button" class="${cls || ""}" data-act="${act}" data-app="${esc(id)}" aria-label="${esc(label + " " + id)}">${esc(label)}</button>`;
  return b("scale", "Scale") + " " + b("restart", "Restart") + " " + b("suspend", "Suspend") + " " + b("destroy", "Destroy", "danger");
}

// Apps grouped by their id paths (/prod/web/api is in the groups /prod and /prod/web): a group
// row sums its apps' counts.
function appsTree(apps) {
  const root = { path: "/", groups: new Map(), apps: [] };
  for (const app of [...apps].sort((a, b) => a.id.localeCompare(b.id))) {
    let node = root;
    const segs = app.id.split("/").filter(Boolean);
    for (const seg of segs.slice(0, -1)) {
      const path = (node.path === "/" ? "" : node.path) + "/" + seg;
      if (!node.groups.has(seg)) node.groups.set(seg, { path, groups: new Map(), apps: [] });
      node = node.groups.get(seg);
    }
    node.apps.push(app);
  }
  const all = (n) => n.apps.concat(...[...n.groups.values()].map(all));
  const sum = (list, f) => list.reduce((s, a) => s + num(f(a)), 0);
  const rows = [];
  const indent = (depth) => `style="padding-left:${(0.9 + depth * 1.4).toFixed(1)}rem"`;
  (function walk(node, depth) {
    for (const g of node.groups.values()) {
      const list = all(g);
      rows.push(`<tr class="group" data-group="${esc(g.path)}"><th scope="row" class="id" ${indent(depth)}>${esc(g.path)}/</th><td>${list.length} app${list.length === 1 ? "" : "s"}</td>` +
        `<td>${sum(list, (a) => a.instances)}</td><td>${sum(list, (a) => a.tasksRunning)}</td><td>${sum(list, (a) => (hasChecks(a) ? a.tasksHealthy : 0))}</td><td>${sum(list, (a) => a.tasksStaged)}</td><td></td><td></td><td></td></tr>`);
      walk(g, depth + 1);
    }
    for (const a of node.apps) {
      const status = appStatus(a);
      rows.push(`<tr data-app="${esc(a.id)}"><th scope="row" class="id" ${indent(depth)}>${appLink(a.id)}</th><td>${pill(status)}</td>` +
        `<td class="n-instances">${num(a.instances)}</td><td class="n-running">${num(a.tasksRunning)}</td><td class="n-healthy">${healthCell(a)}</td><td class="n-staged">${num(a.tasksStaged)}</td>` +
        `<td>${fmt(num(a.cpus))}</td><td>${fmt(num(a.mem))}</td><td class="actions">${actionButtons(a.id)}</td></tr>`);
    }
  })(root, 0);
  return table(["ID", "Status", "Instances", "Running", "Healthy", "Staged", "CPUs", "Mem (MiB)", "Actions"], rows,
    "No apps yet. Create one from its Marathon JSON under “Create app”.", 'id="apps-table"');
}

function taskHosts(t) {
  const host = t.host || "";
  if (!(t.ports || []).length) return esc(host);
  return t.ports.map((p) => `<a href="http://${esc(host)}:${esc(p)}/" rel="noreferrer">${esc(host)}:${esc(p)}</a>`).join(" ");
}

function taskHealth(app, t) {
  const r = (t.healthCheckResults || [])[0];
  if (r) return r.alive ? pill("healthy") : pill("unhealthy");
  return hasChecks(app) ? pill("Waiting", "unknown") : "—";
}

function tasksTable(app) {
  const tasks = [...(app.tasks || [])].sort((a, b) => String(a.id).localeCompare(String(b.id)));
  return table(["Task", "State", "Health", "Host:port", "Staged", "Started", "Message"], tasks.map((t) => [
    `<code>${esc(t.id)}</code>`, pill(t.state, String(t.state || "").replace("TASK_", "")), taskHealth(app, t),
    taskHosts(t), when(t.stagedAt), when(t.startedAt), esc(t.message),
  ]), "No tasks.", 'id="tasks-table"');
}

function appPage(id) {
  const app = data.apps.find((a) => a.id === id);
  if (!app) return `<section><h2>App ${esc(id)}</h2><div class="empty">No app ${esc(id)} (destroyed, or not created yet). <a href="#/apps">All apps</a></div></section>`;
  const c = app.container;
  const image = c && c.docker ? c.docker.image : c && c.type === "MESOS" && c.docker ? c.docker.image : "";
  const ports = (app.portDefinitions || []).map((p) => p.port).concat(...((c && c.portMappings) || []).map((p) => [p.servicePort || p.containerPort]));
  const checks = (app.healthChecks || []).map((h) => `${esc(h.protocol || "HTTP")} ${esc(h.path || (h.command && h.command.value) || "")}`).join(", ");
  const deps = data.deployments.filter((d) => (d.affectedApps || []).includes(app.id));
  const queued = data.queue.find((q) => q.app && q.app.id === app.id);
  const failure = app.lastTaskFailure;
  const config = Object.fromEntries(Object.entries(app).filter(([k]) => !["tasks", "deployments", "lastTaskFailure", "tasksRunning", "tasksStaged", "tasksHealthy", "tasksUnhealthy", "versionInfo"].includes(k)));
  const row = (k, v) => `<dt>${esc(k)}</dt><dd>${v}</dd>`;
  return `<section id="app-page" data-app="${esc(app.id)}"><h2>App ${esc(app.id)} ${pill(appStatus(app))}</h2>
    <dl class="summary">
      ${row("Command", app.cmd ? `<code>${esc(app.cmd)}</code>` : app.args ? `<code>${esc(app.args.join(" "))}</code>` : "—")}
      ${image ? row("Image", `<code>${esc(image)}</code>`) : row("Runs", "natively (no container image)")}
      ${row("Resources", `${fmt(num(app.cpus))} CPUs, ${fmt(num(app.mem))} MiB memory${app.disk ? `, ${fmt(num(app.disk))} MiB disk` : ""}`)}
      ${row("Instances", `<span id="app-instances">${num(app.instances)}</span> wanted · <span id="app-running">${num(app.tasksRunning)}</span> running · ${num(app.tasksStaged)} staged · ${hasChecks(app) ? num(app.tasksHealthy) + " healthy" : "no health checks"}`)}
      ${ports.length ? row("Service ports", esc(ports.join(", "))) : ""}
      ${checks ? row("Health checks", checks) : ""}
      ${row("Version", when(app.version))}
      ${deps.length ? row("Deployments", deps.map((d) => `<a href="#/deployments">${esc(d.id)}</a>`).join(", ")) : ""}
      ${queued ? row("Waiting", `${num(queued.count)} to launch: ${queueReasons(queued)}`) : ""}
      ${failure ? row("Last task failure", `${pill(failure.state, String(failure.state || "").replace("TASK_", ""))} ${esc(failure.message)} <small>(${esc(failure.host)}, ${when(failure.timestamp)})</small>`) : ""}
    </dl>
    <div class="panel actions">${actionButtons(app.id)}</div></section>
    <section><h2>Tasks</h2>${tasksTable(app)}</section>
    <section><details class="definition"><summary>Definition (JSON)</summary><pre>${esc(JSON.stringify(config, null, 2))}</pre></details></section>`;
}

function deploymentsPage() {
  return `<section><h2>Running deployments</h2>${table(["Deployment", "Apps", "Progress", "Steps", "Started", ""], data.deployments.map((d) => {
    const total = num(d.totalSteps) || (d.steps || []).length;
    const current = num(d.currentStep);
    const steps = (d.steps || []).map((s, i) => {
      const cls = i + 1 < current ? "done" : i + 1 === current ? "current" : "";
      const acts = (s.actions || []).map((a) => `${esc(words(a.action))} ${a.app ? appLink(a.app) : esc(a.pod || "")}`).join("; ");
      return `<li class="${cls}"${cls === "current" ? ' aria-current="step"' : ""}>${acts || "—"}</li>`;
    }).join("");
    return [`<code>${esc(d.id)}</code>`, (d.affectedApps || []).map(appLink).join(", "), `step ${current} of ${total}`,
      `<ol class="steps">${steps}</ol>`, when(d.version),
      `<button type="button" data-act="rollback" data-deployment="${esc(d.id)}">Roll back</button> <button type="button" class="danger" data-act="stop" data-deployment="${esc(d.id)}">Stop</button>`];
  }), "No deployment is running.", 'id="deployments-table"')}</section>`;
}

// Why a queued app is not launched: what the API says, in the fields it has (Marathon's
// processedOffersSummary and lastUnusedOffers; lastUnusedOfferReason where they are missing).
function queueReasons(q) {
  const parts = [];
  if (q.delay && !q.delay.overdue && num(q.delay.timeLeftSeconds) > 0) parts.push(`backing off for ${fmt(num(q.delay.timeLeftSeconds))} s after failures`);
  const s = q.processedOffersSummary;
  if (s) {
    parts.push(`${num(s.processedOffersCount)} offers processed, ${num(s.unusedOffersCount)} unused${s.lastUnusedOfferAt ? " (last unused " + when(s.lastUnusedOfferAt) + ")" : ""}`);
    const rejected = (s.rejectSummaryLastOffers || []).filter((r) => num(r.declined) > 0);
    if (rejected.length) {
      parts.push(`<table class="reasons"><thead><tr><th scope="col">Last offers declined for</th><th scope="col">Declined</th><th scope="col">Processed</th></tr></thead><tbody>${rejected.map((r) => `<tr><td>${esc(words(r.reason))}</td><td>${num(r.declined)}</td><td>${num(r.processed)}</td></tr>`).join("")}</tbody></table>`);
    }
  }
  const unused = (q.lastUnusedOffers || []).slice(-5);
  if (unused.length) {
    parts.push(`<ul class="unused">${unused.map((u) => {
      const o = u.offer || {};
      return `<li>${esc(o.hostname || o.agentId || "an offer")} ${when(u.timestamp)}: ${(u.reason || []).map(words).map(esc).join(", ")}</li>`;
    }).join("")}</ul>`);
  }
  if (!s && !unused.length && q.lastUnusedOfferReason) parts.push(esc(q.lastUnusedOfferReason));
  return parts.length ? parts.join(" ") : "waiting for an offer";
}

function queuePage() {
  return `<section><h2>Launch queue</h2>${table(["App", "Waiting", "Since", "Why"], data.queue.map((q) => [
    q.app ? appLink(q.app.id) : "—", String(num(q.count)), when(q.since), queueReasons(q),
  ]), "Nothing is waiting to launch.", 'id="queue-table"')}</section>`;
}

function render() {
  const err = $("error");
  err.textContent = loadError;
  err.style.display = loadError ? "block" : "none";
  const route = (location.hash.replace(/^#\/?/, "") || "apps").split("/");
  const view = route[0] || "apps";
  for (const n of ["apps", "deployments", "queue", "create"]) {
    const a = $("nav-" + n);
    if (n === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  $("create").hidden = view !== "create";
  if (info) $("leader").textContent = `leader ${info.leader || "?"} · ${info.name || ""} ${info.version || ""}`;
  if (!data) return;
  $("count-deployments").textContent = data.deployments.length ? String(data.deployments.length) : "";
  $("count-queue").textContent = data.queue.length ? String(data.queue.length) : "";
  let html = "";
  if (view === "apps" && route.length > 1) html = appPage("/" + route.slice(1).map(decodeURIComponent).join("/"));
  else if (view === "deployments") html = deploymentsPage();
  else if (view === "queue") html = queuePage();
  else if (view !== "create") html = `<section><h2>Apps</h2>${appsTree(data.apps)}</section>`;
  replaceView(html);
}

// Replaces #view only when what it shows changed, keeping the keyboard focus (a button is found
// again by its action and app or deployment) and the open <details>, so that the live refresh
// does not throw a keyboard or screen reader user back to the top every two seconds.
let shown = null;
let definitionOpen = false;
function replaceView(html) {
  if (html === shown) return;
  shown = html;
  const view = $("view");
  const f = document.activeElement;
  const key = f && view.contains(f) && f.dataset
    ? ["act", "app", "deployment"].filter((k) => f.dataset[k] !== undefined).map((k) => `[data-${k}="${CSS.escape(f.dataset[k])}"]`).join("") || (f.getAttribute("href") ? `a[href="${CSS.escape(f.getAttribute("href"))}"]` : "")
    : "";
  view.innerHTML = html;
  const d = view.querySelector("details.definition");
  if (d) {
    d.open = definitionOpen;
    d.addEventListener("toggle", () => { definitionOpen = d.open; });
  }
  if (key) {
    const again = view.querySelector(key);
    if (again) again.focus();
  }
}

// ---------------------------------------------------------------------------------------------
// Validation errors: Marathon's 422/400 `details` [{path, errors}] (or a bare `message`).

// "/portDefinitions(0)/port" (Marathon's style) and "/portDefinitions/0/port" (a JSON pointer)
// both become the pointer; "/" is the whole document ("").
function pointerOf(path) {
  const p = String(path || "").replace(/\((\d+)\)/g, "/$1").replace(/\/+$/, "");
  return p === "" || p === "/" ? "" : p.startsWith("/") ? p : "/" + p;
}

function detailsOf(r) {
  const j = r.json || {};
  const list = Array.isArray(j.details) ? j.details : [];
  return list.map((d) => ({ pointer: pointerOf(d.path), path: String(d.path || "/"), errors: Array.isArray(d.errors) ? d.errors.map(String) : [String(d.errors || "")] }));
}

// Where each JSON pointer of `text` is: the [start, end) of an object member's key, or of an
// array element's value. A syntax error stops the scan; what was found so far is kept.
function locate(text) {
  const at = new Map();
  let i = 0;
  const ws = () => { while (i < text.length && /\s/.test(text[i])) i++; };
  const fail = () => { throw new Error("syntax"); };
  const str = () => {
    const s = i++;
    while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    if (i >= text.length) fail();
    i++;
    return [s, i];
  };
  const escKey = (k) => k.replace(/~/g, "~0").replace(/\//g, "~1");
  function value(ptr) {
    ws();
    const s = i;
    if (text[i] === "{") {
      i++; ws();
      if (text[i] === "}") { i++; return [s, i]; }
      for (;;) {
        ws();
        if (text[i] !== '"') fail();
        const [ks, ke] = str();
        const p = ptr + "/" + escKey(JSON.parse(text.slice(ks, ke)));
        at.set(p, [ks, ke]);
        ws();
        if (text[i] !== ":") fail();
        i++;
        value(p);
        ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i] === "}") { i++; return [s, i]; }
        fail();
      }
    }
    if (text[i] === "[") {
      i++; ws();
      if (text[i] === "]") { i++; return [s, i]; }
      for (let n = 0; ; n++) {
        const p = ptr + "/" + n;
        const r = value(p);
        if (!at.has(p)) at.set(p, r);
        ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i] === "]") { i++; return [s, i]; }
        fail();
      }
    }
    if (text[i] === '"') return str();
    while (i < text.length && !/[\s,\]}]/.test(text[i])) i++;
    if (i === s) fail();
    return [s, i];
  }
  try { value(""); } catch (_) { /* keep what was located */ }
  return at;
}

// The editor's marks: the text again, with each refused key in a <mark>; a field that is not in
// the text (a required one left out) marks its nearest enclosing key.
let createErrors = [];
function renderMarks() {
  const text = $("app-json").value;
  const at = locate(text);
  const ranges = [];
  for (const d of createErrors) {
    let p = d.pointer;
    while (p && !at.has(p)) p = p.slice(0, p.lastIndexOf("/"));
    d.found = p === d.pointer;
    if (p) ranges.push([...at.get(p), d.pointer]);
  }
  ranges.sort((a, b) => a[0] - b[0]);
  let html = "";
  let pos = 0;
  for (const [s, e, p] of ranges) {
    if (s < pos) continue;
    html += esc(text.slice(pos, s)) + `<mark data-path="${esc(p)}">${esc(text.slice(s, e))}</mark>`;
    pos = e;
  }
  // A trailing newline keeps the copy as tall as the textarea's last line.
  $("app-json-marks").innerHTML = html + esc(text.slice(pos)) + "\n";
  $("app-json-marks").scrollTop = $("app-json").scrollTop;
}

function renderCreateErrors(message) {
  const box = $("create-errors");
  const ta = $("app-json");
  renderMarks();
  if (!createErrors.length && !message) {
    ta.removeAttribute("aria-invalid");
    box.innerHTML = "";
    return;
  }
  ta.setAttribute("aria-invalid", "true");
  const general = createErrors.filter((d) => !d.pointer);
  const fields = createErrors.filter((d) => d.pointer);
  box.innerHTML = (message ? `<p class="general">${esc(message)}</p>` : "") +
    (general.length ? `<p class="general">${general.map((d) => d.errors.map(esc).join("; ")).join("<br>")}</p>` : "") +
    (fields.length ? `<ul>${fields.map((d) => `<li data-path="${esc(d.pointer)}"><button type="button" class="path" data-select="${esc(d.pointer)}" title="select it in the editor"><code>${esc(d.path)}</code></button>${d.found ? "" : " <small>(not in the pasted JSON)</small>"}: <span class="errors">${d.errors.map(esc).join("; ")}</span></li>`).join("")}</ul>` : "");
}

// Selects the key of `pointer` (or its nearest enclosing one) in the editor.
function selectInEditor(pointer) {
  const ta = $("app-json");
  const at = locate(ta.value);
  let p = pointer;
  while (p && !at.has(p)) p = p.slice(0, p.lastIndexOf("/"));
  ta.focus();
  if (p) ta.setSelectionRange(at.get(p)[0], at.get(p)[1]);
}

const EXAMPLE = { id: "/example/hello", cmd: "python3 -m http.server $PORT0", cpus: 0.1, mem: 64, instances: 1, portDefinitions: [{ port: 0, name: "http" }] };

async function submitCreate(ev) {
  ev.preventDefault();
  const text = $("app-json").value;
  $("create-submit").disabled = true;
  try {
    const r = await api("POST", "/v2/apps", text);
    if (r.status === 201) {
      createErrors = [];
      renderCreateErrors("");
      const id = (r.json && r.json.id) || "";
      notice(`Created ${id}: its deployment is running.`);
      $("app-json").value = "";
      renderMarks();
      location.hash = "#/apps" + id;
      refresh();
      return;
    }
    createErrors = detailsOf(r);
    const msg = (r.json && r.json.message) || `POST /v2/apps answered ${r.status}`;
    renderCreateErrors(createErrors.length ? `${msg} (${r.status}):` : msg);
  } catch (e) {
    createErrors = [];
    renderCreateErrors(e.message);
  } finally {
    $("create-submit").disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Actions on one app or deployment

let action = null; // {kind, id, force}

function notice(text) {
  $("notice").textContent = text;
}

function openAction(kind, id) {
  const app = data && data.apps.find((a) => a.id === id);
  action = { kind, id };
  const titles = { scale: "Scale", restart: "Restart", suspend: "Suspend", destroy: "Destroy", rollback: "Roll back deployment", stop: "Stop deployment" };
  $("action-title").textContent = `${titles[kind]} ${id}`;
  const fields = $("action-fields");
  const submit = $("action-submit");
  submit.className = kind === "destroy" || kind === "stop" ? "primary danger" : "primary";
  if (kind === "scale") {
    fields.innerHTML = `<label for="scale-instances">Instances</label><input id="scale-instances" name="instances" inputmode="numeric" data-path="/instances" aria-describedby="scale-instances-error" value="${esc(app ? app.instances : 1)}"><span class="field-error" id="scale-instances-error" data-for="/instances"></span>`;
    submit.textContent = "Scale";
  } else {
    const say = {
      restart: "Replaces every task of the app with a new one (a rolling restart).",
      suspend: "Scales the app to 0 instances: its tasks are killed, its definition is kept.",
      destroy: "Kills every task of the app and deletes its definition. This cannot be undone.",
      rollback: "Cancels the deployment and starts one that returns its apps to where they were.",
      stop: "Cancels the deployment and leaves its apps as they are now.",
    };
    fields.innerHTML = `<p>${esc(say[kind])}</p>`;
    submit.textContent = titles[kind].split(" ")[0];
  }
  $("action-message").textContent = "";
  $("action-force").checked = false;
  $("action-force-label").hidden = true;
  $("action").hidden = false;
  const input = $("scale-instances");
  if (input) { input.focus(); input.select(); } else submit.focus();
}

function closeAction() {
  action = null;
  $("action").hidden = true;
}

async function submitAction(ev) {
  ev.preventDefault();
  if (!action) return;
  const { kind, id } = action;
  const force = $("action-force").checked ? "?force=true" : "";
  let r;
  const submit = $("action-submit");
  submit.disabled = true;
  for (const el of $("action-fields").querySelectorAll("[data-for]")) el.textContent = "";
  for (const el of $("action-fields").querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  try {
    if (kind === "scale") {
      const raw = $("scale-instances").value.trim();
      // A whole number is sent as one; anything else as typed, for the API to say what is wrong.
      const n = /^-?\d+$/.test(raw) ? Number(raw) : raw;
      r = await api("PATCH", appPath(id) + force, JSON.stringify({ instances: n }));
    } else if (kind === "suspend") r = await api("PATCH", appPath(id) + force, JSON.stringify({ instances: 0 }));
    else if (kind === "restart") r = await api("POST", appPath(id) + "/restart" + force);
    else if (kind === "destroy") r = await api("DELETE", appPath(id) + force);
    else r = await api("DELETE", "/v2/deployments/" + encodeURIComponent(id) + (kind === "stop" ? "?force=true" : ""));
  } catch (e) {
    $("action-message").textContent = e.message;
    submit.disabled = false;
    return;
  }
  submit.disabled = false;
  if (r.ok) {
    const dep = r.json && r.json.deploymentId ? ` (deployment ${r.json.deploymentId})` : "";
    const done = { scale: "Scaling", suspend: "Suspending", restart: "Restarting", destroy: "Destroying", rollback: "Rolling back", stop: "Stopped" };
    notice(`${done[kind]} ${id}${dep}.`);
    closeAction();
    if (kind === "destroy" && location.hash.startsWith("#/apps/")) location.hash = "#/apps";
    refresh();
    return;
  }
  const message = (r.json && r.json.message) || `the API answered ${r.status}`;
  if (r.status === 409) $("action-force-label").hidden = false;
  let unplaced = [];
  for (const d of detailsOf(r)) {
    const input = $("action-fields").querySelector(`[data-path="${CSS.escape(d.pointer)}"]`);
    const slot = $("action-fields").querySelector(`[data-for="${CSS.escape(d.pointer)}"]`);
    if (input && slot) {
      input.setAttribute("aria-invalid", "true");
      slot.textContent = d.errors.join("; ");
    } else unplaced.push(`${d.path}: ${d.errors.join("; ")}`);
  }
  $("action-message").textContent = [message].concat(unplaced).join(" — ");
}

// ---------------------------------------------------------------------------------------------
// The token prompt

function showTokenForm() {
  const f = $("token-form");
  if (!f.hidden) return;
  f.hidden = false;
  $("token-input").value = "";
  $("token-input").focus();
}

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button");
  if (!b) return;
  if (b.dataset.act && b.dataset.app) openAction(b.dataset.act, b.dataset.app);
  else if (b.dataset.act && b.dataset.deployment) openAction(b.dataset.act, b.dataset.deployment);
  else if (b.dataset.select !== undefined) selectInEditor(b.dataset.select);
});
$("action-form").addEventListener("submit", submitAction);
$("action-cancel").addEventListener("click", closeAction);
$("create-form").addEventListener("submit", submitCreate);
$("create-example").addEventListener("click", () => {
  $("app-json").value = JSON.stringify(EXAMPLE, null, 2);
  createErrors = [];
  renderCreateErrors("");
});
$("app-json").addEventListener("input", renderMarks);
$("app-json").addEventListener("scroll", () => { $("app-json-marks").scrollTop = $("app-json").scrollTop; });
$("token-button").addEventListener("click", () => { const f = $("token-form"); if (f.hidden) showTokenForm(); else f.hidden = true; });
$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  Agora.setToken($("token-input").value.trim());
  $("token-input").value = "";
  $("token-form").hidden = true;
  refresh();
});
$("token-forget").addEventListener("click", () => {
  Agora.setToken("");
  $("token-form").hidden = true;
  refresh();
});
document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && action) closeAction(); });
window.addEventListener("hashchange", render);
refresh();
setInterval(refresh, POLL_MS);
