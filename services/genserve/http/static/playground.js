// genserve playground: plain JavaScript over the public HTTP API (fetch, and SSE read from a
// fetch body, since EventSource can neither POST nor send an Authorization header).
"use strict";

const $ = (selector) => document.querySelector(selector);
const KEY_STORAGE = "genserve.apiKey";

// ---------------------------------------------------------------- the API

function authHeaders(extra = {}) {
  const key = $("#api-key").value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

// An answer that is not 2xx becomes an Error with the API's own message ({"error": {"message"}}).
async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = `${response.status}: ${body.error.message}`;
  } catch (_) {
    // not JSON: the status line says enough
  }
  const error = new Error(message);
  error.status = response.status; // an answer, not a lost connection: never retried
  return error;
}

async function call(path, { method = "GET", json, form, accept, headers = {}, signal } = {}) {
  const init = { method, signal, headers: authHeaders(accept ? { ...headers, Accept: accept } : headers) };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (form !== undefined) {
    init.body = form; // the browser sets the multipart boundary
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response;
}

const callJson = async (path, options) => (await call(path, options)).json();

// Server-sent events from a fetch response: {event, data, id} per event, as the stream arrives.
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const found = { event: "message", data: [], id: null };
      for (const line of block.split("\n")) {
        const colon = line.indexOf(":");
        if (colon === 0) continue; // a comment (keep-alive)
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") found.data.push(text);
        else if (field === "event") found.event = text;
        else if (field === "id") found.id = text;
      }
      if (found.data.length) yield { ...found, data: found.data.join("\n") };
    }
  }
}

// A JSON event's payload; an error sent inside a stream ({"error": {...}}) is raised.
function payload(event) {
  const data = JSON.parse(event.data);
  if (event.event === "error" || (data && data.error)) throw new Error((data.error || data).message || event.data);
  return data;
}

// An image of the API ({"png": base64}, or base64 alone) as a URL an <img> can show.
function pngUrl(image) {
  const data = typeof image === "string" ? image : image && (image.png || image.data);
  return data ? `data:image/png;base64,${data}` : "";
}

// ---------------------------------------------------------------- page helpers

function showError(section, error) {
  const box = $(`#${section}-error`);
  if (!error) {
    box.hidden = true;
    box.textContent = "";
  } else if (error.name !== "AbortError") {
    box.hidden = false;
    box.textContent = error.message || String(error);
  }
}

// Runs `work` for a button: the button is disabled meanwhile, `stop` (if any) aborts it, and a
// failure is shown in the section's error box.
function action(button, section, work, stop) {
  button.addEventListener("click", async () => {
    const controller = new AbortController();
    const onStop = () => controller.abort();
    button.disabled = true;
    if (stop) {
      stop.disabled = false;
      stop.addEventListener("click", onStop, { once: true });
    }
    showError(section, null);
    try {
      await work(controller.signal);
    } catch (error) {
      showError(section, error);
    } finally {
      button.disabled = false;
      if (stop) {
        stop.disabled = true;
        stop.removeEventListener("click", onStop);
      }
    }
  });
}

const numberOf = (selector) => ($(selector).value === "" ? undefined : Number($(selector).value));

function bindOutputs() {
  for (const output of document.querySelectorAll("output[for]")) {
    const input = document.getElementById(output.htmlFor.value);
    const show = () => (output.value = input.value);
    input.addEventListener("input", show);
    show();
  }
}

async function fillModels(select, family) {
  const listed = await callJson(`v1/models?family=${family}`);
  select.replaceChildren(
    ...listed.data.map((model) => {
      const option = new Option(model.id, model.id, false, Boolean(model.genserve_default));
      return option;
    }),
  );
}

async function checkHealth() {
  const pill = $("#health");
  try {
    const response = await fetch("healthz");
    pill.textContent = response.ok ? "serving" : "not serving";
    pill.className = `pill ${response.ok ? "ok" : "bad"}`;
  } catch (_) {
    pill.textContent = "unreachable";
    pill.className = "pill bad";
  }
}

// ---------------------------------------------------------------- text

