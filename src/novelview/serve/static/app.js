// novelview demo page. Plain JS, no build step, no external resources (the page's CSP forbids them).
// Flow: pick image -> POST /api/preprocess (preview = what the model sees) -> POST /api/jobs -> progress over
// server-sent events (falls back to polling) -> results with download links. Errors from the server are shown
// verbatim: the API's messages are written for people. The job's token travels as the HttpOnly cookie that
// POST /api/jobs sets for the job's own URLs, so every request below (fetch, EventSource, <img>) carries it.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    form: $("job-form"), file: $("file"), drop: $("drop-zone"), preview: $("preview"),
    previewCaption: $("preview-caption"), modelInfo: $("model-info"),
    azimuth: $("azimuth"), azimuthOut: $("azimuth-out"), elevation: $("elevation"), elevationOut: $("elevation-out"),
    views: $("views"), stochastic: $("stochastic"),
    viewControls: $("view-controls"), orbitControls: $("orbit-controls"),
    steps: $("steps"), guidance: $("guidance"), strength: $("strength"), sampler: $("sampler"), seed: $("seed"), seedRandom: $("seed-random"),
    generate: $("generate"), cancel: $("cancel"), error: $("error"),
    progressBox: $("progress-box"), progress: $("progress"), progressText: $("progress-text"),
    results: $("results"), animation: $("animation"), viewsGrid: $("views-grid"), downloads: $("downloads"),
  };

  const state = {
    file: null,          // the File the user picked
    previewUrl: null,    // object URL of the preprocessed preview
    job: null,           // id of the job being watched
    source: null,        // EventSource
    pollTimer: null,
    maxUploadBytes: 10 * 1024 * 1024,
    imageSize: null,
  };

  // ------------------------------------------------------------------ helpers

  function showError(message) {
    el.error.textContent = message;
    el.error.hidden = false;
  }

  function clearError() {
    el.error.hidden = true;
    el.error.textContent = "";
  }

  async function errorMessage(response) {
    // Every API error is JSON {"detail": "..."}; anything else (a proxy's HTML page) gets a generic line.
    try {
      const body = await response.json();
      if (typeof body.detail === "string") return body.detail;
    } catch (_) { /* not JSON */ }
    return `The server answered ${response.status} ${response.statusText || ""}`.trim();
  }

  function formatSeconds(s) {
    if (s == null || !isFinite(s)) return "";
    if (s < 1) return "less than a second";
    if (s < 90) return `${Math.round(s)} s`;
    return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  }

  function remaining(s) {
    // "about less than a second left" reads badly; under a second the job is as good as done.
    if (s == null || !isFinite(s)) return "";
    return s < 1 ? " · almost done" : ` · about ${formatSeconds(s)} left`;
  }

  // The model's input camera sits at its training data's mean elevation, so only relative elevations that keep
  // input + relative inside (-90°, 90°) can run: the slider offers those, in its own steps.
  function limitSlider(input, min, max) {
    const step = Number(input.step) || 1;
    input.min = Math.ceil(min / step) * step;
    input.max = Math.floor(max / step) * step;
    input.value = Math.min(Math.max(Number(input.value), Number(input.min)), Number(input.max));
  }

  function setBusy(busy) {
    el.generate.disabled = busy || !state.file;
    el.cancel.hidden = !busy;
    el.cancel.disabled = false;
  }

  // ------------------------------------------------------------------ model info and limits

  async function loadModelInfo() {
    try {
      const response = await fetch("/api/model");
      if (!response.ok) throw new Error(await errorMessage(response));
      const info = await response.json();
      state.maxUploadBytes = info.limits.max_upload_bytes || state.maxUploadBytes;
      state.imageSize = info.image_size;
      const parts = [info.preset || "model", `${info.image_size}×${info.image_size} px`, `checkpoint “${info.checkpoint}”`];
      if (info.parameters) parts.push(`${(info.parameters / 1e6).toFixed(1)} M parameters`);
      el.modelInfo.textContent = parts.join(" · ");
      const d = info.defaults, l = info.limits;
      el.steps.value = d.steps; el.steps.min = l.min_steps; el.steps.max = l.max_steps;
      el.guidance.value = d.guidance; el.guidance.min = l.min_guidance; el.guidance.max = l.max_guidance;
      el.strength.value = d.strength;
      for (const node of document.querySelectorAll(".lifts-only")) node.hidden = !info.lifts;
      el.views.value = d.views; el.views.min = l.min_views; el.views.max = l.max_views;
      el.azimuth.value = d.azimuth;
      limitSlider(el.elevation, l.min_elevation, l.max_elevation);
      el.seed.max = l.max_seed;
      updateOutputs();
    } catch (err) {
      el.modelInfo.textContent = "";
      showError(`Could not reach the server: ${err.message}`);
    }
  }

  // ------------------------------------------------------------------ input image

  async function pickFile(file) {
    clearError();
    if (!file) return;
    if (file.size > state.maxUploadBytes) {
      showError(`That file is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${(state.maxUploadBytes / 1048576).toFixed(0)} MB.`);
      return;
    }
    state.file = null;
    setBusy(false);
    el.previewCaption.hidden = false;
    el.previewCaption.textContent = "Preparing preview…";
    const body = new FormData();
    body.append("image", file);
    try {
      const response = await fetch("/api/preprocess", { method: "POST", body });
      if (!response.ok) throw new Error(await errorMessage(response));
      const blob = await response.blob();
      if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
      state.previewUrl = URL.createObjectURL(blob);
      el.preview.src = state.previewUrl;
      el.preview.alt = `What the model sees: ${file.name}, cropped and resized`;
      el.preview.hidden = false;
      el.drop.classList.add("has-image");
      const size = state.imageSize ? `${state.imageSize}×${state.imageSize} pixels` : "model input";
      el.previewCaption.textContent = `Exactly what the model sees (${size}, enlarged).`;
      state.file = file;
    } catch (err) {
      el.previewCaption.hidden = true;
      showError(`This image cannot be used: ${err.message}`);
    }
    setBusy(Boolean(state.job));
  }

  el.file.addEventListener("change", () => pickFile(el.file.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    el.drop.addEventListener(type, (e) => { e.preventDefault(); el.drop.classList.add("dragging"); });
  }
  for (const type of ["dragleave", "drop"]) {
    el.drop.addEventListener(type, (e) => { e.preventDefault(); el.drop.classList.remove("dragging"); });
  }
  el.drop.addEventListener("drop", (e) => {
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) pickFile(file);
  });

  // ------------------------------------------------------------------ controls

  function mode() {
    return el.form.querySelector('input[name="mode"]:checked').value;
  }

  const signed = (v) => `${Number(v) > 0 ? "+" : ""}${v}°`;

  function updateOutputs() {
    el.azimuthOut.textContent = signed(el.azimuth.value);
    el.elevationOut.textContent = signed(el.elevation.value);
    const orbit = mode() === "orbit";
    el.viewControls.hidden = orbit;
    el.orbitControls.hidden = !orbit;
  }

  for (const input of [el.azimuth, el.elevation]) input.addEventListener("input", updateOutputs);
  for (const radio of el.form.querySelectorAll('input[name="mode"]')) radio.addEventListener("change", updateOutputs);
  el.seedRandom.addEventListener("click", () => { el.seed.value = Math.floor(Math.random() * 2 ** 31); });

  function readParams() {
    const params = {
      mode: mode(),
      steps: Number(el.steps.value),
      guidance: Number(el.guidance.value),
      sampler: el.sampler.value,
    };
    if (!el.strength.hidden) params.strength = Number(el.strength.value);
    if (params.mode === "view") params.azimuth = Number(el.azimuth.value);
    else { params.views = Number(el.views.value); params.stochastic = el.stochastic.checked; }
    params.elevation = Number(el.elevation.value);
    if (el.seed.value !== "") params.seed = Number(el.seed.value);
    return params;
  }

  // ------------------------------------------------------------------ jobs

  el.form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!state.file || state.job) return;
    clearError();
    clearResults();
    setBusy(true);
    showProgress({ status: "queued", progress: { done: 0, total: 0 }, queue_position: null });
    el.progressText.textContent = "Uploading…";
    el.progressBox.scrollIntoView({ block: "nearest" });
    const body = new FormData();
    body.append("image", state.file);
    body.append("params", JSON.stringify(readParams()));
    try {
      const response = await fetch("/api/jobs", { method: "POST", body });
      if (!response.ok) throw new Error(await errorMessage(response));
      const job = await response.json();
      state.job = job.id;
      watch(job.id);
    } catch (err) {
      el.progressBox.hidden = true;
      showError(err.message);
      setBusy(false);
    }
  });

  el.cancel.addEventListener("click", async () => {
    if (!state.job) return;
    el.cancel.disabled = true;
    el.progressText.textContent = "Cancelling…";
    try {
      const response = await fetch(`/api/jobs/${state.job}`, { method: "DELETE" });
      if (!response.ok) throw new Error(await errorMessage(response));
      // The event stream reports the final "cancelled" state.
    } catch (err) {
      showError(`Could not cancel: ${err.message}`);
      el.cancel.disabled = false;
    }
  });

  function watch(id) {
    if (!("EventSource" in window)) { poll(id); return; }
    const source = new EventSource(`/api/jobs/${id}/events`);
    state.source = source;
    source.addEventListener("progress", (e) => showProgress(JSON.parse(e.data)));
    source.addEventListener("end", (e) => { source.close(); state.source = null; finished(JSON.parse(e.data)); });
    source.addEventListener("error", () => {
      // A proxy that buffers streams, or a dropped connection: polling is slower but always works.
      if (state.source !== source) return;
      source.close();
      state.source = null;
      poll(id);
    });
  }

  function poll(id) {
    const tick = async () => {
      if (state.job !== id) return;
      try {
        const response = await fetch(`/api/jobs/${id}`, { cache: "no-store" });
        if (!response.ok) throw new Error(await errorMessage(response));
        const job = await response.json();
        if (["succeeded", "failed", "cancelled"].includes(job.status)) { finished(job); return; }
        showProgress(job);
      } catch (err) {
        showError(`Lost track of the job: ${err.message}`);
        finished(null);
        return;
      }
      state.pollTimer = setTimeout(tick, 500);
    };
    tick();
  }

  function showProgress(job) {
    el.progressBox.hidden = false;
    const { done, total } = job.progress;
    if (job.status === "queued") {
      el.progress.removeAttribute("value");  // indeterminate while waiting
      const ahead = job.queue_position;
      el.progressText.textContent = ahead ? `Waiting in the queue (${ahead} ${ahead === 1 ? "job" : "jobs"} ahead)…` : "Starting…";
      return;
    }
    if (total > 0) {
      el.progress.max = total;
      el.progress.value = done;
      el.progress.textContent = `${Math.round((100 * done) / total)}%`;
      el.progressText.textContent = `Denoising step ${done} of ${total}${remaining(job.eta_s)}`;
    } else {
      el.progress.removeAttribute("value");
      el.progressText.textContent = "Starting…";
    }
  }

  function finished(job) {
    state.job = null;
    clearTimeout(state.pollTimer);
    setBusy(false);
    if (!job) { el.progressBox.hidden = true; return; }
    if (job.status === "succeeded") {
      el.progress.max = 1;
      el.progress.value = 1;
      const took = job.elapsed_s != null ? ` in ${formatSeconds(job.elapsed_s)}` : "";
      el.progressText.textContent = `Done${took} (seed ${job.seed}).`;
      showResults(job);
    } else if (job.status === "cancelled") {
      el.progressBox.hidden = true;
      showError(job.error ? `Cancelled: ${job.error}.` : "Cancelled.");
    } else {
      el.progressBox.hidden = true;
      showError(`The job failed: ${job.error || "unknown error"}`);
    }
  }

  // ------------------------------------------------------------------ results

  function clearResults() {
    el.results.hidden = true;
    el.animation.replaceChildren();
    el.animation.hidden = true;
    el.viewsGrid.replaceChildren();
    el.downloads.replaceChildren();
  }

  function figure(child, caption) {
    const fig = document.createElement("figure");
    const cap = document.createElement("figcaption");
    cap.textContent = caption;
    fig.append(child, cap);
    return fig;
  }

  function image(url, alt) {
    const img = document.createElement("img");
    img.src = url;
    img.alt = alt;
    img.className = "pixelated";
    img.loading = "lazy";
    return img;
  }

  function showResults(job) {
    clearResults();
    const views = job.files.filter((f) => f.kind === "view");
    const p = job.params;
    for (const f of job.files) {
      if (f.kind === "animation") {
        el.animation.append(figure(image(f.url, "Animated orbit around the object"), "Orbit (GIF)"));
        el.animation.hidden = false;
      } else if (f.kind === "video") {
        const video = document.createElement("video");
        Object.assign(video, { src: f.url, controls: true, loop: true, muted: true, autoplay: true, playsInline: true });
        video.setAttribute("aria-label", "Orbit video");
        el.animation.append(figure(video, "Orbit (MP4)"));
        el.animation.hidden = false;
      }
    }
    const elevation = p.elevation || 0;
    const input = job.files.find((f) => f.kind === "input");
    const inputIsFrame = p.mode === "orbit" && elevation === 0;  // frame 1 already shows it
    if (input && !inputIsFrame) el.viewsGrid.append(figure(image(input.url, "Model input"), "Input (as the model sees it)"));
    views.forEach((f, i) => {
      let caption;
      if (p.mode === "view") caption = `Azimuth ${signed(p.azimuth)}, elevation ${signed(elevation)}`;
      else {
        // Frame i sits at 360*i/n degrees; at the input's height frame 0 is the input itself.
        caption = `Frame ${i + 1} of ${views.length} · ${Math.round((360 * i) / views.length)}°`;
        if (i === 0 && elevation === 0) caption += " (input)";
      }
      el.viewsGrid.append(figure(image(f.url, `Generated view: ${caption}`), caption));
    });
    for (const f of job.files) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = f.url;
      a.download = f.name;
      a.textContent = f.name;
      const what = f.kind === "capture" ? "the views with their cameras: transforms.json + images for nerfstudio or instant-ngp" : f.kind;
      li.append(a, document.createTextNode(` (${what})`));
      el.downloads.append(li);
    }
    el.results.hidden = false;
    el.results.scrollIntoView({ block: "nearest" });
  }

  // ------------------------------------------------------------------ start

  updateOutputs();
  loadModelInfo();
})();
