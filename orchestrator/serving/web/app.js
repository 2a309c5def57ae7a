// The anymoda chat page: plain JavaScript against the server's own API (no framework, no build, no CDN).
// The key stays in this browser (localStorage) and goes out only as the Authorization header.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const state = { key: localStorage.getItem("anymoda.key") || "", thread: null, busy: false };

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${state.key}`, ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

const json = async (path, options) => (await api(path, options)).json();
const post = (path, body) => json(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                           body: JSON.stringify(body || {}) });

function showError(error) { $("#error").textContent = error ? String(error.message || error) : ""; }

// ------------------------------------------------------------------ conversations

async function loadThreads() {
  const list = $("#threads");
  list.replaceChildren();
  for (const thread of await json("/v1/threads")) {
    const title = (thread.metadata && thread.metadata.title) || thread.thread_id;
    const item = element("li", { text: title, dataset: { thread: thread.thread_id } });
    if (thread.thread_id === state.thread) item.classList.add("current");
    item.addEventListener("click", () => openThread(thread.thread_id).catch(showError));
    list.append(item);
  }
}

async function openThread(threadId) {
  state.thread = threadId;
  $("#log").replaceChildren();
  const runs = await json(`/v1/threads/${encodeURIComponent(threadId)}/runs?limit=200`);
  for (const summary of runs.reverse()) {
    const turn = newTurn(summary.request, []);
    const run = await json(`/v1/threads/${threadId}/runs/${summary.run_id}`);
    for (const [taskId, task] of Object.entries(run.tasks)) setTask(turn, taskId, task.tool, statusOf(task.status));
    await showRun(turn, run);
  }
  await loadThreads();
}

async function ensureThread(firstMessage) {
  if (state.thread) return state.thread;
  const thread = await post("/v1/threads", { metadata: { title: firstMessage.slice(0, 40) || "conversation" } });
  state.thread = thread.thread_id;
  await loadThreads();
  return state.thread;
}

// ------------------------------------------------------------------ a turn on the page

function newTurn(text, fileNames) {
  const turn = element("article", { class: "turn" },
    element("div", { class: "user", text },
      fileNames.length ? element("span", { class: "sent", text: `attached: ${fileNames.join(", ")}` }) : null),
    element("div", { class: "assistant" },
      element("ul", { class: "plan" }), element("div", { class: "approval-slot" }),
      element("div", { class: "answer" }), element("div", { class: "outputs" }),
      element("div", { class: "status" })));
  $("#log").append(turn);
  turn.scrollIntoView({ block: "end" });
  return turn;
}

const statusOf = (status) => ({ done: "done", failed: "failed", cancelled: "cancelled", skipped: "cancelled",
                                awaiting_approval: "waiting", unavailable: "failed" }[status] || status);

function setTask(turn, taskId, tool, status, detail) {
  let item = turn.querySelector(`.task[data-task="${CSS.escape(taskId)}"]`);
  if (!item) {
    item = element("li", { class: "task", dataset: { task: taskId } });
    $(".plan", turn).append(item);
  }
  if (tool) item.dataset.tool = tool;
  item.dataset.status = status;
  item.textContent = `${taskId}: ${item.dataset.tool || ""} (${status}${detail ? ": " + detail : ""})`;
}

async function showRun(turn, run) {
  $(".answer", turn).textContent = run.answer || run.error || "";
  $(".status", turn).textContent = `run ${run.run_id}: ${run.status}`;
  turn.dataset.run = run.run_id;
  turn.dataset.status = run.status;
  const outputs = $(".outputs", turn);
  outputs.replaceChildren();
  for (const file of run.files || []) outputs.append(await outputElement(file));
  const slot = $(".approval-slot", turn);
  slot.replaceChildren();
  if (run.status === "awaiting_approval") slot.append(approvalBox(turn, run));
}

async function outputElement(file) {
  const blob = await (await api(file.url)).blob();
  const url = URL.createObjectURL(blob);
  const download = element("a", { class: "download", href: url, download: file.filename, text: `download ${file.filename}` });
  let preview = null;
  if (file.kind === "image") {
    preview = element("img", { class: "output", src: url, alt: file.filename });
  } else if (file.preview_url) {  // boxes, masks, series: drawn by the server over their image
    const drawn = URL.createObjectURL(await (await api(file.preview_url)).blob());
    preview = element("img", { class: "output preview", src: drawn, alt: `${file.kind} ${file.filename}` });
  } else if (file.kind === "audio") {
    preview = element("audio", { class: "output", src: url, controls: "" });
  } else if (file.kind === "text" && blob.size < 100000) {
    preview = element("pre", { class: "output", text: await blob.text() });
  }
  return element("figure", { dataset: { kind: file.kind, file: file.id } }, preview, element("figcaption", {}, download));
}

function approvalBox(turn, run) {
  const names = run.pending_approval.map((t) => `${t.id} (${t.tool})`).join(", ");
  const box = element("div", { class: "approval" }, element("span", { text: `Waiting for your approval: ${names}` }));
  for (const [label, decision] of [["Approve", true], ["Deny", false]]) {
    const button = element("button", { type: "button", class: decision ? "approve" : "deny", text: label });
    button.addEventListener("click", () => {
      box.remove();
      follow(turn, `/v1/threads/${state.thread}/runs/${run.run_id}/resume?stream=1`, { command: { resume: decision } })
        .catch(showError);
    });
    box.append(button);
  }
  return box;
}

// ------------------------------------------------------------------ sending and following a run

async function follow(turn, path, body) {
  // EventSource cannot send an Authorization header, so the stream is read with fetch.
  const response = await api(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                     body: JSON.stringify(body) });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", runId = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const name = (frame.match(/^event: (.*)$/m) || [])[1];
      const data = JSON.parse((frame.match(/^data: (.*)$/m) || [null, "null"])[1]);
      if (name === "metadata") runId = data.run_id;
      else if (data && data.type) onEvent(turn, data);
    }
  }
  await showRun(turn, await json(`/v1/threads/${state.thread}/runs/${runId}`));
}

function onEvent(turn, event) {
  const data = event.data || {};
  if (event.type === "plan_ready") {
    for (const task of data.plan.tasks) setTask(turn, task.id, task.tool, "planned");
  } else if (event.type === "task_started") setTask(turn, event.task, data.tool, "running");
  else if (event.type === "task_finished") setTask(turn, event.task, data.tool, "done");
  else if (event.type === "task_failed") setTask(turn, event.task, data.tool, "failed", data.error);
  else if (["task_skipped", "task_cancelled"].includes(event.type)) setTask(turn, event.task, data.tool, "cancelled");
  else if (event.type === "approval_needed") for (const task of data.tasks) setTask(turn, task.id, task.tool, "waiting");
  else if (event.type === "answer_token") $(".answer", turn).textContent += data.text || "";
  else if (event.type === "answer") $(".answer", turn).textContent = data.text || "";
  $(".status", turn).textContent = event.type.replace(/_/g, " ");
}

async function upload(file) {
  const form = new FormData();
  form.append("purpose", "user_data");
  form.append("file", file, file.name);
  return json("/v1/files", { method: "POST", body: form });
}

async function send(event) {
  event.preventDefault();
  if (state.busy) return;
  const text = $("#message").value.trim();
  const files = Array.from($("#attach").files);
  if (!text && !files.length) return;
  state.busy = true;
  $("#send").disabled = true;
  showError(null);
  try {
    const threadId = await ensureThread(text);
    const uploaded = [];
    for (const file of files) uploaded.push((await upload(file)).id);
    const turn = newTurn(text, files.map((f) => f.name));
    $("#message").value = "";
    $("#attach").value = "";
    $("#attachments").textContent = "";
    await follow(turn, `/v1/threads/${threadId}/runs/stream`, { input: { message: text, files: uploaded } });
  } catch (error) {
    showError(error);
  } finally {
    state.busy = false;
    $("#send").disabled = false;
  }
}

async function useKey(event) {
  if (event) event.preventDefault();
  const typed = $("#key").value.trim();
  if (typed) state.key = typed;
  try {
    await json("/v1/models");
    localStorage.setItem("anymoda.key", state.key);
    $("#key-state").textContent = "connected";
    $("#key").value = "";
    await loadThreads();
  } catch (error) {
    $("#key-state").textContent = `not connected: ${error.message}`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#key-form").addEventListener("submit", useKey);
  $("#composer").addEventListener("submit", send);
  $("#message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) send(event);
  });
  $("#attach").addEventListener("change", () => {
    $("#attachments").textContent = Array.from($("#attach").files).map((f) => f.name).join(", ");
  });
  $("#new-thread").addEventListener("click", () => {
    state.thread = null;
    $("#log").replaceChildren();
    loadThreads().catch(showError);
  });
  if (state.key) useKey();
});