function completionRequest() {
  return {
    model: $("#text-model").value || undefined,
    prompt: $("#text-prompt").value,
    temperature: numberOf("#text-temperature"),
    top_p: numberOf("#text-top-p"),
    max_tokens: numberOf("#text-max-tokens"),
    seed: numberOf("#text-seed"),
    stream: true,
  };
}

// Streams a completion request; `onChoice` gets each chunk's choice as it comes.
async function streamCompletion(body, onChoice, signal) {
  const response = await call("v1/completions", { method: "POST", json: body, signal });
  for await (const event of events(response)) {
    if (event.data === "[DONE]") return;
    for (const choice of payload(event).choices) onChoice(choice);
  }
  throw new Error("the stream ended without [DONE]");
}

async function generateText(signal) {
  const output = $("#text-output");
  const status = $("#text-status");
  const body = completionRequest();
  output.textContent = body.prompt;
  output.dataset.state = "streaming";
  status.textContent = "streaming…";
  const started = performance.now();
  let characters = 0;
  try {
    await streamCompletion(
      body,
      (choice) => {
        output.append(choice.text);
        characters += choice.text.length;
        output.scrollTop = output.scrollHeight;
        if (choice.finish_reason) status.textContent = `finished (${choice.finish_reason})`;
      },
      signal,
    );
    const seconds = (performance.now() - started) / 1000;
    status.textContent = `${characters} characters in ${seconds.toFixed(1)} s · ${status.textContent}`;
    output.dataset.state = "done";
  } catch (error) {
    output.dataset.state = error.name === "AbortError" ? "stopped" : "failed";
    status.textContent = error.name === "AbortError" ? "stopped" : "";
    throw error;
  }
}

async function sweep(signal) {
  const written = $("#sweep-temperatures").value.split(/[\s,]+/).filter(Boolean);
  const body = { ...completionRequest(), temperature: undefined, temperatures: written.map(Number) };
  const columns = new Map();
  $("#sweep-output").replaceChildren(
    ...written.map((temperature, index) => {
      const column = document.createElement("div");
      const title = document.createElement("h3");
      title.textContent = `temperature ${temperature}`;
      const text = document.createElement("pre");
      text.textContent = body.prompt;
      column.append(title, text);
      columns.set(index, text);
      return column;
    }),
  );
  // With n = 1, choice i is temperature i's completion.
  await streamCompletion(body, (choice) => columns.get(choice.index)?.append(choice.text), signal);
}

// ---------------------------------------------------------------- DeepDream and style preview

function chosenFile(selector, what) {
  const file = $(selector).files[0];
  if (!file) throw new Error(`choose ${what} first`);
  return file;
}

// A vision call with Accept: text/event-stream: previews as they come, then the result image.
async function visionStream(path, form, signal) {
  const preview = $("#vision-preview");
  const result = $("#vision-result");
  const progress = $("#vision-progress");
  const status = $("#vision-status");
  result.removeAttribute("src");
  preview.removeAttribute("src");
  progress.value = 0;
  status.textContent = "starting…";
  const response = await call(path, { method: "POST", form, accept: "text/event-stream", signal });
  let previews = 0;
  for await (const event of events(response)) {
    const data = payload(event);
    if (event.event === "progress") {
      const total = data.total_steps || data.iterations || 0;
      const done = data.steps_done ?? data.step ?? 0;
      if (total) progress.value = done / total;
      const loss = data.loss ?? (data.losses && data.losses.total);
      status.textContent = `step ${done} of ${total || "?"}` + (loss !== undefined ? ` · loss ${Number(loss).toFixed(3)}` : "");
      if (data.preview) {
        preview.src = pngUrl(data.preview);
        previews += 1;
        preview.dataset.count = String(previews);
      }
    } else if (event.event === "result") {
      result.src = pngUrl(data.image);
      progress.value = 1;
      status.textContent = `done · ${previews} previews · seed ${data.seed}`;
      return;
    }
  }
  throw new Error("the stream ended without a result");
}

function dream(signal) {
  const form = new FormData();
  form.append("image", chosenFile("#photo", "a photo"));
  const fields = { octaves: numberOf("#dream-octaves"), steps_per_octave: numberOf("#dream-steps"), seed: numberOf("#dream-seed"), preview_every: 1 };
  for (const [name, value] of Object.entries(fields)) if (value !== undefined) form.append(name, String(value));
  return visionStream("v1/vision/dream", form, signal);
}

