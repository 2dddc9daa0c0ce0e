// The page at /: asks GET /models, then POST /translate with the text, the chosen model and beam,
// and draws the translation, the n-best list and the attention heatmap of each line.
"use strict";

const $ = (id) => document.getElementById(id);
const BEAMS = [1, 2, 3, 4, 5, 8, 10, 12, 16];
const NBEST = 5; // hypotheses shown per line (at most the beam)
// Viridis, sampled: dark purple (0) to yellow (1).
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
let models = [];
let limits = { max_lines: 64, max_beam: 16 };

// With --api-key the browser asked for the key before showing this page, and sends it along.
async function api(path, body) {
  const response = await fetch(path, body === undefined ? {}
    : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await response.json();
  if (!response.ok) throw new Error(data.message || response.statusText);
  return data;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function loadModels() {
  try {
    const data = await api("/models");
    models = data.models;
    limits = data.limits;
  } catch (error) {
    setStatus(`Could not list the models: ${error.message}`, true);
    return;
  }
  const select = $("model");
  select.replaceChildren(...models.map((m) => {
    const option = el("option", "", `${m.name} (${m.source_language} → ${m.target_language})`);
    option.value = m.name;
    return option;
  }));
  $("beam").replaceChildren(...BEAMS.filter((b) => b <= limits.max_beam).map((b) => {
    const option = el("option", "", b === 1 ? "1 (greedy)" : String(b));
    option.value = b;
    option.selected = b === Math.min(5, limits.max_beam);
    return option;
  }));
  showModel();
}

function currentModel() {
  return models.find((m) => m.name === $("model").value) || models[0];
}

function showModel() {
  const m = currentModel();
  if (!m) return;
  const bleu = m.best_dev_bleu === null ? "" : ` · best dev BLEU ${m.best_dev_bleu.toFixed(1)}`;
  const cell = `${m.model.bidirectional ? "bi" : ""}${m.model.cell.toUpperCase()}`;
  $("model-info").textContent = `${m.name}: ${m.model.layers} × ${m.model.hidden} ${cell}, ` +
    `${m.model.attention} attention, ${(m.parameters / 1e6).toFixed(1)}M parameters${bleu}`;
  $("languages").textContent = `${m.source_language} → ${m.target_language}`;
}

function colour(w) {
  const x = Math.min(Math.max(w, 0), 1) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS.length - 2);
  const t = x - i;
  const rgb = VIRIDIS[i].map((c, k) => Math.round(c + t * (VIRIDIS[i + 1][k] - c)));
  return `rgb(${rgb.join(",")})`;
}

function heatmap(attention) {
  const table = el("table", "heatmap");
  const head = el("tr");
  head.append(el("th", "corner"));
  for (const token of attention.source) head.append(el("th", "source-token", token));
  table.append(head);
  attention.weights.forEach((row, r) => {
    const tr = el("tr");
    tr.append(el("th", "target-token", attention.target[r]));
    row.forEach((w, c) => {
      const td = el("td");
      td.dataset.weight = w;
      td.style.background = colour(w);
      td.title = `${attention.target[r]} ← ${attention.source[c]}: ${w.toFixed(3)}`;
      tr.append(td);
    });
    table.append(tr);
  });
  return table;
}

function card(source, index, data) {
  const box = el("article", "panel result");
  box.append(el("p", "source muted", source));
  box.append(el("p", "translation", data.translations[index]));
  const hyps = data.nbest ? data.nbest[index] : [];
  if (hyps.length > 1) {
    box.append(el("h3", "", `${hyps.length} best (score: log P / length^α)`));
    const list = el("ol", "nbest");
    for (const h of hyps) {
      const item = el("li");
      item.append(el("span", "score", h.score.toFixed(3)), el("span", "", h.text));
      list.append(item);
    }
    box.append(list);
  }
  const attention = data.attention ? data.attention[index] : null;
  if (attention) {
    box.append(el("h3", "", "Attention (rows: output tokens, columns: source tokens)"));
    const scroll = el("div", "heatmap-scroll");
    scroll.append(heatmap(attention));
    const legend = el("div", "legend");
    legend.append(el("span", "", "0"), el("span", "bar"), el("span", "", "1"));
    box.append(scroll, legend);
  }
  return box;
}

async function translate() {
  const lines = $("source").value.split(/\r\n|\r|\n/).map((l) => l.trim()).filter((l) => l);
  if (!lines.length) {
    setStatus("Type a sentence first.");
    return;
  }
  if (lines.length > limits.max_lines) {
    setStatus(`At most ${limits.max_lines} lines at a time.`, true);
    return;
  }
  const model = currentModel();
  const beam = Number($("beam").value);
  const body = { text: lines, model: model.name, beam, nbest: Math.min(beam, NBEST) };
  if (model.model.attention !== "none") body.attention = true;
  $("translate").disabled = true;
  setStatus("Translating…");
  try {
    const data = await api("/translate", body);
    $("results").replaceChildren(...lines.map((line, i) => card(line, i, data)));
    const others = data.batch.requests - 1;
    setStatus(`${lines.length} line${lines.length > 1 ? "s" : ""} in ${Math.round(data.milliseconds)} ms` +
      (others > 0 ? ` (decoded together with ${others} other request${others > 1 ? "s" : ""})` : ""));
  } catch (error) {
    setStatus(error.message, true);
  } finally {
    $("translate").disabled = false;
  }
}

$("translate").addEventListener("click", translate);
$("source").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) translate();
});
$("model").addEventListener("change", showModel);
loadModels();
