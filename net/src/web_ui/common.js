// What Agora's web UIs share (served by the master and by the services framework; see
// agora_net::web_ui). Plain script, no framework: one global, `Agora`.
"use strict";
const Agora = (() => {
  const KEY = "agora-token";
  // The API token of a server started with --api-token-file: given once as ?token=… (or typed
  // into a page's prompt), then kept in this tab's sessionStorage and removed from the address
  // bar, so that it is not bookmarked, shared in a link or sent as a Referer.
  {
    const q = new URLSearchParams(location.search);
    const given = q.get("token");
    if (given) {
      sessionStorage.setItem(KEY, given);
      q.delete("token");
      const rest = q.toString();
      history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
    }
  }
  const token = () => sessionStorage.getItem(KEY);
  const setToken = (t) => (t ? sessionStorage.setItem(KEY, t) : sessionStorage.removeItem(KEY));
  const auth = () => (token() ? { Authorization: "Bearer " + token() } : {});
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const pill = (cls, text) => `<span class="pill ${esc(cls)}">${esc(text ?? cls)}</span>`;
  // A table of `rows` (cells are HTML, already escaped by the caller), or `empty` when none.
  function table(headers, rows, empty, attrs) {
    if (!rows.length) return `<div class="empty">${esc(empty)}</div>`;
    return `<table${attrs ? " " + attrs : ""}><thead><tr>${headers.map((h) => `<th scope="col">${esc(h)}</th>`).join("")}</tr></thead><tbody>${rows.map((r) => (Array.isArray(r) ? `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>` : r)).join("")}</tbody></table>`;
  }
  // One call to the server's API with the token: {status, ok, json (null if the body is not
  // JSON), text}. A network failure throws.
  async function request(method, path, body) {
    const headers = Object.assign({ Accept: "application/json" }, auth());
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, { method, headers, body, cache: "no-store" });
    const text = await r.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
    return { status: r.status, ok: r.ok, json, text };
  }
  return { token, setToken, auth, esc, pill, table, request };
})();