function stylePreview(signal) {
  const form = new FormData();
  form.append("content", chosenFile("#photo", "a photo"));
  form.append("style", chosenFile("#style", "a style image"));
  const iterations = numberOf("#style-steps");
  form.append("iterations", String(iterations));
  form.append("max_size", String(numberOf("#style-size")));
  form.append("preview_every", String(Math.max(1, Math.round(iterations / 10))));
  return visionStream("v1/vision/style-preview", form, signal);
}

// ---------------------------------------------------------------- latent

const latent = { samples: [], a: null, b: null };

function latentModel() {
  return $("#latent-model").value || undefined;
}

function image(url, title) {
  const element = document.createElement("img");
  element.src = url;
  element.alt = title;
  element.title = title;
  return element;
}

async function sample() {
  const reply = await callJson("v1/latent/sample", {
    method: "POST",
    json: { model: latentModel(), n: numberOf("#latent-n"), seed: numberOf("#latent-seed"), return_latents: true },
  });
  latent.samples = reply.images.map((picture, index) => ({ url: pngUrl(picture), latent: (reply.latents || [])[index] }));
  latent.a = latent.samples.length > 0 ? 0 : null;
  latent.b = latent.samples.length > 1 ? latent.samples.length - 1 : null;
  drawSamples();
  await applyConcept();
}

function drawSamples() {
  const grid = $("#latent-grid");
  grid.replaceChildren(
    ...latent.samples.map((item, index) => {
      const element = image(item.url, `sample ${index}`);
      element.classList.toggle("a", index === latent.a);
      element.classList.toggle("b", index === latent.b);
      element.addEventListener("click", () => {
        // Clicks alternate: the first picks A, the next B.
        if (latent.picking === "b") latent.b = index;
        else latent.a = index;
        latent.picking = latent.picking === "b" ? "a" : "b";
        drawSamples();
        applyConcept().catch((error) => showError("latent", error));
      });
      return element;
    }),
  );
  $("#concept-before").src = latent.a === null ? "" : latent.samples[latent.a].url;
}

// A point of the latent space: the sample's latent vector (a list of numbers) where the API
// returned it, else its image (base64), which a VAE encodes.
function point(index) {
  const item = latent.samples[index];
  return item.latent || item.url.split(",")[1];
}

async function interpolate() {
  if (latent.a === null || latent.b === null) throw new Error("sample first, then pick A and B");
  const reply = await callJson("v1/latent/interpolate", {
    method: "POST",
    json: { model: latentModel(), start: point(latent.a), end: point(latent.b), steps: numberOf("#latent-steps") },
  });
  $("#latent-strip").replaceChildren(...reply.images.map((picture, index) => image(pngUrl(picture), `step ${index}`)));
}

async function fillConcepts() {
  const reply = await callJson(`v1/latent/concepts?model=${encodeURIComponent(latentModel() || "")}`);
  $("#latent-concept").replaceChildren(...reply.concepts.map((concept) => new Option(concept.name, concept.name)));
}

let conceptCall = null;
async function applyConcept() {
  const name = $("#latent-concept").value;
  if (!name || latent.a === null) return;
  conceptCall?.abort(); // the slider moves faster than answers come: only the last one counts
  conceptCall = new AbortController();
  const strength = numberOf("#latent-strength");
  const reply = await callJson(`v1/latent/concepts/${encodeURIComponent(name)}/apply`, {
    method: "POST",
    json: { model: latentModel(), point: point(latent.a), strengths: [strength] },
    signal: conceptCall.signal,
  });
  $("#concept-after").src = pngUrl(reply.images[0]);
  $("#concept-caption").textContent = `A ${strength < 0 ? "−" : "+"} ${Math.abs(strength)} × ${name}`;
}

// ---------------------------------------------------------------- style-transfer job

