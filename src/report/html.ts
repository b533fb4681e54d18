// report.html: one self-contained page (inline CSS and SVG, no scripts from the network): per-layer sparsity chart,
// loss curve, perplexities (dense / pruned / retrained), task accuracies, timings, export sizes, the recipe.
export interface ReportInput {
  name: string;
  results: Record<string, unknown>;
  recipe: unknown;
  layers: { name: string; sparsity: number }[];
  loss: { step: number; loss: number }[];
}

const esc = (s: unknown) =>
  String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c] as string);
/** Scientific notation for errors that span decades (an MSE of 1e-5 would print as 0.0000). */
const sci = (v: unknown) => (typeof v === "number" ? v.toExponential(3) : v);
const fmt = (v: unknown, d = 4) =>
  typeof v === "number"
    ? Number.isInteger(v)
      ? String(v)
      : v.toFixed(d)
    : v === undefined || v === null
      ? "–"
      : esc(v);

function barChart(layers: { name: string; sparsity: number }[]): string {
  const W = 760;
  const H = 220;
  const n = Math.max(layers.length, 1);
  const bw = (W - 60) / n;
  const bars = layers
    .map((l, i) => {
      const h = l.sparsity * (H - 40);
      return `<rect class="bar" x="${(50 + i * bw).toFixed(1)}" y="${(H - 20 - h).toFixed(1)}" width="${Math.max(bw - 1, 1).toFixed(1)}" height="${h.toFixed(1)}"><title>${esc(l.name)}: ${l.sparsity.toFixed(4)}</title></rect>`;
    })
    .join("");
  const ticks = [0, 0.25, 0.5, 0.75, 1]
    .map((t) => `<text x="44" y="${(H - 20 - t * (H - 40) + 4).toFixed(1)}" text-anchor="end">${t}</text>`)
    .join("");
  return `<svg id="sparsity-chart" data-points="${layers.length}" viewBox="0 0 ${W} ${H}" width="100%"><line x1="50" y1="${H - 20}" x2="${W - 10}" y2="${H - 20}" stroke="#888"/>${ticks}${bars}<text x="${W / 2}" y="${H - 4}" text-anchor="middle">prunable linears (block order)</text></svg>`;
}

function lineChart(points: { step: number; loss: number }[]): string {
  const W = 760;
  const H = 240;
  if (!points.length)
    return `<svg id="loss-chart" data-points="0" viewBox="0 0 ${W} ${H}" width="100%"><text x="20" y="40">no training</text></svg>`;
  const xs = points.map((p) => p.step);
  const ys = points.map((p) => p.loss);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const X = (x: number) => 50 + ((x - x0) / Math.max(x1 - x0, 1)) * (W - 70);
  const Y = (y: number) => H - 30 - ((y - y0) / Math.max(y1 - y0, 1e-9)) * (H - 50);
  const path = points.map((p) => `${X(p.step).toFixed(1)},${Y(p.loss).toFixed(1)}`).join(" ");
  return `<svg id="loss-chart" data-points="${points.length}" viewBox="0 0 ${W} ${H}" width="100%"><polyline fill="none" stroke="#2563eb" stroke-width="1.5" points="${path}"/><text x="44" y="${Y(y1) + 4}" text-anchor="end">${y1.toFixed(2)}</text><text x="44" y="${Y(y0) + 4}" text-anchor="end">${y0.toFixed(2)}</text><text x="${W / 2}" y="${H - 6}" text-anchor="middle">optimizer step (1…${x1})</text></svg>`;
}

function table(head: string[], rows: unknown[][]): string {
  return `<table><tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr>${rows.map((r) => `<tr>${r.map((c) => `<td>${fmt(c)}</td>`).join("")}</tr>`).join("")}</table>`;
}

