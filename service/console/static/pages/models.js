// Models: the whole catalog, whether each model's provider is configured, its prices, and the
// aliases that point at it.

import * as api from "../api.js";
import {el, usd} from "../dom.js";

export async function showModels(page) {
  const entries = await api.catalog();
  const isRoute = (m) => Array.isArray(m.route) && m.route.length > 0;
  const models = entries.filter((m) => !m.alias_of && !isRoute(m));
  // model id -> the aliases naming it, and the routes (fallback lists) that try it
  const aliases = new Map();
  const routes = new Map();
  const note = (map, id, name) => { if (!map.has(id)) map.set(id, []); map.get(id).push(name); };
  for (const entry of entries) {
    if (entry.alias_of) note(aliases, entry.alias_of, entry.id);
    if (isRoute(entry)) entry.route.forEach((target, i) => note(routes, target, `${entry.id} (#${i + 1})`));
  }
  const available = models.filter((m) => m.available).length;
  page.append(
    el("h1", {}, "Models"),
    el("p", {class: "hint"}, `${models.length} models, ${available} callable now (provider configured, no open circuit). `
      + "Routes are aliases that try several models in order; #n is a model's place in one."),
    el("table", {id: "models"},
      el("thead", {}, el("tr", {}, ["Model", "Provider", "Available", "Per image", "Sizes", "Aliases", "Routes"].map((h) => el("th", {}, h)))),
      el("tbody", {}, models.map((model) => el("tr", {"data-model": model.id, class: model.available ? "" : "unavailable"},
        el("td", {}, el("code", {}, model.id)),
        el("td", {}, model.owned_by),
        el("td", {}, model.available ? "yes" : "no"),
        el("td", {class: "num"}, price(model.price)),
        el("td", {}, sizes(model.capabilities)),
        el("td", {}, (aliases.get(model.id) || []).map((a) => el("code", {class: "alias"}, a))),
        el("td", {}, (routes.get(model.id) || []).map((r) => el("code", {class: "alias"}, r))))))),
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
