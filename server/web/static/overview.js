/* Fleet overview: counts by status, presence, last seen; refreshed every 2 s. */
"use strict";
function card(n, label) { return `<div class="card"><div class="n">${n}</div><div class="l">${PC.esc(label)}</div></div>`; }

async function refresh() {
  const [cps, events] = await Promise.all([PC.get("/api/v1/chargepoints"), PC.get("/api/v1/events?limit=15")]);
  const online = cps.filter(c => c.ocpp.online).length;
  const byStatus = {};
  for (const cp of cps) for (const c of cp.connectors) if (c.connector_id > 0) byStatus[c.status] = (byStatus[c.status] || 0) + 1;
  let counts = card(cps.length, "charge points") + card(online, "OCPP online") + card(cps.length - online, "OCPP offline")
    + card(cps.filter(c => c.telemetry.online).length, "telemetry online");
  for (const [status, n] of Object.entries(byStatus).sort()) counts += card(n, status);
  document.getElementById("counts").innerHTML = counts;

  document.querySelector("#fleet tbody").innerHTML = cps.map(cp => `<tr data-cp-id="${PC.esc(cp.id)}">
    <td><a href="/stations/${encodeURIComponent(cp.id)}">${PC.esc(cp.id)}</a><div class="muted">${PC.esc(cp.description || "")}</div></td>
    <td>${PC.badge(cp.ocpp.online ? "online" : "offline")}</td>
    <td>${PC.badge(cp.telemetry.online ? "online" : "offline")}</td>
    <td>${PC.esc(cp.registration || "unregistered")}</td>
    <td>${cp.connectors.filter(c => c.connector_id > 0).map(c => `${c.connector_id}: ${PC.badge(c.status)}`).join(" ") || "—"}</td>
    <td title="${PC.esc(cp.ocpp.last_seen || "")}">${PC.ago(cp.ocpp.last_seen || cp.telemetry.last_seen)}</td>
    <td>${PC.esc([cp.model, cp.firmware_version].filter(Boolean).join(" / ") || "—")}</td>
    <td>${cp.telemetry.lost} lost / ${cp.telemetry.received} received</td></tr>`).join("")
    || `<tr><td colspan="8" class="muted">No charge point yet: point one at the OCPP endpoint.</td></tr>`;

  document.querySelector("#events tbody").innerHTML = events.map(e => `<tr>
    <td title="${PC.esc(e.ts)}">${PC.time(e.ts)}</td><td>${PC.esc(e.cp_id || "")}</td>
    <td>${PC.esc(e.kind)}</td><td>${PC.detail(e.detail)}</td></tr>`).join("");
}
PC.every(2000, refresh);
