// The playground: talks to the same public API as any client (/v1/models, /info, /predict-next,
// /generate, /inspect; and to train: /v1/files, /v1/fine_tuning/jobs).
"use strict";

const $ = (id) => document.getElementById(id);
// model: the chosen model's id, sent with every request (null until known: the server's default);
// models: GET /v1/models's cards.
const state = { info: null, models: [], model: null, predict: null, predictTimer: 0, gen: null };

// Characters that would be invisible in a bar label or a list.
function visible(ch) {
  return { "\n": "⏎", " ": "␣", "\t": "⇥" }[ch] ?? ch;
}
function charName(ch) {
  return { "\n": "newline", " ": "space", "\t": "tab" }[ch] ?? ch;
}

// ---- requests: JSON in and out, with the API key when the server wants one --------------------
// The key (only needed where the server sets CHARRNN_API_KEY) lives in this tab's sessionStorage.
function authHeaders() {
  const key = sessionStorage.getItem("charrnn-key");
  return key ? { Authorization: `Bearer ${key}` } : {};
}
function call(path, body, signal) {
  const headers = authHeaders();
  if (body === undefined) return fetch(path, { headers, signal });
  headers["Content-Type"] = "application/json";
  return fetch(path, { method: "POST", headers, signal, body: JSON.stringify(body) });
}

// A request body for the chosen model.
function forModel(body) {
  return state.model ? { model: state.model, ...body } : body;
}

function askForKey() {
  $("key-box").open = true;
  $("api-key").focus();
}

// ---- errors: the API's {"error": {type, message, details}} as a sentence ----------------------
// (/v1/... answers in OpenAI's shape, {"error": {message, type, param, code}}: its code names the error)
async function apiError(resp) {
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON */ }
  const e = body && body.error;
  if (resp.status === 401) {
    askForKey();
    return "This server needs an API key: enter it under “API key” above. " + (e ? `(${e.message})` : "");
  }
  if (!e) return `HTTP ${resp.status}`;
  if ((e.code || e.type) === "model_not_found") loadModels();  // the chosen model is gone: the picker shows it
  return describe(e, resp.status);
}
function describe(e, status) {
  let text = e.message;
  const details = e.details || [];
  if (e.type === "unknown_characters") {
    const chars = details.flatMap((d) => d.chars || []);
    const whose = state.model ? `${state.model}'s` : "the model's";
    text += `. Not in ${whose} vocabulary: ${chars.map((c) => `“${visible(c)}”`).join(" ")}`;
  } else if (e.type === "validation_error") {
    text = "Invalid settings: " + details.map((d) => `${d.field}: ${d.message}`).join("; ");
  }
  const kind = e.code || e.type;
  return status ? `${text} (HTTP ${status}, ${kind})` : `${text} (${kind})`;
}
function showError(msg) {
  $("error").textContent = msg;
  $("error").hidden = !msg;
}

// ---- the models: GET /v1/models, the picker, and the chosen model's card ---------------------
// /info says what is server-wide (device, limits); each model's facts come from its /v1/models card.
async function loadInfo() {
  try {
    const resp = await call("/info");
    if (!resp.ok) return;  // the model list says why (a missing key, ...)
    state.info = await resp.json();
    if (state.models.length) showModel();
  } catch (_) { /* the model list reports an unreachable server */ }
}

let modelsAsked = 0;  // a refresh answered after a newer one is dropped
async function loadModels() {
  const asked = ++modelsAsked;
  try {
    const resp = await call("/v1/models");
    if (!resp.ok) throw new Error(await apiError(resp));
    const list = (await resp.json()).data;
    if (asked !== modelsAsked) return;
    state.models = list;
    if (!state.model) state.model = (list.find((m) => m.default) || list[0] || {}).id ?? null;
    fillPicker();
    showModel();
    fillBases();
  } catch (err) {
    if (asked === modelsAsked) $("card").textContent = `Model list unavailable: ${err.message}`;
  }
}

function chosenCard() {
  return state.models.find((m) => m.id === state.model) || null;
}

// "LSTM 2×512, validation loss 1.400 (stateful), not loaded": what tells models apart in the picker.
function summary(m) {
  const parts = [`${(m.cell || "?").toUpperCase()} ${m.layers}×${m.hidden}`];
  const v = m.validation;
  if (v && v.loss != null) parts.push(`validation loss ${v.loss.toFixed(3)} (${v.protocol})`);
  if (!m.loaded) parts.push("not loaded");
  if (m.error) parts.push("last load failed");
  return parts.join(", ");
}

