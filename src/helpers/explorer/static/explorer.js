// Audience Affinity Explorer front end: fetches the JSON API and draws with the locally served plotly.js.
"use strict";

const state = {segments: [], table: null, heatmapOptions: null, lastLookalike: null, lists: [], sort: {key: "share", desc: true}};
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function fmt(v, digits = 0) {
  return v === null || v === undefined ? "&ndash;" : Number(v).toLocaleString("en-US", {maximumFractionDigits: digits, minimumFractionDigits: digits});
}
function pct(v, digits = 1) { return v === null || v === undefined ? "&ndash;" : fmt(100 * v, digits) + "%"; }
function range(lo, hi, f) { return lo === null || lo === undefined ? "" : `<span class="ci">${f(lo)}&ndash;${f(hi)}</span>`; }
function money(v) { return v === null || v === undefined ? "&ndash;" : "$" + fmt(v, 0); }
function setStatus(msg, isError = false) {
  const s = document.getElementById("status");
  s.textContent = msg;
  s.className = isError ? "error" : "";
}
async function api(url, options) {
  const r = await fetch(url, options);
  const body = await r.json().catch(() => ({error: `HTTP ${r.status}`}));
  if (!r.ok) { throw new Error(body.error || `HTTP ${r.status}`); }
  return body;
}
function tierBadge(tier) {
  if (!tier) { return "<span class='tier neutral'>not reported</span>"; }
  const cls = tier === "sweet spot" ? "sweet" : tier === "de-prioritise" ? "low" : "neutral";
  const text = tier === "sweet spot" ? "concentrate" : tier;
  return `<span class="tier ${cls}">${esc(text)}</span>`;
}
function segColor(segment) { return PALETTE[Number(segment) % PALETTE.length]; }
function valueText(v) {
  if (!v || v.value === null || v.value === undefined) { return "&ndash;"; }
  const f = v.unit && v.unit.startsWith("USD") ? money : (x => fmt(x, 1));
  return `${f(v.value)} ${range(v.low, v.high, f)}`;
}
function actionList(actions) {
  if (!actions || !actions.length) { return "<p class='note'>No trait differs enough from the average to act on.</p>"; }
  return "<ul class='actions'>" + actions.map(a => `<li class="${a.action === "concentrate" ? "go" : "stop"}">${esc(a.text)}` +
    (a.basis ? ` <span class="note">(${esc(a.basis)})</span>` : (a.ci_low !== undefined ? ` <span class="note">(95% interval ${fmt(a.ci_low)}&ndash;${fmt(a.ci_high)})</span>` : "")) + "</li>").join("") + "</ul>";
}

// Angle of segment names under a chart: slanted when each fits the room a category gets (about 6.5 px a
// character at 12 px), else vertical, so that neighbouring names never overlap (ten long persona names do).
function segTickAngle(names, elId, share = 0.8) {
  const room = (document.getElementById(elId).clientWidth || 1000) * share / Math.max(1, names.length);
  const longest = Math.max(...names.map(n => String(n).length)) * 6.5;
  return longest * Math.cos(20 * Math.PI / 180) < room - 8 ? -20 : -90;
}

// ---- tabs ----
function showView(name) {
  document.querySelectorAll(".view").forEach(v => v.classList.toggle("active", v.id === `view-${name}`));
  document.querySelectorAll(".tab").forEach(t => t.classList.toggle("active", t.dataset.view === name));
  if (name === "affinity" && !state.heatmapOptions) { initHeatmap(); }
  if (name === "compare" && !state.simDrawn) { drawSimilarity(); }
  if (name === "questions" && !state.qInit) { initQuestions(); }
  window.dispatchEvent(new Event("resize"));
}

