// nst-jax pages: upload without reloading, live progress by polling /api/jobs/{id}, sharing.
// Plain JS, no build step; every page also works without it (forms post and redirect).
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
const FINAL = ["done", "failed", "cancelled"];

async function api(method, url, body) {
  const r = await fetch(url, {method, body, headers: {"X-CSRF-Token": csrf()},
                              credentials: "same-origin"});
  let data = null;
  try { data = await r.json(); } catch (e) { data = {detail: `HTTP ${r.status}`}; }
  if (!r.ok) throw new Error(data.detail || `HTTP ${r.status}`);
  return data;
}

function percent(job) {
  if (job.status === "done") return 100;
  return job.total ? Math.floor(100 * job.iteration / job.total) : 0;
}

// A running job that has no iteration to count yet (a one-step fast job, or a slow job whose
// optimizer is still compiling) shows a moving bar, not an empty one that looks stuck.
function indeterminate(job) {
  return job.status === "running" && (job.total <= 1 || job.iteration === 0);
}

function setBar(bar, job) {
  if (indeterminate(job)) bar.removeAttribute("value");
  else bar.value = percent(job);
}

function describe(job) {
  if (job.status === "queued") {
    return job.queue_position ? `Queued (${job.queue_position} job(s) ahead)` : "Queued: next";
  }
  if (job.status === "running" && job.total <= 1) return "Running…";
  if (job.status === "running" && job.iteration === 0) {
    return "Preparing: compiling the optimizer (often half a minute the first time)…";
  }
  if (job.status === "running") {
    let s = `Running: ${job.iteration} / ${job.total}`;
    if (job.loss !== null) s += `, loss ${job.loss.toPrecision(4)}`;
    if (job.eta_s !== null) s += `, ${Math.round(job.eta_s)} s left`;
    return s;
  }
  if (job.status === "failed") return `Failed: ${job.error}`;
  return job.status.charAt(0).toUpperCase() + job.status.slice(1);
}

async function poll(id, onUpdate) {
  for (;;) {
    let job;
    // a long poll: the server answers when the job changes (or after 10 s)
    try { job = await api("GET", `/api/jobs/${id}?wait=10`); } catch (e) { await sleep(1000); continue; }
    onUpdate(job);
    if (FINAL.includes(job.status)) return job;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function showError(message) {
  const e = $("error");
  e.textContent = message;
  e.hidden = !message;
}

function setupStylize() {
  const form = $("stylize-form");
  if (!form) return;
  const drop = $("drop"), upload = $("upload");
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) upload.files = e.dataTransfer.files;
  });
  const model = $("model"), painting = $("painting-upload");
  const mark = () => {
    document.querySelectorAll(".pick").forEach((b) =>
      b.classList.toggle("picked", b.dataset.value === model.value));
    const any = model.value.startsWith("arbitrary#"), upload = model.value === "arbitrary#upload";
    if (painting) {  // the painting's file only for "Your painting"
      $("painting-box").hidden = !upload;
      painting.disabled = !upload;
      painting.required = upload;
    }
    $("strength-hint").textContent = any
      ? "Any painting: 0 keeps the photo's own style, 1 takes the painting's (the network's style is mixed, not the pixels)."
      : "How much of the stylized picture covers the photo.";
  };
  document.querySelectorAll(".pick").forEach((b) => b.addEventListener("click", () => {
    model.value = b.dataset.value; mark(); }));
  model.addEventListener("change", mark);
  if (painting) {
    // "Your painting" asks for the file at once (the field below shows it, to change it).
    $("pick-upload").addEventListener("click", () => { if (!painting.files.length) painting.click(); });
    painting.addEventListener("change", () => {  // the upload tile shows the chosen painting
      const file = painting.files[0], preview = $("painting-preview");
      if (preview.src) URL.revokeObjectURL(preview.src);
      preview.hidden = !file;
      $("upload-plus").hidden = !!file;
      if (file) preview.src = URL.createObjectURL(file);
    });
  }
  mark();
  $("strength").addEventListener("input", () => { $("strength-value").textContent = $("strength").value; });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    showError("");
    $("submit").disabled = true;
    $("result-box").hidden = true;
    $("job").hidden = false;
    $("progress").value = 0;
    $("status").textContent = "Uploading…";
    let job;
    try {
      job = await api("POST", "/api/jobs", new FormData(form));
    } catch (err) {
      showError(err.message);
      $("job").hidden = true;
      $("submit").disabled = false;
      return;
    }
    job = await poll(job.id, (j) => {
      setBar($("progress"), j);
      $("status").textContent = describe(j);
    });
    setBar($("progress"), job);
    $("submit").disabled = false;
    if (job.status !== "done") { showError(describe(job)); return; }
    $("result").src = job.result_url;
    $("download").href = job.result_url;
    $("job-link").href = job.page_url;
    $("share").dataset.job = job.id;
    $("share").disabled = false;
    for (const id of ["share", "publish", "share-title"]) $(id).hidden = false;
    $("gallery-link").hidden = true;
    $("result-box").hidden = false;
  });
  $("share").addEventListener("click", async () => {
    const body = new FormData();
    body.append("job_id", $("share").dataset.job);
    body.append("title", $("share-title").value);
    const publish = document.querySelector('input[name="publish"]:checked');
    body.append("publish", publish ? publish.value : "result");
    try {
      const item = await api("POST", "/api/gallery", body);
      $("share").hidden = true;
      $("publish").hidden = true;
      $("share-title").hidden = true;
      $("gallery-link").href = item.page_url;
      $("gallery-link").hidden = false;
    } catch (err) { showError(err.message); }
  });
}

