// Audience Affinity Explorer front end: fetches the JSON API and draws with the locally served plotly.js.
"use strict";

const state = {segments: [], heatmapOptions: null, lastLookalike: null};

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function fmt(v, digits = 0) {
  return v === null || v === undefined ? "&ndash;" : Number(v).toLocaleString("en-US", {maximumFractionDigits: digits, minimumFractionDigits: digits});
}
function pct(v, digits = 1) { return v === null || v === undefined ? "&ndash;" : fmt(100 * v, digits) + "%"; }
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
  if (!tier) { return "<span class='tier neutral'>suppressed</span>"; }
  const cls = tier === "sweet spot" ? "sweet" : tier === "de-prioritise" ? "low" : "neutral";
  return `<span class="tier ${cls}">${esc(tier)}</span>`;
}

// ---- tabs ----
function showView(name) {
  document.querySelectorAll(".view").forEach(v => v.classList.toggle("active", v.id === `view-${name}`));
  document.querySelectorAll(".tab").forEach(t => t.classList.toggle("active", t.dataset.view === name));
  if (name === "affinity" && !state.heatmapOptions) { initHeatmap(); }
  window.dispatchEvent(new Event("resize"));
}

// ---- segment map ----
async function loadMap() {
  const m = await api("/api/segments");
  state.segments = m.segments;
  const maxSize = Math.max(...m.segments.map(s => s.weighted_size));
  const trace = {
    type: "scatter", mode: "markers+text", x: m.segments.map(s => s.x), y: m.segments.map(s => s.y),
    text: m.segments.map(s => s.name), textposition: "top center", customdata: m.segments.map(s => s.segment),
    hovertext: m.segments.map(s => `${s.name}<br>${fmt(s.weighted_size)} weighted users (${pct(s.weighted_share)})<br>${fmt(s.n_users)} panel members`),
    hoverinfo: "text",
    marker: {size: m.segments.map(s => s.weighted_size), sizemode: "area", sizeref: 2 * maxSize / (70 ** 2),
             sizemin: 6, color: m.segments.map(s => s.segment), colorscale: "Viridis", opacity: 0.75,
             line: {width: 1, color: "#333"}},
  };
  const layout = {
    title: {text: "Segment map (bubble area = weighted audience)", x: 0.02},
    xaxis: {title: {text: m.x_label + " [SD]"}, zeroline: true},
    yaxis: {title: {text: m.y_label + " [SD]", font: {size: 11}}, zeroline: true},
    margin: {t: 50, l: 70, r: 20, b: 60}, showlegend: false, hovermode: "closest",
  };
  await Plotly.newPlot("map", [trace], layout, {displaylogo: false, responsive: true});
  document.getElementById("map").on("plotly_click", ev => showCard(ev.points[0].customdata));
  const list = document.getElementById("segment-list");
  list.innerHTML = m.segments.map(s => `<button class="seg-btn" data-segment="${s.segment}">${esc(s.name)}</button>`).join("");
  list.querySelectorAll("button").forEach(b => b.addEventListener("click", () => showCard(b.dataset.segment)));
  for (const id of ["la-segment", "ex-segment"]) {
    document.getElementById(id).innerHTML = m.segments.map(s => `<option value="${s.segment}">${s.segment}: ${esc(s.name)}</option>`).join("");
  }
}

function attrTable(rows) {
  if (!rows.length) { return "<p class='note'>none significant</p>"; }
  return "<table class='grid'><tr><th>attribute</th><th>index</th><th>95% CI</th><th>% of segment</th><th>q</th><th>tier</th></tr>" +
    rows.map(r => `<tr><td class="l">${esc(r.family)} = ${esc(r.attribute)}${r.base_flag === "caution" ? " &dagger;" : ""}</td>
      <td>${fmt(r.index)}${r.significant ? "*" : ""}</td><td>${fmt(r.ci_low)}&ndash;${fmt(r.ci_high)}</td>
      <td>${fmt(r.vertical_pct, 1)}</td><td>${Number(r.q_value).toExponential(1)}</td><td>${tierBadge(r.tier)}</td></tr>`).join("") + "</table>";
}

function profileText(profile) {
  // the persona text of segment_profiles.csv (notebook 04), when it has one
  if (!profile) { return ""; }
  const parts = ["over_represented", "under_represented"].filter(k => typeof profile[k] === "string")
    .map(k => `<p class="note"><b>${esc(k.replace("_", " "))}</b> (segment_profiles.csv): ${esc(profile[k])}</p>`);
  return parts.join("");
}