function fillPicker() {
  const sel = $("model");
  const opts = state.models.map((m) => new Option(`${m.id}${m.default ? " (default)" : ""} — ${summary(m)}`, m.id));
  if (state.model && !chosenCard()) {  // removed from the server, or a stale ?model= link
    opts.push(new Option(`${state.model} — not on this server`, state.model));
  }
  const key = opts.map((o) => `${o.value}\t${o.text}`).join("\n");
  if (key !== sel.dataset.shown) {  // rebuilt only when something changed: an open list stays as it is
    sel.replaceChildren(...opts);
    sel.dataset.shown = key;
  }
  sel.value = state.model;
}

function showModel() {
  const m = chosenCard();
  if (!m) {
    $("card").textContent = `${state.model}: not on this server; choose another model`;
    $("vocab").textContent = "";
    return;
  }
  const v = m.validation;
  const loss = v && v.loss != null
    ? `${v.loss.toFixed(4)} nats/char (${[v.protocol, v.split].filter(Boolean).join(", ")})` : "n/a";
  const params = m.parameters == null ? "?" : m.parameters.toLocaleString("en");
  const device = state.info ? `${state.info.device}, ` : "";
  $("card").textContent = `${m.id} · ${m.layers}×${m.hidden} ${(m.cell || "?").toUpperCase()}, ${params} ` +
    `parameters, ${m.vocab_size} characters · validation loss ${loss} · ` +
    (m.max_context ? `reads the last ${m.max_context} characters · ` : "") +
    (m.loaded ? `${device}${m.precision}` : "not loaded yet (loads on first use)") + (m.error ? ` · ${m.error}` : "");
  $("vocab").textContent = m.vocab.map(visible).join(" ");
  $("max_new_chars").max = m.max_tokens;
  shapeInside(m);
}

// The Inside view's layer list and unit range follow the model's shape; only an LSTM has gates to show.
function shapeInside(m) {
  const layers = m.layers || 1, lstm = m.cell === "lstm";
  $("in-unit").max = Math.max(0, (m.hidden || 1) - 1);
  if (Number($("in-unit").value) > Number($("in-unit").max)) $("in-unit").value = 0;
  if ($("in-layer").options.length !== layers) {  // kept as it is when the count is the same
    $("in-layer").replaceChildren(...Array.from({ length: layers }, (_, k) => {
      const opt = new Option(`${k}${k === layers - 1 ? " (last)" : ""}`, k);
      opt.selected = k === layers - 1;
      return opt;
    }));
  }
  $("in-run").disabled = !lstm;
  if (!lstm) $("in-status").textContent = `${m.id} is a ${(m.cell || "?").toUpperCase()}: this view shows LSTM gates`;
}

function clearInside() {
  if (inside.ctrl) inside.ctrl.abort();
  inside.body = null;
  $("in-top").replaceChildren();
  $("heat").replaceChildren();
  $("in-status").textContent = "";
}

// Another model: what the old one wrote, predicted or showed inside is not this one's.
function chooseModel(id) {
  if (id === state.model) return;
  stop();
  state.model = id;
  const url = new URL(location.href);
  url.searchParams.set("model", id);
  history.replaceState(null, "", url);  // a reload (or the link) keeps the choice
  $("out-prompt").textContent = "";
  $("out-text").replaceChildren();
  $("status").textContent = "";
  $("bars").replaceChildren();
  $("next-status").textContent = "";
  showError("");
  clearInside();
  fillPicker();
  showModel();
  predict();
}

// ---- next-character distribution, as you type ------------------------------------------------
// Debounced (one request per pause in typing) and the stale request aborted, so a fast typist
// sends a few requests, not one per key, and an old answer never overwrites a newer one.
function schedulePredict() {
  clearTimeout(state.predictTimer);
  state.predictTimer = setTimeout(predict, 120);
}

async function predict() {
  if (state.predict) state.predict.abort();
  const ctrl = (state.predict = new AbortController());
  const text = $("prompt").value;
  try {
    const resp = await call("/predict-next", forModel({ text, top_k: 10 }), ctrl.signal);
    const card = chosenCard();
    if (card && !card.loaded && resp.status !== 401) loadModels();  // loaded now (or failed): its card says which
    if (!resp.ok) {
      const msg = await apiError(resp);
      $("bars").replaceChildren();
      $("next-status").textContent = "";
      showError(msg);
      return;
    }
    const body = await resp.json();
    showError("");
    drawBars(body.predictions);
    $("next-status").textContent = `after ${text.length} character(s)`;
  } catch (err) {
    if (err.name !== "AbortError") $("next-status").textContent = `request failed: ${err.message}`;
  }
}

