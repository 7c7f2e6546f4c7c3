// Models: the whole catalog, whether each model's provider is configured, its prices, and the
// aliases that point at it.

import * as api from "../api.js";
import {el, usd} from "../dom.js";

export async function showModels(page) {
  const entries = await api.catalog();
  const models = entries.filter((m) => !m.alias_of);
  const aliases = new Map();
  for (const entry of entries.filter((m) => m.alias_of)) {
    if (!aliases.has(entry.alias_of)) aliases.set(entry.alias_of, []);
    aliases.get(entry.alias_of).push(entry.id);
  }
  const available = models.filter((m) => m.available).length;
  page.append(
    el("h1", {}, "Models"),
    el("p", {class: "hint"}, `${models.length} models, ${available} with a configured provider.`),
    el("table", {id: "models"},
      el("thead", {}, el("tr", {}, ["Model", "Provider", "Available", "Per image", "Sizes", "Aliases"].map((h) => el("th", {}, h)))),
      el("tbody", {}, models.map((model) => el("tr", {"data-model": model.id, class: model.available ? "" : "unavailable"},
        el("td", {}, el("code", {}, model.id)),
        el("td", {}, model.owned_by),
        el("td", {}, model.available ? "yes" : "no"),
        el("td", {class: "num"}, price(model.price)),
        el("td", {}, sizes(model.capabilities)),
        el("td", {}, (aliases.get(model.id) || []).map((a) => el("code", {class: "alias"}, a))))))),
  );
}

function price(p) {
  if (!p) return "–";
  const perImage = p.per_image_micros || {};
  const base = perImage.default !== undefined ? usd(perImage.default) : "";
  const tokens = p.per_million_tokens_micros;
  const others = Object.keys(perImage).filter((k) => k !== "default").length;
  return [base || null, others ? `(${others} variants)` : null, tokens ? "+ tokens" : null].filter(Boolean).join(" ") || "–";
}

function sizes(caps) {
  if (!caps) return "";
  if (caps.sizes && caps.sizes.length) return caps.sizes.join(", ");
  const rule = caps.size_rule;
  return rule ? `${rule.min_width}–${rule.max_width} × ${rule.min_height}–${rule.max_height}` : "";
}
