// Wires the page: the API key (kept in localStorage), the generate form, adapters, progress, results and
// the error banner, which always shows the API's own `error.message`.

import { AdapterPanel } from "./adapters.js";
import { Api } from "./api.js";
import { runJob } from "./jobs.js";
import { Progress } from "./progress.js";
import { renderRun } from "./results.js";

const KEY_STORAGE = "diffplex.apiKey";
const READY_RETRY_MS = 5000;
// The prompt tags the server reads as adapters (service/generation/prompt.py): dropped for the "without" twin.
const TAG = /<(lora|lyco|vpt):[^:<>]+(:[^<>]*)?>/gi;

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
const api = new Api(() => keyInput.value);
const adapters = new AdapterPanel(api, { list: $("adapter-list"), empty: $("adapters-empty") });
const progress = new Progress({ bar: $("progress"), label: $("progress-label"), count: $("progress-count") });
let running = null; // {controller, jobIds} while a generation runs

function showError(error, title) {
  $("error-title").textContent = title;
  $("error-message").textContent = error.message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

async function checkServer() {
  const pill = $("server-status");
  try {
    const { ok, body } = await api.ready();
    pill.textContent = ok ? `ready · ${body.backend}` : (body.error?.message ?? "not ready");
    pill.className = `pill ${ok ? "ok" : "warn"}`;
    if (ok) return;
  } catch {
    pill.textContent = "server unreachable";
    pill.className = "pill bad";
  }
  setTimeout(checkServer, READY_RETRY_MS);
}

async function loadAdapters() {
  if (!keyInput.value.trim()) {
    adapters.clear("Enter your API key to list your adapters.");
    return;
  }
  try {
    await adapters.refresh();
  } catch (error) {
    adapters.clear("Could not list your adapters.");
    showError(error, "Could not list your adapters");
  }
}

// A number field: undefined when empty (the server's default applies); an Error when not a number.
function numberField(id, label) {
  const input = $(id);
  if (input.validity.badInput) throw new Error(`${label} must be a number`);
  return input.value.trim() === "" ? undefined : Number(input.value);
}

function readSettings() {
  const size = $("size").value.trim();
  return {
    prompt: $("prompt").value,
    negative_prompt: $("negative-prompt").value,
    size: size || undefined,
    n: numberField("n", "Images"),
    steps: numberField("steps", "Steps"),
    guidance_scale: numberField("guidance", "Guidance"),
    sampler: $("sampler").value,
    seed: numberField("seed", "Seed"),
    adapters: adapters.selected(),
    response_format: "b64_json",
  };
}

function setBusy(busy) {
  $("generate").disabled = busy;
  $("generate").textContent = busy ? "Generating…" : "Generate";
  $("cancel").hidden = !busy;
}

async function generate(event) {
  event.preventDefault();
  clearError();
  if (running) return;
  let settings;
  try {
    if (!keyInput.value.trim()) throw new Error("enter your API key first (an admin creates one per tenant)");
    settings = readSettings();
  } catch (error) {
    showError(error, "Cannot generate");
    return;
  }
  const bodies = [settings];
  if ($("compare").checked) {
    const baseline = { ...settings, adapters: [], prompt: settings.prompt.replace(TAG, " ").trim() };
    if (!settings.adapters.length && baseline.prompt === settings.prompt) {
      showError(new Error("switch on an adapter (or write a <lora:name:weight> tag) to compare with and "
        + "without it"), "Nothing to compare");
      return;
    }
    // Both runs need the same seed: pick it here when the field is empty (the server would pick two).
    settings.seed ??= Math.floor(Math.random() * 2 ** 31);
    baseline.seed = settings.seed;
    bodies.push(baseline);
  }
  running = { controller: new AbortController(), jobIds: [] };
  const { signal } = running.controller;
  setBusy(true);
  progress.begin(bodies.length);
  try {
    const results = await Promise.all(
      bodies.map((body, i) =>
        runJob(api, body, {
          signal,
          onCreated: (job) => running.jobIds.push(job.id),
          onProgress: (p) => progress.update(i, p),
        }),
      ),
    );
    progress.finish();
    $("results-empty").hidden = true;
    renderRun($("results"), settings, results[0], results[1] ?? null);
  } catch (error) {
    await cancelJobs(); // a side-by-side twin must not run on alone
    if (error.jobStatus === "cancelled" || error.name === "AbortError") {
      progress.fail("Cancelled");
    } else {
      progress.fail("Failed");
      showError(error, "Generation refused");
    }
  } finally {
    running.controller.abort();
    running = null;
    setBusy(false);
  }
}

async function cancelJobs() {
  const ids = running?.jobIds ?? [];
  await Promise.allSettled(ids.map((id) => api.cancelJob(id)));
}

async function upload(event) {
  event.preventDefault();
  clearError();
  const status = $("upload-status");
  status.textContent = "Uploading…";
  try {
    const meta = await adapters.upload(event.target);
    status.textContent = `Uploaded ${meta.name} (${meta.kind}): switched on for the next generation.`;
    event.target.reset();
  } catch (error) {
    status.textContent = "";
    showError(error, "Upload refused");
  }
}

function init() {
  keyInput.value = localStorage.getItem(KEY_STORAGE) ?? "";
  keyInput.addEventListener("input", () => localStorage.setItem(KEY_STORAGE, keyInput.value.trim()));
  keyInput.addEventListener("change", () => {
    clearError();
    loadAdapters();
  });
  $("key-form").addEventListener("submit", (e) => e.preventDefault());
  $("key-toggle").addEventListener("click", () => {
    const hidden = keyInput.type === "password";
    keyInput.type = hidden ? "text" : "password";
    $("key-toggle").textContent = hidden ? "hide" : "show";
  });
  $("generate-form").addEventListener("submit", generate);
  $("cancel").addEventListener("click", cancelJobs);
  $("upload-form").addEventListener("submit", upload);
  $("adapters-refresh").addEventListener("click", () => {
    clearError();
    loadAdapters();
  });
  $("error-close").addEventListener("click", clearError);
  checkServer();
  loadAdapters();
}

init();
