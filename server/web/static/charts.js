/* A small line chart on <canvas>: time on x, one series, auto-scaled y. */
"use strict";
function drawLineChart(canvas, points, color) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  canvas.width = w * ratio; canvas.height = h * ratio;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const left = 44, right = 8, top = 8, bottom = 20;
  ctx.font = "11px system-ui, sans-serif"; ctx.fillStyle = "#6b7280"; ctx.strokeStyle = "#e5e7eb";
  if (!points.length) { ctx.fillText("no data yet", left + 8, h / 2); return; }
  let [x0, x1] = [points[0][0], points[points.length - 1][0]];
  if (x1 === x0) { x0 -= 30; x1 += 30; }
  let y0 = Math.min(...points.map(p => p[1])), y1 = Math.max(...points.map(p => p[1]));
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad;
  const X = x => left + (x - x0) / (x1 - x0) * (w - left - right);
  const Y = y => top + (1 - (y - y0) / (y1 - y0)) * (h - top - bottom);
  for (let i = 0; i <= 4; i++) {
    const v = y0 + (y1 - y0) * i / 4, y = Y(v);
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(w - right, y); ctx.stroke();
    ctx.fillText(Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1), 2, y + 4);
  }
  for (const x of [x0, (x0 + x1) / 2, x1]) {
    const label = new Date(x * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit"});
    const width = ctx.measureText(label).width;
    ctx.fillText(label, Math.min(Math.max(X(x) - width / 2, left), w - right - width), h - 5);
  }
  ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
  points.forEach(([x, y], i) => i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y)));
  ctx.stroke();
  ctx.fillStyle = color;
  const [lx, ly] = points[points.length - 1];
  ctx.beginPath(); ctx.arc(X(lx), Y(ly), 3, 0, 2 * Math.PI); ctx.fill();
}
