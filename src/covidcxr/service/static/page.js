// The page's script: a file of its own, as the Content-Security-Policy allows no inline script.
"use strict";
const $ = (id) => document.getElementById(id);
// A no-break space: "100.0 %" never splits across lines.
const percent = (p) => (100 * p).toFixed(1) + "\u00a0%";
const count = (n) => Number(n).toLocaleString("en");
const HISTORY_LENGTH = 20;

function showError(message) {
  $("error").textContent = message;
  $("error").style.display = message ? "block" : "none";
}

function showWarnings(box, messages) {
  box.textContent = messages.join(" ");
  box.style.display = messages.length ? "block" : "none";
}

// FastAPI's own validation errors carry a list of {loc, msg}; the service's, a sentence.
function describe(detail) {
  if (Array.isArray(detail)) return detail.map((item) => item.msg || String(item)).join("; ");
  return detail ? String(detail) : "";
}

// A <dd> value: a string, or a list of parts each kept on one line, joined by " · ".
function addRow(list, term, value) {
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = term;
  if (Array.isArray(value)) {
    value.forEach((part, index) => {
      const item = document.createElement("span");
      item.className = "item";
      item.textContent = part;
      if (index) dd.append(" · ");
      dd.append(item);
    });
  } else {
    dd.textContent = value;
  }
  list.append(dt, dd);
}

// ---------------------------------------------------------------------------------------
// The model panel: what GET /model says the model is, has seen and scored.

function trainedOn(data) {
  if (!data || !Object.keys(data).length) return "not recorded";
  if (data.untrained) return "nothing: random weights (untrained)";
  const kind = data.synthetic ? "synthetic phantoms, no real X-ray" : "real X-rays";
  return (data.name ? data.name + " — " : "") + kind;
}

// ["7,051 images", "Normal 4,272", "COVID 1,993", …] for one split's class counts.
function splitCounts(counts) {
  const parts = Object.entries(counts).map(([name, n]) => name + " " + count(n));
  const total = Object.values(counts).reduce((sum, n) => sum + n, 0);
  return [count(total) + " images", ...parts];
}

function testAccuracy(metrics) {
  let text = percent(metrics.test_accuracy);
  const interval = (metrics.test_intervals || {}).accuracy;
  if (interval && typeof interval.low === "number") {
    const level = Math.round(100 * (metrics.test_intervals.level || 0.95));
    text += " (" + level + " % CI " + (100 * interval.low).toFixed(1) + "–"
      + percent(interval.high) + ")";
  }
  if (metrics.test_images) text += " on " + count(metrics.test_images) + " held-out images";
  return text;
}

function perClass(metrics, key) {
  const rows = Object.entries(metrics.test_per_class || {})
    .filter(([, figures]) => typeof figures[key] === "number");
  return rows.map(([name, figures]) => name + " " + percent(figures[key]));
}

function showModel(card) {
  const list = $("model-info");
  list.replaceChildren();
  const named = card.name && card.name !== card.model;
  addRow(list, "Model", named ? card.name + " (" + card.model + ")" : card.model);
  addRow(list, "Classes", card.class_names.join(", "));
  const data = card.training_data || {};
  addRow(list, "Trained on", trainedOn(data));
  const counts = (data.split || {}).counts || {};
  if (counts.train) addRow(list, "Training split", splitCounts(counts.train));
  if (counts.test) addRow(list, "Test split", splitCounts(counts.test));
  const metrics = card.metrics || {};
  addRow(list, "Test accuracy",
    typeof metrics.test_accuracy === "number" ? testAccuracy(metrics) : "not measured");
  const recall = perClass(metrics, "recall");
  if (recall.length) addRow(list, "Test recall", recall);
  const specificity = perClass(metrics, "specificity");
  if (specificity.length) addRow(list, "Test specificity", specificity);
  const ood = card.ood || {};
  addRow(list, "Out-of-distribution check", Object.keys(ood).length
    ? "yes: a film unlike the training films is flagged"
    : "none: a film unlike the training films is not flagged");
  addRow(list, "Calibrated",
    card.temperature !== 1 ? "yes (T = " + card.temperature.toFixed(2) + ")" : "no");
  const lungs = card.lungs && card.lungs.mode !== "none" ? "bundled" : "none";
  addRow(list, "Lung model", card.segmenter || lungs);
  showWarnings($("model-warning"), card.warnings || []);
}

async function loadModel() {
  try {
    const response = await fetch("model");
    if (!response.ok) throw new Error("the service answered " + response.status);
    showModel(await response.json());
  } catch (error) {
    const list = $("model-info");
    list.replaceChildren();
    addRow(list, "Model", "could not load the model card: " + error.message);
  }
}

// ---------------------------------------------------------------------------------------
// One upload's result. Every upload clears the last one first, so nothing of an earlier
// file can stand beside a later file's name or error.

function clearResult() {
  $("result").style.display = "none";
  for (const id of ["result-file", "predicted", "confidence", "heatmap-caption", "image-info"]) {
    $(id).textContent = "";
  }
  showWarnings($("result-warning"), []);
  $("bars").replaceChildren();
  $("heatmap-figure").hidden = true;
  for (const id of ["film", "heatmap", "outline"]) $(id).removeAttribute("src");
}

function addBar(bars, name, p, top) {
  const row = document.createElement("div");
  row.className = "bar" + (top ? " top" : "");
  row.dataset.class = name;
  const label = document.createElement("span");
  label.textContent = name;
  const track = document.createElement("div");
  track.className = "track";
  track.setAttribute("role", "meter");
  track.setAttribute("aria-label", name);
  track.setAttribute("aria-valuemin", "0");
  track.setAttribute("aria-valuemax", "100");
  track.setAttribute("aria-valuenow", (100 * p).toFixed(1));
  const fill = document.createElement("div");
  fill.className = "fill";
  fill.style.width = (100 * p).toFixed(1) + "%";
  track.append(fill);
  const value = document.createElement("span");
  value.className = "value";
  value.textContent = percent(p);
  row.append(label, track, value);
  bars.append(row);
}