async function showCard(segment) {
  setStatus("Loading persona card...");
  try {
    const c = await api(`/api/segments/${encodeURIComponent(segment)}`);
    let html = `<h2 id="card-title">${esc(c.name)}</h2>
      <div><span class="kpi">panel members<b>${fmt(c.n_users)}</b></span>
      <span class="kpi">weighted audience<b>${fmt(c.weighted_size)}</b></span>
      <span class="kpi">share of customers<b>${pct(c.weighted_share)}</b></span></div>
      <h3>Media consumption (minutes per day)</h3>
      <table class="grid"><tr><th>channel</th><th>mean</th><th>median</th><th>all customers (mean)</th><th>index</th><th>tier</th></tr>` +
      c.media.map(r => `<tr><td class="l">${esc(r.label)}</td><td>${fmt(r.mean_segment, 1)}</td><td>${fmt(r.median_segment, 1)}</td>
        <td>${fmt(r.mean_base, 1)}</td><td>${fmt(r.index)}${r.significant ? "*" : ""}</td><td>${tierBadge(r.tier)}</td></tr>`).join("") +
      `</table>` + profileText(c.profile) + `<h3>Defining attributes (over-indexed)</h3>${attrTable(c.defining.over)}
      <h3>Under-indexed</h3>${attrTable(c.defining.under)}<h3>Demographics (% of segment vs all customers)</h3>`;
    for (const d of c.demographics) {
      html += `<p class="note"><b>${esc(d.column)}</b> (${esc(d.source)}, known for ${pct(d.coverage, 0)} of the segment): ` +
        d.rows.map(r => `${esc(r.category)} ${fmt(r.pct_segment, 0)}% <span class="note">(${fmt(r.pct_base, 0)}%)</span>`).join(", ") + "</p>";
    }
    html += "<h3>Churn risk and value</h3>";
    if (c.churn && c.churn.churn_prob_90d_active !== undefined) {
      html += `<p id="card-churn">Mean 90-day churn probability of active members: <b>${pct(c.churn.churn_prob_90d_active)}</b>;
        already churned: ${pct(c.churn.churned_share)}; mean expected value over the value horizon:
        <b>${c.churn.expected_value_usd === undefined ? "&ndash;" : "USD " + fmt(c.churn.expected_value_usd)}</b>.</p>`;
    } else if (!c.churn) {
      html += "<p class='note' id='card-churn'>No churn outputs yet: notebook 06 writes them (<code>make reports</code>).</p>";
    }
    if (c.churn && c.churn.segment_value) {
      html += "<p class='note'>Segment value (segment_value.csv, notebook 06; unweighted):</p><table class='grid'>" + Object.entries(c.churn.segment_value).map(([k, v]) =>
        `<tr><td class="l">${esc(k)}</td><td>${typeof v === "number" ? fmt(v, 2) : esc(v)}</td></tr>`).join("") + "</table>";
    }
    html += "<p class='note'>* significant after FDR control (q &lt; 0.05); &dagger; small base (caution).</p>";
    const card = document.getElementById("card");
    card.innerHTML = html;
    card.dataset.segment = c.segment;
    setStatus(`Persona card: ${c.name}`);
  } catch (e) { setStatus(e.message, true); }
}

// ---- affinity heatmap ----
async function initHeatmap() {
  const first = await api("/api/affinity");
  state.heatmapOptions = first;
  document.getElementById("aff-view").innerHTML = first.views.map(v => `<option>${esc(v)}</option>`).join("");
  setIndexOptions("channels");
  drawHeatmap(first);
}
function setIndexOptions(view) {
  const types = view === "channels" ? state.heatmapOptions.channel_index_types : ["share"];
  document.getElementById("aff-index").innerHTML = types.map(t => `<option>${esc(t)}</option>`).join("");
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
  const text = h.z.map((r, i) => r.map((v, j) => v === null ? "n/a" :
    `${Math.round(v)}${h.significant[i][j] ? "*" : ""}${h.base_flag[i][j] === "caution" ? "\u2020" : ""}`));
  const trace = {type: "heatmap", z: zc, x: h.segment_names, y: h.attributes, text: text, texttemplate: "%{text}",
    hovertext: h.hover, hoverinfo: "text", colorscale: colorscale, zmin: -2, zmax: 2, xgap: 2, ygap: 2,
    colorbar: {title: {text: "index"}, tickvals: [-2, -1, lo, 0, hi, 1, 2], ticktext: ["25", "50", String(h.thresholds.low), "100", String(h.thresholds.high), "200", "400"]}};
  const layout = {title: {text: `Affinity index (${h.index_type}) by segment: ${h.view}`},
    xaxis: {title: {text: "segment"}, automargin: true, showgrid: false},
    yaxis: {title: {text: h.view === "channels" ? "channel metric" : "attribute"}, automargin: true, autorange: "reversed", showgrid: false},
    plot_bgcolor: "#bdbdbd", margin: {t: 50, l: 80, r: 20, b: 100}};
  Plotly.newPlot("heatmap", [trace], layout, {displaylogo: false, responsive: true});
  setStatus(`Heatmap: ${h.view} (${h.index_type}); ${h.z.flat().filter(v => v === null).length} suppressed cells in grey`);
}

