// Generations: the most recent generations, newest first. With MG_KEEP_THUMBNAILS a gallery of their
// images; without it their ledger rows. The prompt shows only where the gateway keeps prompts
// (MG_LOG_PROMPTS). Click one for its details.

import * as api from "../api.js";
import {el, ms, replace, usd, when} from "../dom.js";

const SHOWN = 120;

function thumbnailsKept() {
  return document.querySelector('meta[name="mg-thumbnails"]')?.content === "on";
}

export async function showGenerations(page) {
  const projects = await api.projects.list();
  const filters = {
    project: el("select", {id: "filter-project", "aria-label": "Project"},
      el("option", {value: ""}, "All projects"), projects.map((p) => el("option", {value: p.name}, p.name))),
    outcome: el("select", {id: "filter-outcome", "aria-label": "Outcome"},
      el("option", {value: ""}, "Any outcome"), el("option", {value: "ok"}, "ok"),
      el("option", {value: "partial"}, "partial"), el("option", {value: "error"}, "errors and refusals")),
  };
  const results = el("div", {id: "generations"});
  const reload = async () => {
    const outcome = filters.outcome.value;
    // (one outcome is filtered by the API; "errors and refusals" are every outcome but two)
    const rows = await api.ledger(
      {project: filters.project.value, outcome: outcome === "error" ? "" : outcome},
      {limit: outcome === "error" ? 4 * SHOWN : SHOWN});
    const shown = rows.filter((row) => matchesOutcome(row, outcome)).slice(0, SHOWN);
    replace(results, thumbnailsKept() ? gallery(shown) : table(shown));
  };
  for (const select of Object.values(filters)) select.addEventListener("change", () => { reload(); });
  page.append(
    el("h1", {}, "Generations"),
    el("div", {class: "filters"}, filters.project, filters.outcome),
    el("p", {class: "hint"}, thumbnailsKept()
      ? "Newest first; thumbnails are kept as long as hosted files (MG_KEEP_THUMBNAILS)."
      : "Thumbnails are not kept on this gateway (MG_KEEP_THUMBNAILS is off): the ledger's rows."),
    results,
  );
  await reload();
}

function matchesOutcome(row, wanted) {
  if (!wanted) return true;
  if (wanted === "error") return row.outcome !== "ok" && row.outcome !== "partial";
  return row.outcome === wanted;
}

function promptOf(row) {
  return typeof row.prompt === "string" ? row.prompt : null;
}

function gallery(rows) {
  if (!rows.length) return el("p", {class: "hint"}, "No generations yet.");
  return el("div", {class: "gallery"}, rows.map((row) => {
    const prompt = promptOf(row);
    const image = Number(row.images_returned) > 0
      ? el("img", {src: api.thumbnailUrl(row.request_id, 0), alt: prompt || `image of ${row.request_id}`, loading: "lazy", width: 256, height: 256})
      : el("div", {class: "no-image"}, row.outcome);
    const tile = el("button", {type: "button", class: `tile-image outcome-${outcomeClass(row)}`, "data-request-id": row.request_id},
      image,
      el("span", {class: "caption"},
        prompt === null ? null : el("span", {class: "prompt"}, prompt),
        el("span", {class: "meta"}, `${row.model} · ${row.project || row.project_id}`),
        el("span", {class: "meta"}, `${usd(row.cost_micros)} · ${ms(Number(row.upstream_latency_ms))} · ${row.outcome}`)),
    );
    tile.addEventListener("click", () => details(row));
    return tile;
  }));
}

function table(rows) {
  if (!rows.length) return el("p", {class: "hint"}, "No generations yet.");
  return el("table", {class: "rows"},
    el("thead", {}, el("tr", {}, ["When", "Project", "Model", "Prompt", "Images", "Cost", "Latency", "Outcome"]
      .map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((row) => {
      const tr = el("tr", {class: `clickable outcome-${outcomeClass(row)}`, "data-request-id": row.request_id, tabindex: 0},
        el("td", {}, when(row.created_at)),
        el("td", {}, row.project || row.project_id),
        el("td", {}, row.model),
        el("td", {class: "prompt"}, promptOf(row) ?? "–"),
        el("td", {class: "num"}, `${row.images_returned}/${row.n_requested}`),
        el("td", {class: "num"}, usd(row.cost_micros)),
        el("td", {class: "num"}, ms(Number(row.upstream_latency_ms))),
        el("td", {}, row.outcome));
      tr.addEventListener("click", () => details(row));
      tr.addEventListener("keydown", (event) => { if (event.key === "Enter") details(row); });
      return tr;
    })),
  );
}

function outcomeClass(row) {
  return row.outcome === "ok" ? "ok" : row.outcome === "partial" ? "partial" : "failed";
}

/** Everything the ledger says about one generation, and its images when thumbnails are kept. */
function details(row) {
  const fields = [
    ["Request", row.request_id],
    ["When", when(row.created_at)],
    ["Project", row.project || row.project_id],
    ["Key", row.key_id],
    ["Model", row.model],
    ["Provider", row.provider],
    ["Size", row.size],
    ["Quality", row.quality || "–"],
    ["Images", `${row.images_returned} of ${row.n_requested}`],
    ["Cost", usd(row.cost_micros)],
    ["Input tokens", String(row.input_tokens || 0)],
    ["Upstream latency", ms(Number(row.upstream_latency_ms))],
    ["Outcome", row.outcome],
    ["Idempotency key", row.idempotency_key || "–"],
    ["Upstream request", row.upstream_request_id || "–"],
    ["Prompt", promptOf(row) ?? "not kept (MG_LOG_PROMPTS is off)"],
  ];
  const images = thumbnailsKept()
    ? Array.from({length: Number(row.images_returned) || 0}, (_, i) =>
        el("img", {src: api.thumbnailUrl(row.request_id, i), alt: `image ${i + 1}`, width: 256, height: 256}))
    : [];
  const close = el("button", {type: "button", class: "quiet"}, "Close");
  const dialog = el("dialog", {id: "generation-details"},
    el("h2", {}, "Generation"),
    images.length ? el("div", {class: "detail-images"}, images) : null,
    el("dl", {}, fields.map(([name, value]) => [el("dt", {}, name), el("dd", {}, value)])),
    close);
  close.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}