export function renderReport(r: ReportInput): string {
  const res = r.results as Record<string, Record<string, unknown>>;
  const ppl = (res.perplexity ?? {}) as Record<string, Record<string, number>>;
  const sets = [...new Set(Object.values(ppl).flatMap((v) => Object.keys(v ?? {})))];
  const pplRows = sets.map((s) => [s, ppl.dense?.[s], ppl.pruned?.[s], ppl.retrained?.[s]]);
  const tasks = (res.tasks ?? {}) as Record<string, Record<string, { acc: number; acc_norm?: number }>>;
  const tnames = [...new Set(Object.values(tasks).flatMap((v) => Object.keys(v ?? {})))];
  const taskRows = tnames.map((t) => [
    t,
    tasks.dense?.[t]?.acc,
    tasks.pruned?.[t]?.acc,
    tasks.retrained?.[t]?.acc,
    tasks.retrained?.[t]?.acc_norm,
  ]);
  const timings = Object.entries((res.stages ?? {}) as Record<string, { seconds?: number; peak_rss_mb?: number }>).map(
    ([k, v]) => [k, v.seconds, v.peak_rss_mb],
  );
  const exp = res.export as Record<string, number | string> | undefined;
  const train = res.retrain as Record<string, number> | undefined;
  const blocks = ((res.retrain as { blocks?: unknown } | undefined)?.blocks ?? []) as {
    block: number;
    mse_before: number;
    mse_after: number;
    trainable: number;
  }[];
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>perp report: ${esc(r.name)}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;max-width:820px;margin:24px auto;padding:0 16px;color:#111}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f4f6}
td:first-child,th:first-child{text-align:left}.bar{fill:#f59e0b}svg text{font-size:11px;fill:#333}
pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px}.kpi{display:inline-block;margin-right:24px}
</style></head><body>
<h1>perp report — ${esc(r.name)}</h1>
<p><span class="kpi">model <b>${esc(res.model ?? "")}</b></span><span class="kpi">sparsity <b>${fmt((res.prune as Record<string, number> | undefined)?.sparsity)}</b></span><span class="kpi">trainable <b>${fmt(train?.trainable_params)}</b> (${fmt(train?.trainable_pct, 3)}%)</span></p>
<h2>Perplexity</h2>${table(["dataset", "dense", "pruned", "retrained"], pplRows)}
<h2>Zero-shot accuracy</h2>${taskRows.length ? table(["task", "dense acc", "pruned acc", "retrained acc", "retrained acc_norm"], taskRows) : "<p>no tasks</p>"}
<h2>Per-layer sparsity</h2>${barChart(r.layers)}
<h2>Training loss</h2>${lineChart(r.loss)}
${train ? table(["trainable params", "% of model", "steps", "loss first 10", "loss last 10", "tokens/s"], [[train.trainable_params, train.trainable_pct, train.steps, train.loss_first10, train.loss_last10, train.tokens_per_s]]) : ""}
${blocks.length ? `<h2>Reconstruction (MSE against the dense block, per block)</h2>${table(["block", "before", "after", "trainable"], [...blocks.map((b) => [b.block, sci(b.mse_before), sci(b.mse_after), b.trainable]), ["sum", sci(train?.reconstruction_error_initial), sci(train?.reconstruction_error_final), ""]])}` : ""}
<h2>Export</h2>${exp?.compressed_skipped ? `<p>compressed export skipped: ${esc(String(exp.compressed_skipped))}</p>` : exp?.format ? table(["format", "dense bytes", "compressed bytes", "ratio"], [[exp.format, exp.dense_bytes, exp.compressed_bytes, Number(exp.compressed_bytes) / Number(exp.dense_bytes)]]) : "<p>not exported</p>"}
<h2>Timings</h2>${table(["stage", "seconds", "peak RSS (MB)"], timings)}
<h2>Recipe</h2><pre>${esc(JSON.stringify(r.recipe, null, 2))}</pre>
<p style="color:#666;font-size:12px">generated by perp; self-contained, no network.</p>
</body></html>
`;
}