// ---- lookalikes ----
async function runLookalike() {
  const seg = document.getElementById("la-segment").value, size = document.getElementById("la-size").value;
  setStatus("Fitting the lookalike model (can take a few seconds the first time per segment)...");
  document.getElementById("la-run").disabled = true;
  try {
    const r = await api(`/api/lookalike?segment=${encodeURIComponent(seg)}&size=${encodeURIComponent(size)}`);
    state.lastLookalike = r;
    document.getElementById("la-result").innerHTML = `<h2 id="la-title">Lookalikes of ${esc(r.seed_name)}</h2>
      <span class="kpi">seed members<b>${fmt(r.seed_size)}</b></span>
      <span class="kpi">lookalike audience<b id="la-out-size">${fmt(r.size)}</b></span>
      <span class="kpi">weighted audience<b>${fmt(r.weighted_size)}</b></span>
      <span class="kpi">held-out lift<b id="la-lift">${fmt(r.lift, 2)}x</b></span>
      <p class="note">Lift: how much more often the seed members hidden from training appear among the ${fmt(r.size)}
        best-ranked users than in a random draw of the same size (1x = random). Candidates exclude the seed
        (up to ${fmt(r.max_size)} users). Method: ${esc(r.method)}.</p>
      <p class="note">Where the audience comes from: ` + r.segment_mix.map(m => `${esc(m.segment_name)} ${pct(m.share, 0)}`).join(", ") + "</p>";
    const feats = r.profile.map(p => p.label);
    const bar = (key, name) => ({type: "bar", name: name, x: feats, y: r.profile.map(p => p[key]),
      hovertemplate: "%{x}: index %{y:.0f}<extra>" + name + "</extra>"});
    Plotly.newPlot("la-chart", [bar("seed_index", "seed segment"), bar("lookalike_index", "lookalike audience")],
      {title: {text: "Seed vs lookalike profile (weighted mean as index, 100 = all customers)"}, barmode: "group",
       xaxis: {title: {text: "feature"}}, yaxis: {title: {text: "index of the weighted mean (100 = average)"}},
       shapes: [{type: "line", xref: "paper", x0: 0, x1: 1, y0: 100, y1: 100, line: {dash: "dot", color: "#555"}}],
       margin: {t: 50, l: 70, r: 20, b: 60}}, {displaylogo: false, responsive: true});
    setStatus(`Lookalike audience of ${fmt(r.size)} users, held-out lift ${fmt(r.lift, 2)}x`);
  } catch (e) { setStatus(e.message, true); }
  finally { document.getElementById("la-run").disabled = false; }
}

// ---- export ----
async function runExport() {
  const body = {kind: document.getElementById("ex-kind").value, segment: document.getElementById("ex-segment").value};
  if (body.kind === "lookalike") { body.size = document.getElementById("ex-size").value; }
  setStatus("Creating the export...");
  try {
    const r = await api("/api/export", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const links = Object.entries(r.downloads).map(([k, u]) => `<a class="download" id="download-${esc(k)}" href="${esc(u)}" download>download ${esc(k)}</a>`).join(" &middot; ");
    document.getElementById("ex-result").innerHTML = `<h2 id="ex-title">Export ${esc(r.export_id)}: ${fmt(r.n_users)} users (${esc(r.kind)})</h2>
      <p>${links}</p><h3>Manifest</h3><pre>${esc(JSON.stringify(r.manifest, null, 2))}</pre>`;
    setStatus(`Export ready: ${fmt(r.n_users)} users`);
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
  try { await loadMap(); setStatus("Ready: click a segment bubble."); document.body.dataset.ready = "1"; }
  catch (e) { setStatus(e.message, true); }
});