function drawBars(preds) {
  const top = preds.length ? preds[0].prob : 1;
  $("bars").replaceChildren(...preds.map((p) => {
    const li = document.createElement("li");
    li.dataset.char = p.char;
    li.dataset.prob = p.prob;
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "bar";
    btn.title = `append ${charName(p.char)}`;
    btn.setAttribute("aria-label", `${charName(p.char)}: ${(100 * p.prob).toFixed(1)} percent`);
    const label = document.createElement("span");
    label.className = "char" + (visible(p.char) !== p.char ? " special" : "");
    label.textContent = visible(p.char);
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `calc((100% - 6.4rem) * ${(p.prob / top).toFixed(4)})`;  // the top bar fills the track
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${(100 * p.prob).toFixed(1)}%`;
    btn.append(label, fill, pct);
    btn.addEventListener("click", () => {
      $("prompt").value += p.char;
      $("prompt").focus();
      schedulePredict();
    });
    li.append(btn);
    return li;
  }));
}

// ---- server-sent events, read with fetch() (EventSource cannot send the API key) -----------------
// The payload of each `data:` line, in order ([DONE] included); comments (keep-alives) are skipped.
async function* sseData(resp) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {  // one server-sent event per blank line
      const event = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data: ")) yield line.slice(6);
      }
    }
  }
}

// ---- generation, streamed -------------------------------------------------------------------
function number(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function request() {
  const body = forModel({
    prompt: $("prompt").value,
    temperature: number("temperature") ?? 0.8,
    repetition_penalty: number("repetition_penalty") ?? 1,
    max_new_chars: number("max_new_chars") ?? 200,
    stream: true,
  });
  for (const k of ["top_k", "top_p", "seed"]) {
    if (number(k) !== null) body[k] = number(k);
  }
  // one stop string per line; "\n" written out means a newline, "\\" a backslash
  const stops = $("stop").value.split("\n").filter((s) => s !== "")
    .map((s) => s.replace(/\\(n|t|\\)/g, (_, c) => ({ n: "\n", t: "\t", "\\": "\\" })[c]));
  if (stops.length) body.stop = stops;
  if ($("colour").checked) body.logprobs = 3;  // each character's probability and 3 alternatives
  return body;
}

function setRunning(running) {
  $("generate").disabled = running;
  $("stop-btn").disabled = !running;
  $("output").classList.toggle("running", running);
}

async function generate() {
  if (state.gen) return;
  showError("");
  const body = request();
  const ctrl = (state.gen = new AbortController());
  $("out-prompt").textContent = body.prompt;
  $("out-text").replaceChildren();
  $("status").textContent = "waiting for the first character…";
  setRunning(true);
  const t0 = performance.now();
  let chars = 0, seed = null;
  try {
    const resp = await call("/generate", body, ctrl.signal);
    if (!resp.ok) throw new Error(await apiError(resp));
    seed = resp.headers.get("X-Seed");
    for await (const data of sseData(resp)) {
      if (data === "[DONE]") continue;
      const ev = JSON.parse(data);
      if (ev.error) throw new Error(describe(ev.error));
      if (ev.text) {
        appendText(ev.text, ev.logprobs);
        chars += [...ev.text].length;
        $("status").textContent = `${chars} characters…`;
      }
      if (ev.finish_reason) {
        const why = ev.finish_reason === "stop" ? "a stop string" : "max characters";
        $("status").textContent = `done: ${ev.generated_chars} characters, ended by ${why}, seed ${seed}, ` +
          `${((performance.now() - t0) / 1000).toFixed(2)} s`;
      }
    }
  } catch (err) {
    if (err.name === "AbortError") {
      $("status").textContent = `stopped after ${chars} characters (seed ${seed})`;
    } else {
      showError(err.message);
      $("status").textContent = "";
    }
  } finally {
    state.gen = null;
    setRunning(false);
  }
}

// Text as it arrives; with per-character logprobs, each character is shaded by how likely the
// model found it (red: a surprise, green: expected) and its title lists the alternatives.
function appendText(text, logprobs) {
  const out = $("out-text");
  if (!logprobs) {
    out.append(document.createTextNode(text));
    return;
  }
  for (const lp of logprobs) {
    const span = document.createElement("span");
    const p = Math.exp(lp.logprob);
    span.textContent = lp.char;
    span.className = "tok";
    span.dataset.p = p.toFixed(4);
    span.title = `${charName(lp.char)}: p = ${p.toFixed(3)}; most likely: ` +
      lp.top.map((t) => `${charName(t.char)} ${Math.exp(t.logprob).toFixed(3)}`).join(", ");
    span.style.backgroundColor = `hsla(${Math.round(120 * p)}, 85%, 55%, 0.3)`;
    out.append(span);
  }
}

function stop() {
  if (state.gen) state.gen.abort();  // closes the connection: the server frees the engine slot
}

// ---- inside the LSTM (/inspect) ---------------------------------------------------------------
// One request brings all six quantities of the chosen unit plus the most varying units, so
// switching what colours the text needs no new request; a new unit, layer or text does.
const inside = { body: null, ctrl: null };

function insideText() {
  const text = $("out-prompt").textContent + $("out-text").textContent || $("prompt").value;
  const limit = state.info ? state.info.limits.max_inspect_chars : text.length;
  return text.slice(-limit);  // longer texts: their end, as a model with a window reads them anyway
}

async function inspect() {
  const card = chosenCard();
  if (card && card.cell !== "lstm") return;  // shapeInside said why
  const text = insideText();
  if (!text) {
    $("in-status").textContent = "type a prompt first";
    return;
  }
  if (inside.ctrl) inside.ctrl.abort();
  const ctrl = (inside.ctrl = new AbortController());
  const body = forModel({ text, layer: Number($("in-layer").value || -1), units: [Number($("in-unit").value) || 0],
                           top_units: 10, unknown_chars: "skip" });
  $("in-status").textContent = "reading…";
  try {
    const resp = await call("/inspect", body, ctrl.signal);
    if (!resp.ok) throw new Error(await apiError(resp));
    inside.body = await resp.json();
    drawTop();
    drawHeat();
  } catch (err) {
    if (err.name !== "AbortError") $("in-status").textContent = err.message;
  }
}

function drawTop() {
  const b = inside.body, shown = b.units[0];
  $("in-top").replaceChildren(...b.top_units.map((t) => {
    const btn = document.createElement("button");
    btn.type = "button";
    btn.dataset.unit = t.unit;
    btn.setAttribute("aria-pressed", String(t.unit === shown));
    btn.textContent = `${t.unit} (σ ${t.c_std.toFixed(2)})`;
    btn.title = `show unit ${t.unit}`;
    btn.addEventListener("click", () => {
      $("in-unit").value = t.unit;
      inspect();
    });
    return btn;
  }));
}

// value -> background: red for positive, blue for negative, stronger further from 0; gates (0..1)
// and surprise on one hue.
function heatColour(v, what, scale) {
  if (what === "surprise") return `hsla(25, 95%, 50%, ${Math.min(1, v / scale).toFixed(3)})`;
  if ("ifo".includes(what)) return `hsla(140, 70%, 38%, ${v.toFixed(3)})`;
  const a = Math.min(1, Math.abs(v) / scale).toFixed(3);
  return v >= 0 ? `hsla(0, 85%, 55%, ${a})` : `hsla(215, 85%, 55%, ${a})`;
}

function drawHeat() {
  const b = inside.body;
  if (!b) return;
  const what = $("in-what").value, unit = b.units[0];
  const vals = b.chars.map((ch) => (what === "surprise" ? -ch.logprob : ch[what][0]));
  // c is unbounded: scaled by its largest |value| here; h and g live in [-1, 1]; surprise up to 6 nats
  const scale = what === "c" ? Math.max(1e-6, ...vals.map(Math.abs)) : what === "surprise" ? 6 : 1;
  $("heat").replaceChildren(...b.chars.flatMap((ch, t) => {
    const span = document.createElement("span");
    span.textContent = ch.char === "\n" ? "⏎" : ch.char;  // a newline: a visible mark, then the line break
    span.style.backgroundColor = heatColour(vals[t], what, scale);
    span.dataset.value = vals[t];
    span.title = `${charName(ch.char)}: p = ${ch.prob.toFixed(3)}; ` +
      "hcifgo".split("").map((w) => `${w} = ${ch[w][0].toFixed(3)}`).join(", ");
    return ch.char === "\n" ? [span, document.createTextNode("\n")] : [span];
  }));
  const label = what === "surprise" ? "surprise" : `${what}[${unit}]`;
  const cut = b.start ? `; read from character ${b.start} (the model's context window)` : "";
  $("in-status").textContent = `layer ${b.layer}, ${label} over ${b.chars.length} characters` +
    (what === "c" ? ` (full colour at |c| = ${scale.toFixed(2)})` : "") + cut;
}

// ---- Train: upload a text, start a fine-tuning job, follow it live -----------------------------
// POST /v1/files, then POST /v1/fine_tuning/jobs, then the job's events as a stream: metrics events
// draw the loss chart, sample messages show what the model writes, other messages (started,
// cancelled, done) mean the job's status changed, so the job is read again.
const JOBS = "/v1/fine_tuning/jobs";
const ACTIVE = ["validating_files", "queued", "running"];
const STATUS_WORDS = { validating_files: "validating the file", queued: "queued: waiting for the trainer",
                       running: "running", succeeded: "succeeded", failed: "failed", cancelled: "cancelled" };
const SAMPLES_SHOWN = 5;
// job: the job shown (GET's body); ctrl: its event stream; seen: event ids drawn already (a stream
// opened again replays every event); points: {step, train, valid} per evaluation; metrics: the last.
const train = { job: null, ctrl: null, seen: new Set(), points: [], metrics: null, drawTimer: 0, starting: false,
                announced: null, readError: false, lengths: { steps: "200", minutes: "2" }, unit: "steps" };

function trError(msg) {
  $("tr-error").textContent = msg;
  $("tr-error").hidden = !msg;
}
function trStatus(text, status = "") {
  $("tr-status").textContent = text;
  $("tr-status").className = status;
}
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

// The base-model list: the served models, then "scratch". Until the user picks one, the model the
// playground shows is preselected.
function fillBases() {
  const sel = $("tr-base");
  const want = sel.dataset.touched ? sel.value : state.model;
  const opts = state.models.map((m) => new Option(
    `${m.id} — ${(m.cell || "?").toUpperCase()} ${m.layers}×${m.hidden}, ${m.vocab_size} characters`, m.id));
  opts.push(new Option("scratch — a new network, sized below", "scratch"));
  const key = opts.map((o) => `${o.value}\t${o.text}`).join("\n");
  if (key !== sel.dataset.shown) {
    sel.replaceChildren(...opts);
    sel.dataset.shown = key;
  }
  const fallback = (state.models.find((m) => m.default) || state.models[0] || { id: "scratch" }).id;
  sel.value = opts.some((o) => o.value === want) ? want : fallback;
  showScratch();
}

// hidden and layers size a new network only: hidden (and out of the form's checks) for a fine-tune
function showScratch() {
  const scratch = $("tr-base").value === "scratch";
  $("tr-scratch").hidden = !scratch;
  for (const id of ["tr-hidden", "tr-layers"]) $(id).disabled = !scratch;
}

// steps or minutes: each unit keeps its own number
function changeUnit() {
  const unit = $("tr-unit").value, box = $("tr-length");
  train.lengths[train.unit] = box.value;
  train.unit = unit;
  Object.assign(box, unit === "minutes" ? { min: "0.05", max: "10080", step: "any" }
    : { min: "1", max: "1000000", step: "1" });
  box.value = train.lengths[unit];
}

function jobRequest(fileId) {
  const base = $("tr-base").value, n = Number($("tr-length").value);
  const hyperparameters = $("tr-unit").value === "minutes" ? { minutes: n } : { n_steps: Math.round(n) };
  if (base === "scratch") {
    hyperparameters.hidden = Number($("tr-hidden").value);
    hyperparameters.layers = Number($("tr-layers").value);
  }
  const body = { model: base, training_file: fileId, hyperparameters };
  const suffix = $("tr-suffix").value.trim();
  if (suffix) body.suffix = suffix;
  return body;
}

async function startTraining(e) {
  e.preventDefault();  // the form's own checks (a file, a length, the suffix's pattern) have passed
  if (train.starting) return;
  trError("");
  const file = $("tr-file").files[0];
  if (!file) {
    trError("Choose a training text first.");
    $("tr-file").focus();
    return;
  }
  const limit = state.info && state.info.limits.max_file_bytes;
  if (limit && file.size > limit) {  // refused before sending it all
    trError(`${file.name}: the file is ${file.size} bytes; this server's limit is ${limit}`);
    return;
  }
  train.starting = true;
  $("tr-start").disabled = true;
  try {
    trStatus(`uploading ${file.name} (${file.size.toLocaleString("en")} bytes)…`);
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", file, file.name);
    let resp;
    try {
      resp = await fetch("/v1/files", { method: "POST", headers: authHeaders(), body: form });
    } catch (err) {
      throw new Error(`The upload of ${file.name} failed: ${err.message}`);
    }
    if (!resp.ok) throw new Error(`${file.name} was refused: ${await apiError(resp)}`);
    const uploaded = await resp.json();
    trStatus(`uploaded ${uploaded.filename} (${uploaded.status_details}); creating the job…`);
    resp = await call(JOBS, jobRequest(uploaded.id));
    if (!resp.ok) throw new Error(`The job was refused: ${await apiError(resp)}`);
    follow(await resp.json());
    loadJobs();
  } catch (err) {
    trError(err.message);
    trStatus("");
  } finally {
    train.starting = false;
    $("tr-start").disabled = false;
  }
}

// Show a job from the start: its status, then every event so far and each new one.
function follow(job) {
  if (train.ctrl) train.ctrl.abort();
  train.ctrl = null;
  Object.assign(train, { job, seen: new Set(), points: [], metrics: null });
  $("tr-job").hidden = false;
  $("tr-samples").replaceChildren();
  $("tr-done").hidden = true;
  trError("");
  drawChart();
  showJob(job);
  markListed();
  stream(job.id);
}

async function stream(id) {
  const ctrl = (train.ctrl = new AbortController());
  const mine = () => train.ctrl === ctrl;
  try {
    const resp = await call(`${JOBS}/${id}/events?stream=true`, undefined, ctrl.signal);
    if (!resp.ok) {
      if (mine()) trError(await apiError(resp));
      return;
    }
    for await (const data of sseData(resp)) {
      if (!mine()) return;
      if (data === "[DONE]") break;
      onEvent(JSON.parse(data));
    }
  } catch (err) {
    if (err.name === "AbortError" || !mine()) return;
  }
  // the job ended ([DONE]), or the connection dropped (a restarted server): read it, and follow on
  if (!mine()) return;
  await refreshJob();
  if (mine() && ACTIVE.includes(train.job.status)) {
    await sleep(2000);
    if (mine()) stream(id);
  }
}

function onEvent(ev) {
  if (train.seen.has(ev.id)) return;
  train.seen.add(ev.id);
  const d = ev.data || {};
  if (ev.type === "metrics") {
    train.points.push({ step: d.step, train: d.train_loss, valid: d.valid_loss });
    train.metrics = d;
    train.job.step = Math.max(train.job.step || 0, d.step);
    scheduleDraw();
  } else if (typeof d.sample === "string") {
    addSample(d.step, d.sample);
  } else {
    refreshJob();  // started, cancelled, finished, failed: its status changed
  }
}

// Events come in bursts (a reopened job: all of them at once): the chart is drawn once per burst.
function scheduleDraw() {
  if (train.drawTimer) return;
  train.drawTimer = setTimeout(() => {
    train.drawTimer = 0;
    drawChart();
    if (train.job) showJob(train.job);
  }, 50);
}

function addSample(step, text) {
  const li = document.createElement("li");
  li.dataset.step = step;
  const head = document.createElement("div");
  head.className = "step";
  head.textContent = `step ${step}`;
  const pre = document.createElement("pre");
  pre.textContent = text;
  li.append(head, pre);
  const list = $("tr-samples");
  list.prepend(li);
  while (list.children.length > SAMPLES_SHOWN) list.lastElementChild.remove();
}

let jobAsked = 0;  // an answer older than a newer request (a cancel's included) is dropped
async function refreshJob() {
  if (!train.job) return;
  const id = train.job.id, asked = ++jobAsked;
  try {
    const resp = await call(`${JOBS}/${id}`);
    if (!resp.ok) throw new Error(await apiError(resp));
    const job = await resp.json();
    if (asked !== jobAsked) return;
    if (train.readError) trError("");  // readable again (a restarted server)
    train.readError = false;
    setJob(job);
  } catch (err) {
    if (asked !== jobAsked || !train.job || train.job.id !== id) return;
    train.readError = true;
    trError(`Could not read the job: ${err.message}`);
  }
}

function setJob(job) {
  const old = train.job;
  if (!old || old.id !== job.id) return;  // another job is shown now
  if (!ACTIVE.includes(old.status) && ACTIVE.includes(job.status)) return;  // never back from an end
  job.step = Math.max(job.step || 0, old.step || 0);
  train.job = job;
  showJob(job);
  if (ACTIVE.includes(old.status) && !ACTIVE.includes(job.status)) loadJobs();
}

function duration(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

// "ftjob-…: running · step 12/40 · about 8 s left · validation loss 3.214"
function showJob(job) {
  const m = train.metrics, step = job.step || 0;
  const parts = [`${job.id}: ${STATUS_WORDS[job.status] || job.status}`];
  if (step || job.total_steps) parts.push(job.total_steps ? `step ${step}/${job.total_steps}` : `step ${step}`);
  if (job.status === "running") {
    const left = m && m.time_left_s != null ? m.time_left_s
      : job.estimated_finish ? job.estimated_finish - Date.now() / 1000 : null;
    if (left != null) parts.push(`about ${duration(left)} left`);
  }
  if (m && m.valid_loss != null) parts.push(`validation loss ${m.valid_loss.toFixed(3)}`);
  trStatus(parts.join(" · "), job.status);
  $("tr-cancel").hidden = !ACTIVE.includes(job.status);
  if (job.status === "failed") {
    const e = job.error;
    trError(`The job failed: ${e ? `${e.message} (${e.code}${e.param ? `, ${e.param}` : ""})` : "no reason given"}`);
  }
  if (job.status === "succeeded" && job.fine_tuned_model) announceModel(job);
}

async function cancelJob() {
  const job = train.job;
  if (!job) return;
  $("tr-cancel").disabled = true;
  const asked = ++jobAsked;
  try {
    const resp = await call(`${JOBS}/${job.id}/cancel`, {});
    if (!resp.ok) throw new Error(await apiError(resp));
    const done = await resp.json();
    if (asked === jobAsked) setJob(done);
    if ($("tr-cancel").hidden) $("tr-start").focus();  // the focus is not lost with the button
  } catch (err) {
    trError(`Could not cancel ${job.id}: ${err.message}`);
  } finally {
    $("tr-cancel").disabled = false;
  }
}

// The job's model: the picker is read again until it lists it, then a button chooses it.
async function announceModel(job) {
  if (train.announced === job.id) return;
  train.announced = job.id;
  const id = job.fine_tuned_model;
  const listed = () => state.models.some((m) => m.id === id);
  for (let i = 0; i < 10 && !listed(); i++) {
    await loadModels();
    if (!listed()) await sleep(1000);
  }
  if (!train.job || train.job.id !== job.id) return;
  const box = $("tr-done");
  if (!listed()) {
    box.textContent = `${id} is not in this server's model list (deleted since?)`;
  } else {
    const btn = document.createElement("button");
    btn.type = "button";
    btn.id = "tr-use";
    btn.textContent = `Use ${id}`;
    btn.addEventListener("click", () => {
      history.replaceState(null, "", location.pathname + location.search);  // off #train: to the prompt
      chooseModel(id);
      $("prompt").focus();  // scrolls up to the prompt: write something in the new model's characters
    });
    box.replaceChildren(`New model ${id}: it is in the model picker.`, btn);
  }
  box.hidden = false;
}

// ---- the loss chart: inline SVG, drawn here ----
function svgEl(tag, attrs, text) {
  const el = document.createElementNS($("tr-chart").namespaceURI, tag);  // SVG's namespace, as the page's <svg>
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text != null) el.textContent = text;
  return el;
}

function chartSummary(pts) {
  if (!pts.length) return "Loss per step: no evaluation yet";
  const last = pts[pts.length - 1];
  const f = (v) => (Number.isFinite(v) ? v.toFixed(3) : "n/a");
  return `Loss per step, ${pts.length} evaluation(s); at step ${last.step}: training loss ${f(last.train)}, ` +
    `validation loss ${f(last.valid)}`;
}

function drawChart() {
  const chart = $("tr-chart");
  const pts = [...train.points].sort((a, b) => a.step - b.step);
  const W = 640, H = 240, L = 46, R = 14, T = 12, B = 34;
  const parts = [svgEl("desc", { id: "tr-chart-desc" }, chartSummary(pts))];
  const maxStep = pts.reduce((a, p) => Math.max(a, p.step), Math.max(1, (train.job && train.job.total_steps) || 0));
  const ys = pts.flatMap((p) => [p.train, p.valid]).filter(Number.isFinite);
  let lo = ys.reduce((a, v) => Math.min(a, v), ys.length ? Infinity : 0);
  let hi = ys.reduce((a, v) => Math.max(a, v), ys.length ? -Infinity : 1);
  if (hi - lo < 1e-3) { lo -= 0.05; hi += 0.05; }
  const pad = (hi - lo) * 0.08;
  lo = Math.max(0, lo - pad);
  hi += pad;
  const x = (s) => (L + (W - L - R) * s / maxStep).toFixed(1);
  const y = (v) => (T + (H - T - B) * (hi - v) / (hi - lo)).toFixed(1);
  for (let k = 0; k <= 4; k++) {
    const v = lo + (hi - lo) * k / 4;
    parts.push(svgEl("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
               svgEl("text", { x: L - 6, y: Number(y(v)) + 4, "text-anchor": "end" }, v.toFixed(2)));
  }
  for (const s of [0, Math.round(maxStep / 2), maxStep]) {
    parts.push(svgEl("text", { x: x(s), y: H - B + 16, "text-anchor": "middle" }, String(s)));
  }
  parts.push(svgEl("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, "step"),
             svgEl("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }),
             svgEl("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  for (const key of ["train", "valid"]) {
    const line = pts.filter((p) => Number.isFinite(p[key]));
    if (line.length > 1) {
      parts.push(svgEl("polyline", { class: key, points: line.map((p) => `${x(p.step)},${y(p[key])}`).join(" ") }));
    }
    if (line.length <= 80) {  // a mark per evaluation, while they are few enough to tell apart
      for (const p of line) {
        const dot = svgEl("circle", { class: key, cx: x(p.step), cy: y(p[key]), r: 2.5 });
        dot.append(svgEl("title", {}, `step ${p.step}: ${key === "train" ? "training" : "validation"} loss ` +
                                      p[key].toFixed(4)));
        parts.push(dot);
      }
    }
  }
  if (!pts.length) {
    parts.push(svgEl("text", { x: (L + W - R) / 2, y: (T + H - B) / 2, "text-anchor": "middle" },
                     "waiting for the first evaluation…"));
  }
  chart.replaceChildren(...parts);
  chart.dataset.points = pts.length;
}

// ---- recent jobs: reopen one ----
let jobsAsked = 0, jobsListed = false;
async function loadJobs() {
  const asked = ++jobsAsked;
  const note = (text) => {
    const li = document.createElement("li");
    li.className = "hint";
    li.textContent = text;
    return li;
  };
  try {
    const resp = await call(`${JOBS}?limit=5`);
    if (!resp.ok) throw new Error(await apiError(resp));
    const list = (await resp.json()).data;
    if (asked !== jobsAsked) return;
    $("tr-jobs").replaceChildren(...(list.length ? list.map((j) => {
      const li = document.createElement("li");
      const btn = document.createElement("button");
      btn.type = "button";
      btn.dataset.job = j.id;
      const when = new Date(j.created_at * 1000).toLocaleTimeString();
      btn.textContent = `${when} · ${j.id} · ${j.model}${j.suffix ? ` (${j.suffix})` : ""} · ${STATUS_WORDS[j.status] || j.status}` +
        (j.fine_tuned_model ? ` → ${j.fine_tuned_model}` : "");
      btn.title = "show this job";
      btn.addEventListener("click", () => follow(j));
      li.append(btn);
      return li;
    }) : [note("none yet")]));
    markListed();
    // a job still at work when the page opens: shown, as if never left
    if (!jobsListed && !train.job && list[0] && ACTIVE.includes(list[0].status)) follow(list[0]);
    jobsListed = true;
  } catch (err) {
    if (asked === jobsAsked) $("tr-jobs").replaceChildren(note(`The job list is unavailable: ${err.message}`));
  }
}

function markListed() {
  for (const b of document.querySelectorAll("#tr-jobs button")) {
    b.setAttribute("aria-current", String(!!train.job && b.dataset.job === train.job.id));
  }
}

// ---- wiring ---------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  state.model = new URLSearchParams(location.search).get("model") || null;  // ?model=NAME: chosen before
  if (!$("prompt").value) $("prompt").value = "ROMEO:\n";
  $("model").addEventListener("change", () => chooseModel($("model").value));
  $("model").addEventListener("focus", loadModels);  // a model added since shows up without a reload
  $("prompt").addEventListener("input", schedulePredict);
  $("generate").addEventListener("click", generate);
  $("stop-btn").addEventListener("click", stop);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !e.target.closest?.("#train")) {
      e.preventDefault();
      generate();
    } else if (e.key === "Escape") {
      stop();
    }
  });
  $("in-run").addEventListener("click", inspect);
  $("api-key").value = sessionStorage.getItem("charrnn-key") || "";
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("charrnn-key", $("api-key").value.trim());
    loadInfo();
    loadModels();
    predict();
    loadJobs();
  });
  $("in-what").addEventListener("change", drawHeat);
  $("in-layer").addEventListener("change", inspect);
  $("in-unit").addEventListener("change", inspect);
  $("train-form").addEventListener("submit", startTraining);
  $("tr-base").addEventListener("change", () => {
    $("tr-base").dataset.touched = "1";
    showScratch();
  });
  $("tr-unit").addEventListener("change", changeUnit);
  $("tr-cancel").addEventListener("click", cancelJob);
  $("tr-file").addEventListener("change", () => trError(""));
  showScratch();
  loadInfo();
  loadModels();
  predict();
  loadJobs();
});