// ---- first screen: the segment table ----
const COLUMNS = [
  {key: "name", title: "Segment", get: r => r.name},
  {key: "share", title: "Share of customers", get: r => r.share.value},
  {key: "weighted_size", title: "Customers", get: r => r.weighted_size},
  {key: "value", title: "Value per customer", get: r => r.value.value ?? -1},
  {key: "churn", title: "Chance of leaving (90 days)", get: r => r.churn ? r.churn.value : -1},
  {key: "traits", title: "What defines them (index)", get: r => r.traits.length ? r.traits[0].index : 0},
];
function drawTable() {
  const t = state.table;
  const col = COLUMNS.find(c => c.key === state.sort.key);
  const rows = [...t.segments].sort((a, b) => {
    const x = col.get(a), y = col.get(b);
    const c = typeof x === "string" ? x.localeCompare(y) : x - y;
    return state.sort.desc ? -c : c;
  });
  const v0 = t.segments[0].value;
  const head = COLUMNS.map(c => `<th class="sortable${c.key === state.sort.key ? " sorted" : ""}" data-key="${c.key}">${esc(c.key === "value" ? `${v0.label} ${v0.unit ? "(" + v0.unit + ")" : ""}` : c.title)}${c.key === state.sort.key ? (state.sort.desc ? " \u25bc" : " \u25b2") : ""}</th>`).join("");
  const body = rows.map(r => `<tr class="seg-row" data-segment="${r.segment}">
      <td class="l"><span class="swatch" style="background:${segColor(r.segment)}"></span>${esc(r.name)}</td>
      <td>${pct(r.share.value)} ${range(r.share.low, r.share.high, x => pct(x))}</td>
      <td>${fmt(r.weighted_size)} <span class="ci">of ${fmt(t.header.weighted_total)}</span></td>
      <td>${valueText(r.value)}</td>
      <td>${r.churn ? `${pct(r.churn.value)} ${range(r.churn.low, r.churn.high, x => pct(x))}` : "<span class='note'>not computed</span>"}</td>
      <td class="l">${r.traits.map(x => `${esc(x.label)} <b>${fmt(x.index)}</b>`).join("; ") || "<span class='note'>no clear trait</span>"}</td></tr>`).join("");
  const el = document.getElementById("seg-table");
  el.innerHTML = `<table class="grid wide" id="segments"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>
    <p class="note">Value: ${esc(v0.source)}. Customers and shares are ${esc(t.header.weighting)}.</p>`;
  el.querySelectorAll("th.sortable").forEach(th => th.addEventListener("click", () => {
    state.sort = {key: th.dataset.key, desc: state.sort.key === th.dataset.key ? !state.sort.desc : th.dataset.key !== "name"};
    drawTable();
  }));
  el.querySelectorAll("tr.seg-row").forEach(tr => tr.addEventListener("click", () => showCard(tr.dataset.segment)));
}