async function submitJob(signal) {
  const iterations = numberOf("#job-iterations");
  const form = new FormData();
  form.append("content", chosenFile("#photo", "a photo"));
  form.append("style", chosenFile("#style", "a style image"));
  form.append("iterations", String(iterations));
  form.append("max_size", String(numberOf("#job-size")));
  form.append("preview_every", String(Math.max(1, Math.round(iterations / 10))));
  const job = await callJson("v1/jobs", { method: "POST", form, signal });
  const cancel = $("#job-cancel");
  const onCancel = () => call(`v1/jobs/${job.id}/cancel`, { method: "POST" }).catch((error) => showError("jobs", error));
  cancel.disabled = false;
  cancel.addEventListener("click", onCancel, { once: true });
  try {
    await watchJob(job, signal);
  } finally {
    cancel.disabled = true;
    cancel.removeEventListener("click", onCancel);
  }
}

// Follows the job's events to its terminal one. A dropped connection is resumed after the last
// event received (Last-Event-ID), so no event is missed or repeated.
async function watchJob(job, signal) {
  const progress = $("#job-progress");
  const status = $("#job-status");
  const result = $("#job-result");
  result.removeAttribute("src");
  progress.value = 0;
  status.textContent = `job ${job.id}: ${job.state}`;
  let state = job.state;
  let lastId = null;
  let terminal = false;
  for (let retries = 0; !terminal; ) {
    try {
      const headers = lastId ? { "Last-Event-ID": lastId } : {};
      const response = await call(`v1/jobs/${job.id}/events`, { accept: "text/event-stream", headers, signal });
      if (response.status === 204) break; // nothing after the last event: it was the terminal one
      for await (const event of events(response)) {
        const data = payload(event);
        lastId = event.id || lastId;
        state = data.state || state;
        terminal = Boolean(data.terminal);
        if (data.total_steps) progress.value = data.step / data.total_steps;
        if (data.preview) $("#job-preview").src = pngUrl(data.preview);
        const loss = data.losses ? ` · loss ${data.losses.total.toFixed(1)}` : "";
        const steps = data.total_steps ? ` · step ${data.step} of ${data.total_steps}` : "";
        status.textContent = `job ${job.id}: ${state}${steps}${loss}`;
      }
      if (!terminal && ++retries > 3) throw new Error(`the events of job ${job.id} keep ending before its last`);
    } catch (error) {
      if (error.status || signal.aborted || ++retries > 3) throw error;
      await new Promise((resume) => setTimeout(resume, 1000));
    }
  }
  if (state !== "succeeded") throw new Error(`job ${job.id} ${state}`);
  const answer = await call(`v1/jobs/${job.id}/result`, { signal });
  result.src = URL.createObjectURL(await answer.blob());
  progress.value = 1;
}

// ---------------------------------------------------------------- start

function start() {
  const key = $("#api-key");
  key.value = localStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("change", () => {
    localStorage.setItem(KEY_STORAGE, key.value.trim());
    loadLists();
  });
  bindOutputs();
  action($("#text-generate"), "text", generateText, $("#text-stop"));
  action($("#sweep-run"), "text", sweep, $("#text-stop"));
  action($("#dream-run"), "vision", dream, $("#vision-stop"));
  action($("#style-run"), "vision", stylePreview, $("#vision-stop"));
  action($("#latent-sample"), "latent", sample);
  action($("#latent-interpolate"), "latent", interpolate);
  action($("#job-submit"), "jobs", submitJob);
  $("#photo").addEventListener("change", () => {
    const file = $("#photo").files[0];
    if (file) $("#photo-view").src = URL.createObjectURL(file);
  });
  const concept = () => applyConcept().catch((error) => showError("latent", error));
  $("#latent-strength").addEventListener("input", concept);
  $("#latent-concept").addEventListener("change", concept);
  $("#latent-model").addEventListener("change", () => fillConcepts().catch((error) => showError("latent", error)));
  checkHealth();
  loadLists();
}

// The model lists (and the latent model's concepts): each section shows its own failure.
function loadLists() {
  fillModels($("#text-model"), "text").then(
    () => showError("text", null),
    (error) => showError("text", error),
  );
  fillModels($("#latent-model"), "latent")
    .then(fillConcepts)
    .then(
      () => showError("latent", null),
      (error) => showError("latent", error),
    );
}

start();