function showPicture(result) {
  const png = (data) => "data:image/png;base64," + data;
  const figure = $("heatmap-figure");
  if (!result.film_png) {
    figure.hidden = true;
    return;
  }
  $("film").src = png(result.film_png);
  const layers = { heatmap: result.heatmap_png, outline: result.lung_outline_png };
  for (const [id, data] of Object.entries(layers)) {
    if (data) $(id).src = png(data);
    $(id).hidden = !data;
  }
  $("opacity-control").hidden = !result.heatmap_png;
  $("legend").hidden = !result.heatmap_png;
  $("outline-control").hidden = !result.lung_outline_png;
  $("legend-title").textContent = "Grad-CAM evidence for " + result.predicted;
  const parts = [];
  if (result.heatmap_png) {
    parts.push("Grad-CAM for " + result.predicted
      + ": the stronger and brighter the tint, the more evidence; plain film where there is none");
  }
  if (result.lung_outline_png) parts.push("cyan line: lungs");
  if (typeof result.lung_fraction === "number") {
    parts.push(percent(result.lung_fraction) + " of the evidence inside the lungs");
  }
  $("heatmap-caption").textContent = parts.join(" · ");
  applyView();
  figure.hidden = false;
}

function showResult(result, fileName) {
  $("result").style.display = "block";
  $("result-file").textContent = fileName;
  showWarnings($("result-warning"), result.warnings || []);
  $("predicted").textContent = result.predicted;
  const confidence = document.createElement("span");
  confidence.className = "pct";
  confidence.textContent = percent(result.confidence);
  $("confidence").replaceChildren(
    result.calibrated ? "Calibrated confidence " : "Confidence ", confidence);
  for (const [name, p] of Object.entries(result.probabilities)) {
    addBar($("bars"), name, p, name === result.predicted);
  }
  showPicture(result);
  const info = result.image;
  let text = info.format + ", " + info.width + " × " + info.height + " px";
  if (result.dicom && result.dicom.Modality) text += ", " + result.dicom.Modality;
  $("image-info").textContent = text + " · analysed in " + Math.round(result.elapsed_ms) + " ms";
}

// ---------------------------------------------------------------------------------------
// The viewer: the heatmap's opacity (0: the plain film) and the lung outline, on or off.

let opacityBeforePlainFilm = null;

function applyView() {
  const slider = $("heatmap-opacity");
  const value = Number(slider.value);
  $("heatmap").style.opacity = String(value / 100);
  $("heatmap-opacity-value").textContent = value + "\u00a0%";
  $("plain-film").setAttribute("aria-pressed", String(value === 0));
  $("outline").style.opacity = $("show-outline").checked ? "1" : "0";
}

$("heatmap-opacity").addEventListener("input", () => {
  opacityBeforePlainFilm = null;
  applyView();
});
$("show-outline").addEventListener("change", applyView);
$("plain-film").addEventListener("click", () => {
  const slider = $("heatmap-opacity");
  if (Number(slider.value) === 0) {
    slider.value = String(opacityBeforePlainFilm || slider.defaultValue);
    opacityBeforePlainFilm = null;
  } else {
    opacityBeforePlainFilm = Number(slider.value);
    slider.value = "0";
  }
  applyView();
});

// ---------------------------------------------------------------------------------------
// Uploads: each one replaces the last; an answer that arrives after a newer upload started
// is dropped. The session's list is kept in this page only.

function addHistory(fileName, outcome, failed) {
  const item = document.createElement("li");
  const name = document.createElement("strong");
  name.textContent = fileName;
  item.append(name, " — " + outcome);
  if (failed) item.className = "failed";
  const list = $("history");
  list.prepend(item);
  while (list.children.length > HISTORY_LENGTH) list.lastElementChild.remove();
  $("history-box").hidden = false;
}

let current = null;

async function analyse(file) {
  if (current) current.abort();
  const upload = new AbortController();
  current = upload;
  clearResult();
  showError("");
  $("status").textContent = "Analysing " + file.name + "…";
  const form = new FormData();
  form.append("file", file);
  const query = new URLSearchParams({
    heatmap: $("want-heatmap").checked, lungs: $("want-lungs").checked,
  });
  const fail = (reason) => {
    $("status").textContent = "";
    showError("Could not analyse " + file.name + ": " + reason);
    addHistory(file.name, "not analysed: " + reason, true);
  };
  try {
    const response = await fetch("predict?" + query, {
      method: "POST", body: form, signal: upload.signal,
    });
    const body = await response.json().catch(() => ({}));
    if (upload !== current) return;
    if (!response.ok) {
      fail(describe(body.detail) || "the service answered " + response.status);
      return;
    }
    $("status").textContent = "Done: " + file.name;
    showResult(body, file.name);
    addHistory(file.name, body.predicted + " " + percent(body.confidence), false);
  } catch (error) {
    if (upload !== current) return;  // a newer upload took over (and aborted this one)
    fail("the service could not be reached (" + error.message + ")");
  } finally {
    if (upload === current) current = null;
  }
}

const drop = $("drop");
$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  event.target.value = "";  // so that choosing the same file again analyses it again
  if (file) analyse(file);
});
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (event) => {
  if (event.dataTransfer.files.length) analyse(event.dataTransfer.files[0]);
});
loadModel();
