// The tenant's adapters (GET /v1/adapters) as toggles with weights, and the upload form
// (PUT /v1/adapters/{name}, multipart). Toggles survive a refresh of the list.

import { element } from "./dom.js";

const KINDS = { lora: "LoRA", textual_inversion: "embedding", vpt: "VPT" };

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

// One short line for people: size plus what the server found in the file.
function summary(meta) {
  const parts = [formatBytes(meta.size)];
  const d = meta.detail ?? {};
  if (meta.kind === "lora") parts.push(`rank ${d.rank}`, `${d.layers} layers`);
  if (meta.kind === "vpt") parts.push(`${d.tokens} tokens`, `depth ${d.depth}`);
  if (meta.tokens?.length) parts.push(`token ${meta.tokens.join(", ")}`);
  return parts.join(" · ");
}

export class AdapterPanel {
  constructor(api, { list, empty }) {
    this.api = api;
    this.list = list;
    this.empty = empty;
    this.choices = new Map(); // name -> {on, weight}
  }

  // Adapters switched on, as the API's `adapters` field.
  selected() {
    return [...this.choices].filter(([, c]) => c.on).map(([name, c]) => ({ name, weight: c.weight }));
  }

  async refresh() {
    const { data } = await this.api.listAdapters();
    this.render(data);
    return data;
  }

  clear(message) {
    this.list.replaceChildren();
    this.empty.textContent = message;
    this.empty.hidden = false;
  }

  render(adapters) {
    const names = new Set(adapters.map((a) => a.name));
    for (const name of [...this.choices.keys()]) if (!names.has(name)) this.choices.delete(name);
    if (!adapters.length) {
      this.clear("No adapters yet: upload one below.");
      return;
    }
    this.empty.hidden = true;
    this.list.replaceChildren(...adapters.map((meta) => this.row(meta)));
  }

  row(meta) {
    if (meta.kind === "textual_inversion") return this.embeddingRow(meta);
    const choice = this.choices.get(meta.name) ?? { on: false, weight: 1 };
    this.choices.set(meta.name, choice);
    const toggle = element("input", { type: "checkbox", checked: choice.on });
    toggle.setAttribute("aria-label", `use ${meta.name}`);
    const weight = element("input", {
      type: "range", min: "-2", max: "2", step: "0.05", value: String(choice.weight), disabled: !choice.on,
    });
    weight.setAttribute("aria-label", `weight of ${meta.name}`);
    const shown = element("output", { textContent: choice.weight.toFixed(2) });
    toggle.addEventListener("change", () => {
      choice.on = toggle.checked;
      weight.disabled = !toggle.checked;
      item.classList.toggle("on", toggle.checked);
    });
    weight.addEventListener("input", () => {
      choice.weight = Number(weight.value);
      shown.textContent = choice.weight.toFixed(2);
    });
    const item = element("li", { className: `adapter${choice.on ? " on" : ""}` }, [
      element("label", { className: "adapter-name" }, [
        toggle,
        element("span", { textContent: meta.name }),
        element("span", { className: `badge ${meta.kind}`, textContent: KINDS[meta.kind] ?? meta.kind }),
      ]),
      element("div", { className: "weight" }, [weight, shown]),
      element("small", { className: "muted", textContent: summary(meta) }),
    ]);
    item.dataset.adapter = meta.name;
    return item;
  }

  // An embedding acts through its token in the prompt (naming it in `adapters` is refused): no toggle, no
  // weight, the token to write instead.
  embeddingRow(meta) {
    this.choices.delete(meta.name);
    const tokens = (meta.tokens ?? []).join(" ");
    const item = element("li", { className: "adapter" }, [
      element("div", { className: "adapter-name" }, [
        element("span", { textContent: meta.name }),
        element("span", { className: `badge ${meta.kind}`, textContent: KINDS[meta.kind] }),
      ]),
      element("small", { className: "hint", textContent: `write ${tokens} in the prompt to use it` }),
      element("small", { className: "muted", textContent: summary(meta) }),
    ]);
    item.dataset.adapter = meta.name;
    return item;
  }

  // Uploads the form's file; resolves to the adapter's metadata (a replaced one is re-listed the same way).
  async upload(form) {
    const fields = new FormData(form);
    const name = String(fields.get("name") ?? "").trim();
    const file = fields.get("file");
    if (!name) throw new Error("give the adapter a name (letters, digits, - and _)");
    if (!(file instanceof File) || !file.size) throw new Error("choose the adapter file to upload");
    const body = new FormData();
    body.append("file", file, file.name);
    for (const key of ["kind", "token"]) {
      const value = String(fields.get(key) ?? "").trim();
      if (value) body.append(key, value);
    }
    const meta = await this.api.uploadAdapter(name, body);
    if (meta.kind !== "textual_inversion") {
      const choice = this.choices.get(name) ?? { on: false, weight: 1 };
      choice.on = true; // just uploaded: the next generation tries it
      this.choices.set(name, choice);
    }
    await this.refresh();
    return meta;
  }
}
