// The results grid: one block per run (newest first) with its settings, each image with its seed and
// timings; a side-by-side run pairs each seed with its twin rendered without adapters.

import { element } from "./dom.js";

const TIMINGS = ["queue_s", "text_s", "denoise_s", "decode_s"];

function seconds(value) {
  return value >= 10 ? `${value.toFixed(1)} s` : `${value.toFixed(2)} s`;
}

function figure(item, label) {
  const t = item.timings ?? {};
  const breakdown = TIMINGS.filter((k) => k in t).map((k) => `${k.replace("_s", "")} ${seconds(t[k])}`);
  const caption = element("figcaption", {}, [
    element("span", { className: "seed", textContent: `seed ${item.seed}` }),
    element("span", { className: "total", textContent: "total_s" in t ? seconds(t.total_s) : "" }),
  ]);
  const fig = element("figure", { className: "result" }, [
    element("img", { src: `data:image/png;base64,${item.b64_json}`, alt: `${label}, seed ${item.seed}` }),
    caption,
    element("small", { className: "muted breakdown", textContent: breakdown.join(" · ") }),
  ]);
  fig.dataset.seed = String(item.seed);
  if (label) fig.prepend(element("span", { className: "label", textContent: label }));
  return fig;
}

function describe(settings) {
  const adapters = settings.adapters.length
    ? settings.adapters.map((a) => `${a.name} ${a.weight.toFixed(2)}`).join(", ")
    : "no adapters";
  const parts = [
    settings.size ?? "native size",
    settings.steps !== undefined && `${settings.steps} steps`,
    settings.sampler,
    settings.guidance_scale !== undefined && `cfg ${settings.guidance_scale}`,
    adapters,
  ];
  return parts.filter(Boolean).join(" · ");
}

export function adapterLabel(adapters) {
  return adapters.length ? `with ${adapters.map((a) => `${a.name} ${a.weight.toFixed(2)}`).join(", ")}` : "";
}

// `result` and `baseline` are job results ({data: [...]}); `baseline` only for a side-by-side run.
export function renderRun(container, settings, result, baseline = null) {
  const prompt = result.data[0]?.revised_prompt ?? settings.prompt;
  const head = element("header", {}, [
    element("p", { className: "prompt", textContent: prompt }),
    element("small", { className: "muted", textContent: describe(settings) }),
  ]);
  let images;
  if (baseline) {
    const withLabel = adapterLabel(settings.adapters);
    images = result.data.map((item, i) =>
      element("div", { className: "pair" }, [figure(item, withLabel), figure(baseline.data[i], "without adapters")]),
    );
  } else {
    images = result.data.map((item) => figure(item, ""));
  }
  // what the server honoured only in part (unknown tokens, untrained words, another size): never hidden
  const warnings = result.warnings ?? [];
  if (warnings.length) {
    head.append(element("ul", { className: "warnings" }, warnings.map((w) => element("li", { textContent: w }))));
  }
  const run = element("article", { className: baseline ? "run compare" : "run" }, [
    head,
    element("div", { className: "images" }, images),
  ]);
  container.prepend(run);
  return run;
}
