// Small charts drawn on <canvas>: lines over time and bars per label. No library, no network.

import { el } from "./dom.js";

export const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

/** A figure with a caption, a canvas and a legend; draw(series) redraws it.
 *  series: [{name, points: [[x, y], ...]}]; kind "line" (x: time) or "bar" (x: label). */
export function chart(caption, kind = "line", format = (v) => String(v)) {
  const canvas = el("canvas", { role: "img", "aria-label": caption });
  const legend = el("div", { className: "legend" });
  const figure = el("figure", { className: "chart card" }, el("figcaption", {}, caption), canvas, legend);
  return {
    node: figure,
    draw(series) {
      legend.replaceChildren(...series.map((s, i) => el("span", {},
        el("span", { className: `swatch c${i % COLOURS.length}` }), s.name)));
      const last = series.map((s) => `${s.name}: ${s.points.length ? format(s.points[s.points.length - 1][1]) : "none"}`);
      canvas.setAttribute("aria-label", `${caption}. ${last.join("; ")}`);
      (kind === "bar" ? drawBars : drawLines)(canvas, series, format);
    },
  };
}

function setup(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 300;
  const height = canvas.clientHeight || 140;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px 'DejaVu Sans', sans-serif";
  return { ctx, width, height, left: 52, right: width - 8, top: 8, bottom: height - 20 };
}

function axes(g, maxY, format) {
  const { ctx, left, right, top, bottom } = g;
  ctx.strokeStyle = "#d8dee6";
  ctx.fillStyle = "#5b6573";
  ctx.textAlign = "right";
  for (const frac of [0, 0.5, 1]) {
    const y = bottom - frac * (bottom - top);
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(right, y); ctx.stroke();
    ctx.fillText(format(maxY * frac), left - 4, y + 4);
  }
}

/** The smallest 1, 2 or 5 × 10^k at or above the largest value (1 when all are 0). */
function niceMax(values) {
  const max = Math.max(0, ...values.filter((v) => isFinite(v)));
  if (max <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(max));
  return [1, 2, 5, 10].map((m) => m * step).find((nice) => nice >= max);
}

function drawLines(canvas, series, format) {
  const g = setup(canvas);
  const points = series.flatMap((s) => s.points);
  if (!points.length) return;
  const xs = points.map((p) => p[0]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const maxY = niceMax(points.map((p) => p[1]));
  axes(g, maxY, format);
  const { ctx, left, right, top, bottom } = g;
  ctx.textAlign = "left";
  ctx.fillText(new Date(x0).toISOString().slice(11, 19), left, g.height - 4);
  ctx.textAlign = "right";
  ctx.fillText(new Date(x1).toISOString().slice(11, 19), right, g.height - 4);
  series.forEach((s, i) => {
    ctx.strokeStyle = COLOURS[i % COLOURS.length];
    ctx.lineWidth = 2;
    ctx.fillStyle = COLOURS[i % COLOURS.length];
    const at = s.points.filter((p) => isFinite(p[1])).map(([x, y]) =>
      [left + ((x - x0) / (x1 - x0)) * (right - left), bottom - (y / maxY) * (bottom - top)]);
    ctx.beginPath();
    at.forEach(([px, py], j) => (j === 0 ? ctx.moveTo(px, py) : ctx.lineTo(px, py)));
    ctx.stroke();
    // A dot per sample, so a single one shows too.
    for (const [px, py] of at) ctx.fillRect(px - 1.5, py - 1.5, 3, 3);
  });
}

function drawBars(canvas, series, format) {
  const g = setup(canvas);
  const labels = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))];
  if (!labels.length) return;
  const maxY = niceMax(series.flatMap((s) => s.points.map((p) => p[1])));
  axes(g, maxY, format);
  const { ctx, left, right, top, bottom } = g;
  const slot = (right - left) / labels.length;
  const bar = Math.max(2, (slot * 0.8) / series.length);
  labels.forEach((label, k) => {
    series.forEach((s, i) => {
      const point = s.points.find((p) => p[0] === label);
      if (!point) return;
      const h = (point[1] / maxY) * (bottom - top);
      ctx.fillStyle = COLOURS[i % COLOURS.length];
      ctx.fillRect(left + k * slot + slot * 0.1 + i * bar, bottom - h, bar - 1, h);
    });
    if (labels.length <= 12 || k % Math.ceil(labels.length / 12) === 0) {
      ctx.fillStyle = "#5b6573";
      ctx.textAlign = "center";
      ctx.fillText(String(label).slice(-10), left + (k + 0.5) * slot, g.height - 4);
    }
  });
}
