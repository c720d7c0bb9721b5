// enova chat: one page against the gateway, through this server's /api (same origin).
// The conversation, the settings and the token live in sessionStorage: this tab only.
"use strict";

const HISTORY_KEY = "enova.chat.history";
const SETTINGS_KEY = "enova.chat.settings";
const DEFAULTS = { model: "", system: "", temperature: 0.7, top_p: 1, max_tokens: 256, token: "" };

const $ = (id) => document.getElementById(id);
let history = load(HISTORY_KEY, []);
let settings = Object.assign({}, DEFAULTS, load(SETTINGS_KEY, {}));
let info = { gateway: "the gateway", token_file: false };
let controller = null;     // the AbortController of the answer being streamed
let retryTimer = null;

function load(key, fallback) {
  try {
    const raw = sessionStorage.getItem(key);
    return raw ? JSON.parse(raw) : fallback;
  } catch (e) {
    return fallback;
  }
}

function save() {
  sessionStorage.setItem(HISTORY_KEY, JSON.stringify(history));
  sessionStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
}

// -- notices --------------------------------------------------------------------------------

function notify(message, kind) {
  const box = $("notice");
  clearInterval(retryTimer);
  box.className = "notice" + (kind === "error" ? " error" : "");
  box.dataset.kind = kind || "info";
  box.textContent = message;
  box.hidden = false;
}

function clearNotice() {
  clearInterval(retryTimer);
  $("notice").hidden = true;
  $("notice").textContent = "";
}

// An error from /api: {"error": {"kind", "message", "retry_after", "detail"}}.
function showError(err) {
  let text = err.message;
  if (err.detail && err.detail !== err.message) text += "\n(" + err.detail + ")";
  notify(text, err.kind === "busy" || err.kind === "unavailable" ? "warn" : "error");
  if (err.retry_after) {
    const until = Date.now() + err.retry_after * 1000;
    const box = $("notice");
    retryTimer = setInterval(() => {
      const left = Math.ceil((until - Date.now()) / 1000);
      if (left <= 0) {
        clearInterval(retryTimer);
        box.textContent = text + "\nYou can retry now.";
      }
    }, 500);
  }
}

async function readError(resp) {
  try {
    const body = await resp.json();
    if (body && body.error && body.error.message) return body.error;
  } catch (e) { /* not JSON: fall through */ }
  return { kind: "upstream", message: "The web UI server answered HTTP " + resp.status + "." };
}

function serverGone() {
  return { kind: "unreachable",
           message: "The web UI server is not answering (was `enova webui run` stopped?). Reload the page when it is back." };
}

// -- the model picker ------------------------------------------------------------------------

