/* Shared helpers for the dashboard pages: fetch JSON, format times, live indicator. */
"use strict";
const PC = {
  // The session's CSRF token (a meta tag of the page): sent with every state-changing call.
  csrf: document.querySelector('meta[name="csrf-token"]')?.content || "",
  loginIfExpired(r) {
    if (r.status === 401) location.assign("/login?next=" + encodeURIComponent(location.pathname));
  },
  async get(path) {
    const r = await fetch(path, {cache: "no-store", credentials: "same-origin"});
    PC.loginIfExpired(r);
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  },
  async post(path, body) {
    const r = await fetch(path, {method: "POST", credentials: "same-origin",
                                 headers: {"Content-Type": "application/json", "X-CSRF-Token": PC.csrf},
                                 body: JSON.stringify(body)});
    PC.loginIfExpired(r);
    let data; try { data = await r.json(); } catch (e) { data = {reason: "no JSON answer"}; }
    return {ok: r.ok, status: r.status, data};
  },
  ago(iso) {
    if (!iso) return "never";
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  },
  time(iso) { return iso ? new Date(iso).toLocaleString() : "—"; },
  esc(text) {
    return String(text ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  },
  badge(text, cls) { return `<span class="badge ${PC.esc(cls || text)}">${PC.esc(text)}</span>`; },
  detail(d) {
    return Object.entries(d || {}).filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => `${PC.esc(k)}=${PC.esc(v)}`).join(" ");
  },
  live(ok) { const el = document.getElementById("live"); el.className = "live " + (ok ? "on" : "err"); },
  every(ms, fn) {
    const run = async () => { try { await fn(); PC.live(true); } catch (e) { PC.live(false); console.error(e); } };
    run(); return setInterval(run, ms);
  },
};
setInterval(() => { document.getElementById("clock").textContent = new Date().toLocaleTimeString(); }, 1000);