// ---- segment map ----
async function loadMap() {
  const m = await api("/api/segments");
  state.segments = m.segments;
  const maxShare = Math.max(...m.segments.map(s => s.weighted_share));
  const traces = m.segments.map(s => ({
    type: "scatter", mode: "markers", name: `${s.name} (${pct(s.weighted_share, 0)})`, x: [s.x], y: [s.y],
    customdata: [s.segment], hoverinfo: "text",
    hovertext: [`${s.name}<br>${pct(s.weighted_share)} of customers (${fmt(s.weighted_size)})`],
    marker: {size: [s.weighted_share], sizemode: "area", sizeref: 2 * maxShare / (60 ** 2), sizemin: 8,
             color: segColor(s.segment), opacity: 0.8, line: {width: 1, color: "#333"}},
  }));
  // axis titles come wrapped from the server (the run configuration's labels, lines that fit the chart)
  const ny = m.y_label_lines.length, nx = m.x_label_lines.length;
  const layout = {
    title: {text: "How segments differ in behaviour (bubble area = share of customers)", x: 0.02, font: {size: 14}},
    xaxis: {title: {text: m.x_label_lines.map(esc).join("<br>"), font: {size: 12}}, showticklabels: false, zeroline: false,
            showgrid: false, automargin: true},
    yaxis: {title: {text: m.y_label_lines.map(esc).join("<br>"), font: {size: 12}}, showticklabels: false, zeroline: false,
            showgrid: false, automargin: true},
    margin: {t: 40, l: 24 + 16 * ny, r: 10, b: 24 + 16 * nx}, hovermode: "closest", showlegend: true,
    legend: {orientation: "h", y: -0.12, font: {size: 11}, itemclick: false, itemdoubleclick: false, itemsizing: "constant"},
  };
  await Plotly.newPlot("map", traces, layout, {displaylogo: false, responsive: true});
  document.getElementById("map").on("plotly_click", ev => showCard(ev.points[0].customdata));
  const opts = m.segments.map(s => `<option value="${s.segment}">${esc(s.name)}</option>`).join("");
  document.getElementById("ex-segment").innerHTML = opts;
  fillAudienceSelects();
}
function fillAudienceSelects() {
  const segs = state.segments.map(s => `<option value="segment:${s.segment}">${esc(s.name)}</option>`);
  const extra = [];
  if (state.lastLookalike) {
    const l = state.lastLookalike;
    extra.push(`<option value="lookalike:${l.size}">${fmt(l.size)} lookalikes of ${esc(l.seed_name)}</option>`);
  } else if (state.table && state.table.header.has_lookalike_stage) {
    extra.push(`<option value="lookalike:500">500 best lookalikes of the lookalike stage</option>`);
  }
  for (const u of state.lists) { extra.push(`<option value="${esc(u.ref)}">${esc(u.name)} (${fmt(u.n_matched)} customers)</option>`); }
  document.querySelectorAll(".aud-select").forEach((sel, i) => {
    const keep = sel.value;
    sel.innerHTML = [...segs, ...extra].join("");
    if (keep && [...sel.options].some(o => o.value === keep)) { sel.value = keep; }
    else if (i === 1 && sel.options.length > 1) { sel.selectedIndex = 1; }
  });
  document.getElementById("ex-list").innerHTML = state.lists.length ?
    state.lists.map(u => `<option value="${esc(u.ref.split(":")[1])}">${esc(u.name)}</option>`).join("") :
    "<option value=''>(upload a list above)</option>";
}

function demographics(c) {
  return c.demographics.map(d => `<p class="note"><b>${esc(d.label)}</b> (known for ${pct(d.coverage, 0)} of the segment): ` +
    d.rows.map(r => `${esc(r.category)} ${fmt(r.pct_segment, 0)}% <span class="ci">(all: ${fmt(r.pct_base, 0)}%)</span>`).join(", ") + "</p>").join("");
}

async function showCard(segment) {
  setStatus("Loading the segment card...");
  try {
    const c = await api(`/api/segments/${encodeURIComponent(segment)}`);
    const row = state.table ? state.table.segments.find(r => String(r.segment) === String(c.segment)) : null;
    let html = `<h2 id="card-title">${esc(c.name)}</h2>
      <div><span class="kpi">customers<b>${fmt(c.weighted_size)}</b></span>
      <span class="kpi">share of customers<b>${pct(c.weighted_share)}</b>${row ? range(row.share.low, row.share.high, x => pct(x)) : ""}</span>` +
      (row ? `<span class="kpi">${esc(row.value.label)}<b>${valueText(row.value)}</b></span>` : "") + `</div>`;
    if (row) { html += `<h3>What to do</h3>${actionList(row.actions)}`; }
    html += `<h3>Behaviour (per customer)</h3><table class="grid"><tr><th>activity</th><th>average</th><th>typical (median)</th><th>all customers</th><th>index</th><th>action</th></tr>` +
      c.media.map(r => `<tr><td class="l">${esc(r.label)}${r.unit ? " (" + esc(r.unit) + ")" : ""}</td><td>${fmt(r.mean_segment, 1)}</td><td>${fmt(r.median_segment, 1)}</td>
        <td>${fmt(r.mean_base, 1)}</td><td>${fmt(r.index)}${r.significant ? "*" : ""} ${range(r.ci_low, r.ci_high, x => fmt(x))}</td><td>${tierBadge(r.tier)}</td></tr>`).join("") +
      `</table><h3>Who they are (% of segment, all customers in brackets)</h3>${demographics(c)}<h3>Churn risk and value</h3>`;
    if (c.churn && c.churn.churn_prob_90d_active !== undefined && c.churn.churn_prob_90d_active !== null) {
      html += `<p id="card-churn">Chance that an active customer leaves in the next 90 days: <b>${pct(c.churn.churn_prob_90d_active)}</b>` +
        (row && row.churn ? ` ${range(row.churn.low, row.churn.high, x => pct(x))}` : "") +
        `; already left: ${pct(c.churn.churned_share)}` +
        (c.churn.expected_value_usd !== undefined ? `; expected remaining value per customer: <b>${money(c.churn.expected_value_usd)}</b>` : "") + ".</p>";
    } else {
      html += "<p class='note' id='card-churn'>Churn risk is not computed in this run (the churn stage has not run).</p>";
    }
    if (c.value && c.value.value !== null) {
      html += `<p id="card-value">${esc(c.value.label)}: <b>${valueText(c.value)}</b> <span class="note">(${esc(c.value.source)})</span></p>`;
    }
    html += "<p class='note'>* a real difference, not chance (false-discovery rate 5%). Ranges are 95% intervals.</p>";
    const card = document.getElementById("card");
    card.innerHTML = html;
    card.dataset.segment = c.segment;
    setStatus(`Segment card: ${c.name}`);
  } catch (e) { setStatus(e.message, true); }
}