function authHeaders() {
  const token = (settings.token || "").trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

async function loadModels() {
  const select = $("model");
  select.disabled = true;
  let resp;
  try {
    resp = await fetch("/api/models", { headers: authHeaders() });
  } catch (e) {
    fillModels([]);
    showError(serverGone());
    return false;
  }
  if (!resp.ok) {
    fillModels([]);
    showError(await readError(resp));
    return false;
  }
  const models = (await resp.json()).models || [];
  fillModels(models);
  if (!models.length) {
    notify("The gateway at " + info.gateway + " serves no model yet: apply a Deployment (`enova apply specs/`).", "warn");
    return false;
  }
  clearNotice();
  return true;
}

function fillModels(models) {
  const select = $("model");
  select.replaceChildren();
  if (!models.length) {
    select.append(new Option("(no models)", ""));
    select.disabled = true;
    return;
  }
  for (const id of models) select.append(new Option(id, id));
  select.value = models.includes(settings.model) ? settings.model : models[0];
  settings.model = select.value;
  select.disabled = false;
  save();
}

// -- the conversation -----------------------------------------------------------------------

function bubble(entry) {
  const el = document.createElement("div");
  el.className = "msg " + entry.role;
  el.dataset.state = entry.state || "done";
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = entry.role === "user" ? "you" : (entry.model || "assistant");
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = entry.content;
  const meta = document.createElement("span");
  meta.className = "meta";
  el.append(who, text, meta);
  describe(el, entry);
  return el;
}

function describe(el, entry) {
  el.dataset.state = entry.state || "done";
  const meta = el.querySelector(".meta");
  const parts = [];
  if (entry.state === "stopped") parts.push("stopped");
  if (entry.state === "error") parts.push("failed");
  if (entry.tokens) parts.push(entry.tokens + " tokens");
  if (entry.finish === "length") parts.push("cut at max tokens");
  meta.textContent = parts.join(" · ");
  meta.hidden = !parts.length;
}

function render() {
  const box = $("messages");
  box.replaceChildren();
  if (!history.length) {
    const p = document.createElement("p");
    p.id = "empty";
    p.className = "empty";
    p.textContent = "Ask something. Answers stream in as the model writes them; Stop cancels the request.";
    box.append(p);
  }
  for (const entry of history) box.append(bubble(entry));
  box.scrollTop = box.scrollHeight;
}

// What the model is sent: the system prompt, then every turn that has text and did not fail.
function conversation() {
  const turns = [];
  const system = (settings.system || "").trim();
  if (system) turns.push({ role: "system", content: system });
  for (const entry of history) {
    if (entry.state === "error" || entry.state === "streaming" || !entry.content) continue;
    turns.push({ role: entry.role, content: entry.content });
  }
  return turns;
}

function number(id, parse, low, high, lowOpen) {
  const raw = $(id).value.trim();
  const value = parse(raw);
  const ok = raw !== "" && Number.isFinite(value) && (lowOpen ? value > low : value >= low) && value <= high;
  return ok ? value : null;
}

// Reads and checks the settings fields; on a bad one says which, and (when sending) opens the
// panel on it. A check on leaving a field never takes the focus away from where the user went.
function readSettings(sending) {
  const checks = [
    ["temperature", parseFloat, 0, 2, false, "a number from 0 to 2"],
    ["top_p", parseFloat, 0, 1, true, "a number above 0 and at most 1"],
    ["max_tokens", (v) => (/^\d+$/.test(v) ? parseInt(v, 10) : NaN), 1, 32768, false, "a whole number from 1 to 32768"],
  ];
  for (const [id, parse, low, high, lowOpen, words] of checks) {
    const value = number(id, parse, low, high, lowOpen);
    if (value === null) {
      notify("Settings: " + id + " must be " + words + ".", "error");
      if (sending) {
        $("settings").hidden = false;
        $("toggle-settings").setAttribute("aria-expanded", "true");
        $(id).focus();
      }
      return false;
    }
    settings[id] = value;
  }
  settings.system = $("system").value;
  settings.token = $("token").value;
  save();
  return true;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  $("model").disabled = busy || !$("model").options.length || !$("model").value;
}

async function send() {
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  if (!readSettings(true)) return;
  if (!$("model").value && !(await loadModels())) return;
  settings.model = $("model").value;
  clearNotice();

  history.push({ role: "user", content: text });
  const messages = conversation();
  const answer = { role: "assistant", content: "", state: "streaming", model: settings.model };
  history.push(answer);
  $("prompt").value = "";
  render();
  const el = $("messages").lastElementChild;
  const textEl = el.querySelector(".text");
  save();

  controller = new AbortController();
  setBusy(true);
  const started = performance.now();
  let deployment = "";
  try {
    const resp = await fetch("/api/chat", {
      method: "POST",
      headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
      body: JSON.stringify({ model: settings.model, messages, temperature: settings.temperature,
                             top_p: settings.top_p, max_tokens: settings.max_tokens }),
      signal: controller.signal,
    });
    if (!resp.ok) {
      const err = await readError(resp);
      answer.state = "error";
      answer.content = err.message;
      showError(err);
      return;
    }
    deployment = resp.headers.get("X-Enova-Deployment") || "";
    await readStream(resp, answer, el, textEl);
    if (answer.state === "streaming") answer.state = "done";
  } catch (e) {
    if (e.name === "AbortError") {
      answer.state = "stopped";
      if (history.includes(answer)) {     // not when New chat threw the conversation away
        notify("Stopped: the request was cancelled, so the model stopped generating.", "info");
      }
    } else {
      answer.state = "error";
      const err = serverGone();
      answer.content = answer.content || err.message;
      showError(err);
    }
  } finally {
    controller = null;
    textEl.textContent = answer.content;
    describe(el, answer);
    setBusy(false);
    save();
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    $("status").textContent = "gateway " + info.gateway + (deployment ? " · deployment " + deployment : "") +
      " · last answer " + secs + " s";
  }
}

// Server-sent events from the gateway: `data: {chunk}` blocks, then `data: [DONE]`.
async function readStream(resp, answer, el, textEl) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const events = buffer.split(/\r?\n\r?\n/);
    buffer = events.pop();
    for (const event of events) handleEvent(event, answer);
    textEl.textContent = answer.content;
    describe(el, answer);
    const box = $("messages");
    box.scrollTop = box.scrollHeight;
  }
  if (buffer.trim()) handleEvent(buffer, answer);
}

function handleEvent(event, answer) {
  const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
  if (!data || data === "[DONE]") return;
  let chunk;
  try {
    chunk = JSON.parse(data);
  } catch (e) {
    return;
  }
  if (chunk.error) {
    answer.state = "error";
    const err = chunk.error.kind ? chunk.error : { kind: "upstream", message: chunk.error.message || "the stream broke" };
    showError(err);
    return;
  }
  const choice = (chunk.choices || [])[0];
  if (choice && choice.delta && choice.delta.content) answer.content += choice.delta.content;
  if (choice && choice.finish_reason) answer.finish = choice.finish_reason;
  if (chunk.usage && chunk.usage.completion_tokens) answer.tokens = chunk.usage.completion_tokens;
}

function stop() {
  if (controller) controller.abort();
}

// -- wiring ---------------------------------------------------------------------------------

async function start() {
  $("system").value = settings.system;
  $("temperature").value = settings.temperature;
  $("top_p").value = settings.top_p;
  $("max_tokens").value = settings.max_tokens;
  $("token").value = settings.token;
  // an answer that was streaming when the tab reloaded did not finish
  for (const entry of history) if (entry.state === "streaming") entry.state = "stopped";
  render();

  $("send").addEventListener("click", send);
  $("stop").addEventListener("click", stop);
  $("reload-models").addEventListener("click", () => { readSettings(false); loadModels(); });
  $("clear").addEventListener("click", () => {
    if (controller) controller.abort();
    history = [];
    save();
    render();
    clearNotice();
  });
  $("toggle-settings").addEventListener("click", () => {
    const panel = $("settings");
    panel.hidden = !panel.hidden;
    $("toggle-settings").setAttribute("aria-expanded", String(!panel.hidden));
  });
  $("model").addEventListener("change", () => { settings.model = $("model").value; save(); });
  for (const id of ["system", "temperature", "top_p", "max_tokens"]) $(id).addEventListener("change", () => readSettings(false));
  $("token").addEventListener("change", () => { settings.token = $("token").value; save(); loadModels(); });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });

  try {
    const resp = await fetch("/api/info");
    if (resp.ok) info = await resp.json();
  } catch (e) { /* the models call below reports it */ }
  if (info.token_file) $("token").placeholder = "sent by the web UI server (--token-file)";
  $("status").textContent = "gateway " + info.gateway;
  await loadModels();
  setBusy(false);
}

document.addEventListener("DOMContentLoaded", start);
