// The playground: talks to the same public API as any client (/v1/models, /info, /predict-next,
// /generate, /inspect).
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
function call(path, body, signal) {
  const headers = {};
  const key = sessionStorage.getItem("charrnn-key");
  if (key) headers.Authorization = `Bearer ${key}`;
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
async function apiError(resp) {
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON */ }
  const e = body && body.error;
  if (resp.status === 401) {
    askForKey();
    return "This server needs an API key: enter it under “API key” above. " + (e ? `(${e.message})` : "");
  }
  if (!e) return `HTTP ${resp.status}`;
  if (e.type === "model_not_found") loadModels();  // the chosen model is gone: the picker shows it
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
  return status ? `${text} (HTTP ${status}, ${e.type})` : `${text} (${e.type})`;
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
  } catch (err) {
    if (asked === modelsAsked) $("card").textContent = `Model list unavailable: ${err.message}`;
  }
}

function chosenCard() {
  return state.models.find((m) => m.id === state.model) || null;
}

// "lstm 2×512, validation loss 1.400 (stateful)": what tells models apart in the picker.
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
    const card = chosenCard();
    if (card && !card.loaded) loadModels();  // it is now: its card says so, with its precision
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
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {  // one server-sent event per blank line
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
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
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
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
  });
  $("in-what").addEventListener("change", drawHeat);
  $("in-layer").addEventListener("change", inspect);
  $("in-unit").addEventListener("change", inspect);
  loadInfo();
  loadModels();
  predict();
});
