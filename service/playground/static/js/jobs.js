// One generation as an async job: POST /v1/jobs, then its progress from GET /v1/jobs/{id}/events.
// If the event stream drops before the end (a proxy, a restarted replica), the job is polled instead:
// the job itself is persisted on the server and finishes either way.

import { ApiError } from "./api.js";
import { readEvents } from "./sse.js";

const POLL_MS = 500;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("aborted", "AbortError"));
    });
  });
}

async function poll(api, id, signal) {
  while (true) {
    const job = await api.getJob(id);
    if (TERMINAL.has(job.status)) return job;
    await sleep(POLL_MS, signal);
  }
}

async function follow(api, id, onProgress, signal) {
  let response;
  try {
    response = await api.jobEvents(id, signal);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    return null; // polling reports the job's own state, or the same API error
  }
  try {
    for await (const { event, data } of readEvents(response)) {
      if (event === "queued") onProgress({ step: 0, total: data.total, status: "queued" });
      else if (event === "step") onProgress({ step: data.step, total: data.total, status: "running" });
      else if (event === "done" || event === "error") return data;
    }
  } catch (error) {
    if (error.name === "AbortError") throw error;
  }
  return null;
}

// Resolves to the job's result ({created, data: [{b64_json, seed, timings, revised_prompt?}]}); rejects with
// an ApiError carrying the server's message when the request is refused or the job fails.
// `onCreated(job)` gets the 202 answer (its id is what cancelling needs).
export async function runJob(api, body, { onCreated, onProgress, signal } = {}) {
  const job = await api.createJob(body);
  onCreated?.(job);
  let total = job.progress.total;
  const report = (progress) => {
    total = progress.total || total;
    onProgress?.(progress);
  };
  report({ step: job.progress.step, total, status: job.status });
  const final = (await follow(api, job.id, report, signal)) ?? (await poll(api, job.id, signal));
  if (final.status === "succeeded") {
    report({ step: total, total, status: "succeeded" });
    return final.result;
  }
  const error = final.error ?? {};
  throw new ApiError(error.message ?? `the job ended ${final.status}`, {
    code: error.code, param: error.param, jobStatus: final.status,
  });
}