function setupJobPage() {
  const page = $("job-page");
  if (!page || FINAL.includes(page.dataset.status)) return;
  poll(page.dataset.job, (j) => {
    $("status").textContent = j.status;
    setBar($("progress"), j);
    $("describe").textContent = describe(j);
    $("iteration").textContent = j.iteration;
    $("total").textContent = j.total;
    if (j.loss !== null) $("loss").textContent = j.loss.toPrecision(4);
    if (j.eta_s !== null) $("eta").textContent = `${Math.round(j.eta_s)} s`;
    const qp = $("queue-info");
    if (qp) {
      qp.hidden = j.status !== "queued";
      $("queue-position").textContent = j.queue_position;
    }
    const preview = $("preview");
    if (preview && j.preview_url && preview.getAttribute("src") !== j.preview_url) {
      preview.src = j.preview_url;
      $("preview-box").hidden = false;
    }
  }).then(() => window.location.reload());
}

// Delete and Cancel ask first (forms marked data-confirm).
function setupConfirm() {
  document.querySelectorAll("form[data-confirm]").forEach((f) => f.addEventListener("submit",
    (e) => { if (!window.confirm(f.dataset.confirm)) e.preventDefault(); }));
}

// The custom form shows only the fields of the chosen method (data-kinds on each field).
function setupCustom() {
  const method = $("method");
  if (!method) return;
  const show = () => document.querySelectorAll("[data-kinds]").forEach((el) => {
    const on = el.dataset.kinds.split(" ").includes(method.value);
    el.hidden = !on;
    el.querySelectorAll("input").forEach((i) => { i.disabled = !on; });
  });
  method.addEventListener("change", show);
  show();
}

// Before / after: the result over the photo, a slider uncovers one or the other.
function setupCompare() {
  const box = $("compare");
  if (!box) return;
  const slider = $("compare-slider"), after = $("compare-after");
  const set = () => { after.style.clipPath = `inset(0 ${100 - slider.value}% 0 0)`; };
  slider.addEventListener("input", set);
  set();
}

document.addEventListener("DOMContentLoaded", () => {
  setupStylize(); setupJobPage(); setupConfirm(); setupCustom(); setupCompare();
});
