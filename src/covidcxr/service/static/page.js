// The page's script: a file of its own, as the Content-Security-Policy allows no inline script.
"use strict";
const $ = (id) => document.getElementById(id);
const percent = (p) => (100 * p).toFixed(1) + " %";

function showError(message) {
  $("error").textContent = message;
  $("error").style.display = message ? "block" : "none";
}

// FastAPI's own validation errors carry a list of {loc, msg}; the service's, a sentence.
function describe(detail) {
  if (Array.isArray(detail)) return detail.map((item) => item.msg || String(item)).join("; ");
  return detail ? String(detail) : "";
}

function addRow(list, term, value) {
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = term;
  dd.textContent = value;
  list.append(dt, dd);
}

async function loadModel() {
  try {
    const response = await fetch("model");
    const card = await response.json();
    const list = $("model-info");
    list.replaceChildren();
    addRow(list, "Model", card.name && card.name !== card.model ? card.name + " (" + card.model + ")" : card.model);
    addRow(list, "Classes", card.class_names.join(", "));
    const data = card.training_data || {};
    addRow(list, "Trained on", data.synthetic ? "synthetic phantoms only" : (data.name || "not recorded"));
    const metrics = card.metrics || {};
    if (typeof metrics.test_accuracy === "number") {
      const images = metrics.test_images ? " of " + metrics.test_images + " held-out images" : "";
      addRow(list, "Test accuracy", percent(metrics.test_accuracy) + images);
    }
    const perClass = metrics.test_per_class || {};
    if (perClass.COVID) addRow(list, "COVID recall", percent(perClass.COVID.recall));
    showWarnings($("model-warning"), card.warnings || []);
    addRow(list, "Calibrated", card.temperature !== 1 ? "yes (T = " + card.temperature.toFixed(2) + ")" : "no");
    addRow(list, "Lung model", card.segmenter || (card.lungs && card.lungs.mode !== "none" ? "bundled" : "none"));
  } catch (error) {
    showError("Could not reach the service: " + error);
  }
}

function showWarnings(box, messages) {
  box.textContent = messages.join(" ");
  box.style.display = messages.length ? "block" : "none";
}

function showResult(result, asked) {
  $("result").style.display = "block";
  showWarnings($("result-warning"), result.warnings || []);
  $("predicted").textContent = result.predicted;
  $("confidence").textContent = (result.calibrated ? "Calibrated confidence " : "Confidence ")
    + percent(result.confidence);
  const bars = $("bars");
  bars.replaceChildren();
  const entries = Object.entries(result.probabilities);
  for (const [name, p] of entries) {
    const row = document.createElement("div");
    row.className = "bar" + (name === result.predicted ? " top" : "");
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
  const figure = $("heatmap-figure");
  if (result.overlay_png) {
    $("heatmap").src = "data:image/png;base64," + result.overlay_png;
    const parts = [];
    if (asked.heatmap) parts.push("Grad-CAM for " + result.predicted + ": brighter = more evidence");
    if (result.lung_mask_png) parts.push("cyan line: lungs");
    if (typeof result.lung_fraction === "number") parts.push(percent(result.lung_fraction) + " of the evidence inside the lungs");
    $("heatmap-caption").textContent = parts.join(" · ");
    figure.hidden = false;
  } else {
    figure.hidden = true;
  }
  const info = result.image;
  let text = info.format + ", " + info.width + " × " + info.height + " px";
  if (result.dicom && result.dicom.Modality) text += ", " + result.dicom.Modality;
  $("image-info").textContent = text + " · analysed in " + Math.round(result.elapsed_ms) + " ms";
}

async function analyse(file) {
  showError("");
  $("status").textContent = "Analysing " + file.name + "…";
  const form = new FormData();
  form.append("file", file);
  const asked = { heatmap: $("want-heatmap").checked, lungs: $("want-lungs").checked };
  const query = new URLSearchParams(asked);
  try {
    const response = await fetch("predict?" + query, { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      $("status").textContent = "";
      showError(describe(body.detail) || "The service answered " + response.status);
      return;
    }
    $("status").textContent = "Done: " + file.name;
    showResult(body, asked);
  } catch (error) {
    $("status").textContent = "";
    showError("Could not reach the service: " + error);
  }
}

const drop = $("drop");
$("file").addEventListener("change", (event) => {
  if (event.target.files.length) analyse(event.target.files[0]);
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
