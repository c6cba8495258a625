/* Station page: summary, live telemetry charts, transactions, events, operation buttons. */
"use strict";
const cpId = document.getElementById("station").dataset.cpId;
const base = "/api/v1/chargepoints/" + encodeURIComponent(cpId);
const SERIES = {t: "#dc2626", rh: "#0891b2", v: "#7c3aed", a: "#ea580c", w: "#2563eb", wh: "#15803d"};
document.getElementById("csv").href = "/api/v1/transactions?format=csv&cp_id=" + encodeURIComponent(cpId);

function card(value, label) { return `<div class="card"><div class="n">${value}</div><div class="l">${PC.esc(label)}</div></div>`; }

async function refreshSummary() {
  const cp = await PC.get(base);
  const conns = cp.connectors.filter(c => c.connector_id > 0);
  document.getElementById("summary").innerHTML =
    card(PC.badge(cp.ocpp.online ? "online" : "offline"), "OCPP · " + PC.ago(cp.ocpp.last_seen))
    + card(PC.badge(cp.telemetry.online ? "online" : "offline"), "telemetry · " + PC.ago(cp.telemetry.last_seen))
    + conns.map(c => card(PC.badge(c.status), "connector " + c.connector_id + (c.error_code && c.error_code !== "NoError" ? " · " + c.error_code : ""))).join("")
    + card(PC.esc(cp.registration || "unregistered"), "registration")
    + card(PC.esc(cp.firmware_version || "—"), PC.esc(cp.model || "firmware"))
    + card(cp.telemetry.lost, "telemetry lost of " + cp.telemetry.received);
}

async function refreshTelemetry() {
  const rows = await PC.get(base + "/telemetry?limit=360");
  for (const [key, color] of Object.entries(SERIES)) {
    const points = rows.filter(r => r[key] !== null && r[key] !== undefined).map(r => [r.ts, r[key]]);
    drawLineChart(document.getElementById("chart-" + key), points, color);
  }
}

async function refreshTables() {
  const [txs, events] = await Promise.all([PC.get(base + "/transactions?limit=20"), PC.get(base + "/events?limit=20")]);
  document.querySelector("#transactions tbody").innerHTML = txs.map(t => `<tr>
    <td>${t.id}</td><td>${t.connector_id}</td><td>${PC.esc(t.id_tag)}</td><td>${PC.time(t.start)}</td>
    <td>${t.active ? PC.badge("active", "Charging") : PC.time(t.stop)}</td><td>${t.energy_wh ?? "—"}</td>
    <td>${PC.esc(t.stop_reason || "")}</td></tr>`).join("") || `<tr><td colspan="7" class="muted">none</td></tr>`;
  document.querySelector("#events tbody").innerHTML = events.map(e => `<tr>
    <td>${PC.time(e.ts)}</td><td>${PC.esc(e.kind)}</td><td>${PC.detail(e.detail)}</td></tr>`).join("");
}

async function activeTransactionId() {
  const txs = await PC.get(base + "/transactions?state=active&limit=1");
  return txs.length ? txs[0].id : null;
}

async function runOperation(spec) {
  const [op, arg] = spec.split(":");
  const connectorId = parseInt(document.getElementById("op-connector").value || "0", 10);
  const idTag = document.getElementById("op-idtag").value || "OPERATOR";
  const payloads = {
    RemoteStartTransaction: () => ({connectorId, idTag}),
    RemoteStopTransaction: async () => ({transactionId: await activeTransactionId()}),
    UnlockConnector: () => ({connectorId}),
    ChangeAvailability: () => ({connectorId, type: arg}),
    TriggerMessage: () => ({requestedMessage: "StatusNotification", connectorId}),
    GetConfiguration: () => ({}), ClearCache: () => ({}), Reset: () => ({type: arg}),
  };
  const out = document.getElementById("op-result");
  const payload = await payloads[op]();
  if (op === "RemoteStopTransaction" && payload.transactionId === null) { out.textContent = "No active transaction."; return; }
  out.textContent = `${op} ${JSON.stringify(payload)} …`;
  const answer = await PC.post(base + "/" + op, payload);
  out.textContent = `${op} → HTTP ${answer.status}\n` + JSON.stringify(answer.ok ? answer.data.result : answer.data, null, 2);
  refreshTables();
}

document.querySelectorAll("button[data-op]").forEach(b => b.addEventListener("click", () => runOperation(b.dataset.op)));
PC.every(2000, async () => { await Promise.all([refreshSummary(), refreshTelemetry(), refreshTables()]); });
