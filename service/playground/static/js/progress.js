// The progress bar over one or more jobs (a side-by-side run is two): steps summed over the jobs, fed by
// their server-sent events.

export class Progress {
  constructor({ bar, label, count }) {
    this.bar = bar;
    this.label = label;
    this.count = count;
    this.jobs = [];
  }

  begin(jobs) {
    this.jobs = Array.from({ length: jobs }, () => ({ step: 0, total: 0, status: "queued" }));
    this.started = performance.now();
    this.show("Submitting…", 0, 1, "");
  }

  update(index, { step, total, status }) {
    const job = this.jobs[index];
    Object.assign(job, { step, total: total || job.total, status });
    const done = this.jobs.reduce((sum, j) => sum + j.step, 0);
    const overall = this.jobs.reduce((sum, j) => sum + j.total, 0);
    const waiting = this.jobs.every((j) => j.status === "queued");
    this.show(waiting ? "Queued" : "Generating…", done, overall || 1, overall ? `step ${done} / ${overall}` : "");
  }

  finish(text) {
    const total = this.jobs.reduce((sum, j) => sum + j.total, 0) || 1;
    const elapsed = ((performance.now() - this.started) / 1000).toFixed(2);
    this.show(text ?? `Done in ${elapsed} s`, total, total, this.count.textContent);
  }

  fail(text) {
    this.label.textContent = text;
    this.bar.closest(".progress-card")?.classList.add("failed");
  }

  show(text, value, max, count) {
    this.label.textContent = text;
    this.bar.max = max;
    this.bar.value = value;
    this.count.textContent = count;
    this.bar.closest(".progress-card")?.classList.remove("failed");
  }
}