// ---- compare and similarity ----
async function runCompare() {
  const a = document.getElementById("cmp-a").value, b = document.getElementById("cmp-b").value;
  setStatus("Comparing...");
  try {
    const c = await api(`/api/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
    const side = s => `<td>${fmt(s.weighted_size)} <span class="ci">(${fmt(s.n_users)} in the data)</span></td>`;
    let html = `<table class="grid" id="cmp-table"><tr><th></th><th>${esc(c.a.name)}</th><th>${esc(c.b.name)}</th></tr>
      <tr><td class="l">customers</td>${side(c.a)}${side(c.b)}</tr>
      <tr><td class="l">${esc(c.a.value.label)}</td><td>${valueText(c.a.value)}</td><td>${valueText(c.b.value)}</td></tr>` +
      (c.a.churn ? `<tr><td class="l">chance of leaving (90 days)</td><td>${pct(c.a.churn.value)} ${range(c.a.churn.low, c.a.churn.high, x => pct(x))}</td><td>${pct(c.b.churn.value)} ${range(c.b.churn.low, c.b.churn.high, x => pct(x))}</td></tr>` : "") +
      "</table>";
    html += `<h3>Where they really differ (${fmt(c.n_significant)} of ${fmt(c.n_tested)} traits; largest first)</h3>`;
    html += c.differences.length ? "<table class='grid' id='cmp-diffs'><tr><th>trait</th><th>" + esc(c.a.name) + "</th><th>" + esc(c.b.name) + "</th><th>first vs second (index)</th></tr>" +
      c.differences.map(d => `<tr><td class="l">${esc(d.label)}</td><td>${d.kind === "share" ? pct(d.a, 0) : fmt(d.a, 1)}</td><td>${d.kind === "share" ? pct(d.b, 0) : fmt(d.b, 1)}</td><td>${fmt(d.ratio)}</td></tr>`).join("") + "</table>"
      : "<p class='note'>No trait differs by more than chance.</p>";
    if (c.overlap) { html += `<p class="note">${fmt(c.overlap)} customers are in both audiences.</p>`; }
    html += `<p class="note">Method: ${esc(c.method)}.</p>`;
    document.getElementById("cmp-result").innerHTML = html;
    setStatus(`Compared ${c.a.name} with ${c.b.name}`);
  } catch (e) { setStatus(e.message, true); }
}
async function drawSimilarity() {
  try {
    const s = await api("/api/similarity");
    state.simDrawn = true;
    const text = s.similarity.map(r => r.map(v => fmt(v)));
    Plotly.newPlot("sim-chart", [{type: "heatmap", z: s.similarity, x: s.names, y: s.names, text: text, texttemplate: "%{text}",
      colorscale: "Blues", zmin: 0, zmax: 100, hovertemplate: "%{y} and %{x}: %{z:.0f} of 100<extra></extra>",
      colorbar: {title: {text: "how alike (0-100)"}}}],
      {title: {text: "How alike the segments behave (100 = identical, 0 = most different pair)", font: {size: 14}},
       xaxis: {title: {text: "segment", standoff: 12}, automargin: true, tickangle: segTickAngle(s.names, "sim-chart", 0.6)},
       yaxis: {title: {text: "segment"}, automargin: true, autorange: "reversed"},
       margin: {t: 40, l: 10, r: 10, b: 10}}, {displaylogo: false, responsive: true});
  } catch (e) { setStatus(e.message, true); }
}

// ---- affinity heatmap ----
async function initHeatmap() {
  const first = await api("/api/affinity");
  state.heatmapOptions = first;
  document.getElementById("aff-view").innerHTML = first.views.map(v => `<option value="${esc(v)}">${esc(first.view_labels[v] || v)}</option>`).join("");
  setIndexOptions("channels");
  drawHeatmap(first);
}
const INDEX_LABELS = {intensity: "time or amount per customer", composition: "share of all activity", share: "share of the segment"};
function setIndexOptions(view) {
  const types = view === "channels" ? state.heatmapOptions.channel_index_types : ["share"];
  document.getElementById("aff-index").innerHTML = types.map(t => `<option value="${esc(t)}">${esc(INDEX_LABELS[t] || t)}</option>`).join("");
}
async function reloadHeatmap(changedView) {
  const view = document.getElementById("aff-view").value;
  if (changedView) { setIndexOptions(view); }
  const it = document.getElementById("aff-index").value;
  try {
    const h = await api(`/api/affinity?view=${encodeURIComponent(view)}&index_type=${encodeURIComponent(it)}`);
    drawHeatmap(h);
  } catch (e) { setStatus(e.message, true); }
}
function drawHeatmap(h) {
  // log2(index/100) so 50 and 200 are equally far from 100; clipped at 25..400
  const zc = h.z.map(r => r.map(v => v === null ? null : Math.max(-2, Math.min(2, Math.log2(v / 100)))));
  const lo = Math.log2(h.thresholds.low / 100), hi = Math.log2(h.thresholds.high / 100);
  const pos = v => (v + 2) / 4;
  const colorscale = [[0, "#b2182b"], [pos(lo), "#f4a6a6"], [pos(lo), "#f2f2f2"], [pos(hi), "#f2f2f2"],
                      [pos(hi), "#a6dba0"], [1, "#1b7837"]];
  const text = h.z.map((r, i) => r.map((v, j) => v === null ? "" :
    `${Math.round(v)}${h.significant[i][j] ? "*" : ""}${h.base_flag[i][j] === "caution" ? "\u2020" : ""}`));
  const trace = {type: "heatmap", z: zc, x: h.segment_names, y: h.attribute_labels, text: text, texttemplate: "%{text}",
    hovertext: h.hover, hoverinfo: "text", colorscale: colorscale, zmin: -2, zmax: 2, xgap: 2, ygap: 2,
    colorbar: {title: {text: "index<br>(100 = average)"}, tickvals: [-2, -1, lo, 0, hi, 1, 2], ticktext: ["25", "50", String(h.thresholds.low), "100", String(h.thresholds.high), "200", "400"]}};
  const layout = {title: {text: `${h.view_label}: index by segment (${INDEX_LABELS[h.index_type] || h.index_type})`, font: {size: 14}},
    xaxis: {title: {text: "segment", standoff: 12}, automargin: true, showgrid: false, tickangle: segTickAngle(h.segment_names, "heatmap", 0.7)},
    yaxis: {title: {text: h.view === "channels" ? "activity" : h.view_label}, automargin: true, autorange: "reversed", showgrid: false},
    plot_bgcolor: "#555", margin: {t: 50, l: 10, r: 10, b: 10}};
  Plotly.newPlot("heatmap", [trace], layout, {displaylogo: false, responsive: true});
  setStatus(`Affinity: ${h.view_label}; ${h.z.flat().filter(v => v === null).length} cells with too few customers`);
  if (state.table) {
    document.getElementById("aff-actions").innerHTML = "<h3>What to do, segment by segment</h3>" + state.table.segments.map(r =>
      `<div class="seg-actions"><b><span class="swatch" style="background:${segColor(r.segment)}"></span>${esc(r.name)}</b>${actionList(r.actions)}</div>`).join("");
  }
}

// ---- lookalikes: the lookalike stage's audience (read from its scores; the Explorer fits no model) ----
async function runLookalike() {
  const size = document.getElementById("la-size").value;
  setStatus("Reading the lookalike stage's audience...");
  document.getElementById("la-run").disabled = true;
  try {
    const r = await api(`/api/lookalike?size=${encodeURIComponent(size)}`);
    state.lastLookalike = r;
    fillAudienceSelects();
    const share = r.lift_share ? pct(r.lift_share, 0) : "";
    const found = r.evaluation && r.evaluation.evaluation_task === "prospective"
      ? "customers who reached the seed's outcome in the next period" : "seed customers hidden from its model";
    document.getElementById("la-result").innerHTML = `<h2 id="la-title">Customers like ${esc(r.seed_name)}</h2>
      <span class="kpi">customers in the seed<b>${fmt(r.seed_size)}</b></span>
      <span class="kpi">lookalikes<b id="la-out-size">${fmt(r.size)}</b></span>
      <span class="kpi">customers they stand for<b>${fmt(r.weighted_size)}</b></span>
      <span class="kpi">better than a random pick<b id="la-lift">${r.lift === null ? "not recorded" : fmt(r.lift, 2) + "x"}</b></span>
      <p class="note">The lookalike stage ranked ${fmt(r.max_size)} candidates by how much they resemble the seed; these are
        its ${fmt(r.size)} best. "Better than a random pick": in the stage's test, ${found} turned up this many times
        more often among the best ${share} of candidates than in a random draw (1x = no better). Lookalikes never
        include the seed's own customers.</p>
      <p class="note">Which segments the lookalikes come from: ` + r.segment_mix.map(m => `${esc(m.segment_name)} ${pct(m.share, 0)}`).join(", ") + `</p>
      <p class="note">Compare them with a segment, or export them, in the next tabs.</p>`;
    const feats = r.profile.map(p => p.label);
    const bar = (key, name) => ({type: "bar", name: name, x: feats, y: r.profile.map(p => p[key]),
      hovertemplate: "%{x}: index %{y:.0f}<extra>" + name + "</extra>"});
    Plotly.newPlot("la-chart", [bar("seed_index", "the seed"), bar("lookalike_index", "the lookalikes")],
      {title: {text: "The seed and its lookalikes against the average customer (100)", font: {size: 14}}, barmode: "group",
       xaxis: {title: {text: "behaviour"}, automargin: true}, yaxis: {title: {text: "index (100 = average customer)"}},
       legend: {orientation: "h", y: 1.08},
       shapes: [{type: "line", xref: "paper", x0: 0, x1: 1, y0: 100, y1: 100, line: {dash: "dot", color: "#555"}}],
       margin: {t: 60, l: 70, r: 20, b: 60}}, {displaylogo: false, responsive: true});
    setStatus(`${fmt(r.size)} lookalikes of ${r.seed_name}`);
  } catch (e) {
    document.getElementById("la-result").innerHTML = `<p class="note" id="la-missing">${esc(e.message)}</p>`;
    setStatus(e.message, true);
  }
  finally { document.getElementById("la-run").disabled = false; }
}

// ---- any audience: uploaded lists ----
async function uploadList() {
  const ids = document.getElementById("up-ids").value.split(/\r?\n/).map(s => s.trim()).filter(Boolean);
  const name = document.getElementById("up-name").value;
  try {
    const r = await api("/api/lists", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({name: name, ids: ids})});
    state.lists.push(r);
    fillAudienceSelects();
    const p = await api(`/api/audience?ref=${encodeURIComponent(r.ref)}`);
    document.getElementById("up-result").innerHTML = `<h3 id="up-title">${esc(p.name)}: ${fmt(r.n_matched)} customers found` +
      (r.n_unmatched ? ` (${fmt(r.n_unmatched)} ids are not customers of this data)` : "") + `</h3>
      <p>${pct(p.share.value)} of customers ${range(p.share.low, p.share.high, x => pct(x))}; ${esc(p.value.label)} ${valueText(p.value)}</p>
      ${actionList(p.actions)}
      <p class="note">Segments in the list: ${p.segment_mix.map(m => `${esc(m.name)} ${pct(m.share, 0)}`).join(", ")}. Compare it in the Compare tab or export it below.</p>`;
    setStatus(`List "${r.name}": ${fmt(r.n_matched)} customers`);
  } catch (e) { setStatus(e.message, true); }
}

// ---- questions ----
async function initQuestions() {
  state.qInit = true;
  try {
    const o = await api("/api/questions/options");
    document.getElementById("q-topic").innerHTML = "<option value=''>(any topic)</option>" +
      o.topics.map(t => `<option value="${esc(t.value)}">${esc(t.label)}</option>`).join("");
    document.getElementById("q-filters").innerHTML = Object.entries(o.filters).map(([col, f]) =>
      `<label>${esc(f.label)} <select class="q-filter" data-col="${esc(col)}"><option value="">(all)</option>` +
      f.values.map(v => `<option value="${esc(v)}">${esc(v.replace(/_/g, " "))}</option>`).join("") + "</select></label>").join("");
  } catch (e) {
    document.getElementById("q-controls").style.display = "none";
    document.getElementById("q-result").innerHTML = `<p class="note" id="q-missing">${esc(e.message)}</p>`;
  }
}
async function runQuestion() {
  const q = new URLSearchParams();
  const topic = document.getElementById("q-topic").value, kw = document.getElementById("q-keyword").value.trim();
  if (topic) { q.set("topic", topic); }
  if (kw) { q.set("keyword", kw); }
  document.querySelectorAll(".q-filter").forEach(s => { if (s.value) { q.set(s.dataset.col, s.value); } });
  setStatus("Looking for them...");
  try {
    const p = await api(`/api/questions?${q.toString()}`);
    state.lists.push({ref: p.ref, name: p.name, n_matched: p.n_users});
    fillAudienceSelects();
    const regions = p.regions.length ? "<h3>Where they live (share of each region's customers)</h3><table class='grid' id='q-regions'><tr><th>region</th><th>share talking about it</th><th>customers in the region</th></tr>" +
      p.regions.map(r => `<tr><td class="l">${esc(r.region)}</td><td>${pct(r.value)} ${range(r.low, r.high, x => pct(x))}</td><td>${fmt(r.n_customers)}${r.base_flag === "caution" ? " \u2020" : ""}</td></tr>`).join("") +
      "</table><p class='note'>\u2020 few customers in the region: read with caution; regions with too few are not shown.</p>"
      : "<p class='note'>This data has no region for its customers.</p>";
    document.getElementById("q-result").innerHTML = `<h3 id="q-title">${fmt(p.n_users)} customers ${esc(p.name)}</h3>
      <p>${pct(p.share.value)} of customers ${range(p.share.low, p.share.high, x => pct(x))}; ${esc(p.value.label)} ${valueText(p.value)}</p>
      <h3>What sets them apart</h3>${actionList(p.actions)}${regions}
      <p class="note">Segments among them: ${p.segment_mix.map(m => `${esc(m.name)} ${pct(m.share, 0)}`).join(", ")}. The audience is now
      in the Compare, Plan and export lists.</p>`;
    setStatus(`${fmt(p.n_users)} customers ${p.name}`);
  } catch (e) { setStatus(e.message, true); document.getElementById("q-result").innerHTML = `<p class="error">${esc(e.message)}</p>`; }
}

// ---- plan ----
async function runPlan() {
  const aud = document.getElementById("plan-aud").value, budget = document.getElementById("plan-budget").value;
  const out = document.getElementById("plan-result");
  setStatus("Planning...");
  try {
    const r = await api(`/api/plan?audience=${encodeURIComponent(aud)}&budget=${encodeURIComponent(budget)}`);
    const rng = (row, k, f) => row[k + "_low"] === undefined || row[k + "_low"] === null ? "" : range(row[k + "_low"], row[k + "_high"], f);
    out.innerHTML = `<h3 id="plan-title">${esc(r.audience)}: ${money(r.budget)}</h3><p>${esc(r.summary)}</p>
      <table class="grid" id="plan-table"><tr><th>channel</th><th>spend</th><th>share</th><th>share of the audience reached</th><th>times each person sees it (average)</th><th>expected extra conversions</th></tr>` +
      r.table.map(row => `<tr><td class="l">${esc(row.channel_label || row.channel)}</td><td>${money(row.spend_usd)}</td><td>${pct(row.share, 0)}</td>
        <td>${pct(row.reach, 0)} ${rng(row, "reach", x => pct(x, 0))}</td><td>${fmt(row.frequency, 1)}</td><td>${fmt(row.conversions)} ${rng(row, "conversions", x => fmt(x))}</td></tr>`).join("") +
      "</table><p class='note'>Ranges are 95% intervals. The plan comes from the media planning stage's response model of this data.</p>";
    setStatus(`Plan for ${r.audience}`);
  } catch (e) {
    out.innerHTML = `<p class="note" id="plan-missing">${esc(e.message)}</p>`;
    setStatus(e.message, true);
  }
}

// ---- export ----
async function runExport() {
  const kind = document.getElementById("ex-kind").value;
  const body = {kind: kind};
  if (kind === "list") { body.list = document.getElementById("ex-list").value; }
  else if (kind === "lookalike") { body.size = document.getElementById("ex-size").value; }
  else { body.segment = document.getElementById("ex-segment").value; }
  setStatus("Creating the export...");
  try {
    const r = await api("/api/export", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const names = {csv: "CSV file", parquet: "Parquet file", manifest: "manifest"};
    const links = Object.entries(r.downloads).map(([k, u]) => `<a class="download" id="download-${esc(k)}" href="${esc(u)}" download>download the ${esc(names[k] || k)}</a>`).join(" &middot; ");
    document.getElementById("ex-result").innerHTML = `<h2 id="ex-title">Export ready: ${fmt(r.n_users)} customers</h2>
      <p>${links}</p><details><summary>What the manifest records</summary><pre>${esc(JSON.stringify(r.manifest, null, 2))}</pre></details>`;
    setStatus(`Export ready: ${fmt(r.n_users)} customers`);
  } catch (e) {
    document.getElementById("ex-result").innerHTML = `<p class="error" id="ex-error">${esc(e.message)}</p>`;
    setStatus(e.message, true);
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  document.querySelectorAll(".tab").forEach(t => t.addEventListener("click", () => showView(t.dataset.view)));
  document.getElementById("aff-view").addEventListener("change", () => reloadHeatmap(true));
  document.getElementById("aff-index").addEventListener("change", () => reloadHeatmap(false));
  document.getElementById("la-run").addEventListener("click", runLookalike);
  document.getElementById("ex-run").addEventListener("click", runExport);
  document.getElementById("cmp-run").addEventListener("click", runCompare);
  document.getElementById("up-run").addEventListener("click", uploadList);
  document.getElementById("plan-run").addEventListener("click", runPlan);
  document.getElementById("q-run").addEventListener("click", runQuestion);
  try {
    state.table = await api("/api/table");
    drawTable();
    await loadMap();
    const largest = [...state.table.segments].sort((a, b) => b.share.value - a.share.value)[0];
    await showCard(largest.segment);
    setStatus("Ready: pick a segment in the table or on the map.");
    document.body.dataset.ready = "1";
  } catch (e) { setStatus(e.message, true); }
});
