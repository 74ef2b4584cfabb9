// Calls to the diffplex API with the user's key, and its errors as readable exceptions.
// Every error body is {"error": {"message", "type", "param", "code"}}; `message` says what to change.

export class ApiError extends Error {
  constructor(message, { status = 0, code = null, param = null, jobStatus = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.param = param;
    this.jobStatus = jobStatus; // "failed" or "cancelled" when a job ended without images
  }
}

// The body's `error.message` when there is one; otherwise the status line, so a proxy's HTML page
// still reads as something a person can act on.
async function errorFrom(response) {
  let error = null;
  try {
    error = (await response.json()).error;
  } catch {
    // not JSON: fall through to the status text
  }
  if (error && typeof error.message === "string") {
    return new ApiError(error.message, { status: response.status, code: error.code, param: error.param });
  }
  return new ApiError(`the server answered ${response.status} ${response.statusText}`.trim(), {
    status: response.status,
  });
}

export class Api {
  constructor(getKey) {
    this.getKey = getKey;
  }

  headers(extra = {}) {
    const key = this.getKey().trim();
    return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
  }

  // `json` is sent as a JSON body, `form` (FormData) as multipart; the answer is parsed JSON, or the raw
  // Response when `raw` (server-sent events are read as a stream).
  async request(method, path, { json, form, raw = false, signal } = {}) {
    const init = { method, signal, headers: this.headers() };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (form !== undefined) {
      init.body = form; // the browser sets the multipart boundary itself
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(`could not reach the server (${error.message}): is it running?`);
    }
    if (!response.ok) throw await errorFrom(response);
    return raw ? response : response.json();
  }

  ready() {
    return fetch("/readyz").then(async (r) => ({ ok: r.ok, body: await r.json().catch(() => ({})) }));
  }

  listAdapters() {
    return this.request("GET", "/v1/adapters");
  }

  uploadAdapter(name, form) {
    return this.request("PUT", `/v1/adapters/${encodeURIComponent(name)}`, { form });
  }

  createJob(body) {
    return this.request("POST", "/v1/jobs", { json: body });
  }

  getJob(id) {
    return this.request("GET", `/v1/jobs/${encodeURIComponent(id)}`);
  }

  cancelJob(id) {
    return this.request("DELETE", `/v1/jobs/${encodeURIComponent(id)}`);
  }

  jobEvents(id, signal) {
    return this.request("GET", `/v1/jobs/${encodeURIComponent(id)}/events`, { raw: true, signal });
  }
}
