// The playground: talks to the same public API as any client (/info, /predict-next, /generate).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, predict: null, predictTimer: 0, gen: null };

// Characters that would be invisible in a bar label or a list.
function visible(ch) {
  return { "\n": "⏎", " ": "␣", "\t": "⇥" }[ch] ?? ch;
}
function charName(ch) {
  return { "\n": "newline", " ": "space", "\t": "tab" }[ch] ?? ch;
}

// ---- errors: the API's {"error": {type, message, details}} as a sentence ----------------------
async function apiError(resp) {
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON */ }
  const e = body && body.error;
  if (!e) return `HTTP ${resp.status}`;
  return describe(e, resp.status);
}
function describe(e, status) {
  let text = e.message;
  const details = e.details || [];
  if (e.type === "unknown_characters") {
    const chars = details.flatMap((d) => d.chars || []);
    text += `. Not in the model's vocabulary: ${chars.map((c) => `“${visible(c)}”`).join(" ")}`;
  } else if (e.type === "validation_error") {
    text = "Invalid settings: " + details.map((d) => `${d.field}: ${d.message}`).join("; ");
  }
  return status ? `${text} (HTTP ${status}, ${e.type})` : `${text} (${e.type})`;
}
function showError(msg) {
  $("error").textContent = msg;
  $("error").hidden = !msg;
}

// ---- model card -----------------------------------------------------------------------------
async function loadInfo() {
  try {
    const resp = await fetch("/info");
    if (!resp.ok) throw new Error(await apiError(resp));
    const info = await resp.json();
    state.info = info;
    const m = info.model;
    const loss = m.val_loss == null ? "n/a" : `${m.val_loss.toFixed(4)} nats/char`;
    $("card").textContent = `${m.weights} · ${m.layers}×${m.hidden} LSTM, ${m.parameters.toLocaleString("en")} ` +
      `parameters, ${m.vocab_size} characters · validation loss ${loss} · ${info.device}, ${info.precision}`;
    $("max_new_chars").max = info.limits.max_new_chars;
  } catch (err) {
    $("card").textContent = `Model card unavailable: ${err.message}`;
  }
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
    const resp = await fetch("/predict-next", {
      method: "POST", headers: { "Content-Type": "application/json" }, signal: ctrl.signal,
      body: JSON.stringify({ text, top_k: 10 }),
    });
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

// ---- generation, streamed -------------------------------------------------------------------
function number(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function request() {
  const body = {
    prompt: $("prompt").value,
    temperature: number("temperature") ?? 0.8,
    repetition_penalty: number("repetition_penalty") ?? 1,
    max_new_chars: number("max_new_chars") ?? 200,
    stream: true,
  };
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
    const resp = await fetch("/generate", {
      method: "POST", headers: { "Content-Type": "application/json" }, signal: ctrl.signal,
      body: JSON.stringify(body),
    });
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

// ---- wiring ---------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  if (!$("prompt").value) $("prompt").value = "ROMEO:\n";
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
  loadInfo();
  predict();
});
