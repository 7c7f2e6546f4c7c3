// Overview: spend per project against its cap, traffic per hour, error and refusal rates, and
// upstream latency per provider, over the last 24 hours of the ledger.

import uPlot from "../vendor/uPlot.esm.js";
import * as api from "../api.js";
import {capText, el, ms, percent, renewsText, svg, usd} from "../dom.js";
import {byProvider, isError, isRefusal, perHour, spendByProject, startOfToday} from "../stats.js";

const DAY_S = 86400;

export async function showOverview(page) {
  const now = Date.now() / 1000;
  const since = Math.min(now - DAY_S, startOfToday());
  const [projects, rows, running] = await Promise.all([
    api.projects.list(),
    api.ledger({since: new Date(since * 1000).toISOString()}, {limit: 10000}),
    api.inflight.list(),
  ]);
  const recent = rows.filter((row) => Number(row.created_at) >= now - DAY_S);
  const today = spendByProject(rows.filter((row) => Number(row.created_at) >= startOfToday()));
  const errors = recent.filter(isError).length;
  const refusals = recent.filter(isRefusal).length;
  const images = recent.reduce((sum, row) => sum + Number(row.images_returned || 0), 0);

  const chart = el("div", {id: "per-hour", class: "chart"});
  page.append(
    el("h1", {}, "Overview"),
    el("div", {class: "tiles"},
      tile("Requests, 24 h", String(recent.length), "requests"),
      tile("Images, 24 h", String(images), "images"),
      tile("Error rate", percent(errors, recent.length), "error-rate"),
      tile("Refusal rate", percent(refusals, recent.length), "refusal-rate"),
    ),
    el("div", {class: "card"}, el("h2", {}, "Spend per project"),
      el("p", {class: "hint"}, "Spent against the project's cap (red once reached); the orange line is today's part."),
      spendBars(projects, today)),
    el("div", {class: "card"}, el("h2", {}, "Requests and images per hour"), chart),
    el("div", {class: "card"}, el("h2", {}, "Providers, 24 h"), providerTable(byProvider(recent))),
    el("div", {class: "card"}, el("h2", {}, "Running now"), runningTable(running, now)),
  );
  drawPerHour(chart, perHour(recent, now));
}

function tile(label, value, id) {
  return el("div", {class: "tile", id: `tile-${id}`}, el("span", {class: "label"}, label), el("span", {class: "value"}, value));
}

const BAR_WIDTH = 480;

/** One row per project: today's spend and the period's spend (all time, for a lifetime cap), as bars
 * against the cap. */
function spendBars(projects, today) {
  if (!projects.length) return el("p", {class: "hint"}, "No projects yet.");
  const list = el("div", {class: "spend", id: "spend-bars"});
  for (const project of projects) {
    const cap = project.budget_micros === undefined || project.budget_micros === null ? null : Number(project.budget_micros);
    const spent = Number(project.spent_micros || 0);
    const spentToday = today.get(project.id) || 0;
    const scale = cap && cap > 0 ? cap : Math.max(spent, 1);
    const width = (micros) => Math.min(BAR_WIDTH, Math.round((BAR_WIDTH * micros) / scale));
    const over = cap !== null && spent >= cap;
    list.append(el("div", {class: "spend-row", "data-project": project.name},
      el("span", {class: "name"}, project.name),
      svg("svg", {class: "spend-bar", viewBox: `0 0 ${BAR_WIDTH} 18`, width: BAR_WIDTH, height: 18, role: "img",
                  "aria-label": `${project.name}: ${usd(spent)} of ${capText(project)}`},
        svg("rect", {class: "track", x: 0, y: 0, width: BAR_WIDTH, height: 18, rx: 3}),
        svg("rect", {class: over ? "spent over" : "spent", x: 0, y: 0, width: width(spent), height: 18, rx: 3}),
        svg("rect", {class: "today", x: 0, y: 12, width: width(spentToday), height: 6}),
      ),
      el("span", {class: "figures"},
        `${usd(spent)} of ${capText(project)}`,
        el("span", {class: "hint"}, ` · today ${usd(spentToday)}${renewsText(project)}`)),
    ));
  }
  return list;
}

function providerTable(groups) {
  if (!groups.length) return el("p", {class: "hint"}, "No generations in the last 24 hours.");
  return el("table", {id: "providers"},
    el("thead", {}, el("tr", {},
      el("th", {}, "Provider"), el("th", {class: "num"}, "Calls"), el("th", {class: "num"}, "p50"),
      el("th", {class: "num"}, "p95"), el("th", {class: "num"}, "Errors"), el("th", {class: "num"}, "Refusals"))),
    el("tbody", {}, groups.map((g) => el("tr", {},
      el("td", {}, g.provider), el("td", {class: "num"}, String(g.calls)), el("td", {class: "num"}, ms(g.p50)),
      el("td", {class: "num"}, ms(g.p95)), el("td", {class: "num"}, percent(g.errors, g.calls)),
      el("td", {class: "num"}, percent(g.refusals, g.calls))))),
  );
}

function drawPerHour(container, data) {
  const width = Math.max(320, Math.min(960, container.clientWidth || 720));
  new uPlot({
    width,
    height: 220,
    scales: {x: {time: true}},
    axes: [{}, {label: "count"}],
    series: [
      {},
      {label: "requests", stroke: "#3563e9", fill: "rgba(53,99,233,0.12)", width: 2},
      {label: "images", stroke: "#17a673", width: 2},
    ],
  }, data, container);
}

/** Generations running now on every worker and replica (their spend reservations). */
function runningTable(generations, now) {
  if (!generations.length) return el("p", {class: "hint", id: "running"}, "No generation is running.");
  return el("table", {id: "running"},
    el("thead", {}, el("tr", {}, ["Request", "Project", "Model", "Reserved", "Running for"].map((h) => el("th", {}, h)))),
    el("tbody", {}, generations.map((g) => el("tr", {"data-request-id": g.request_id},
      el("td", {}, el("code", {}, g.request_id)), el("td", {}, g.project), el("td", {}, g.model),
      el("td", {class: "num"}, usd(g.reserved_micros)),
      el("td", {class: "num"}, `${Math.max(0, Math.round(now - Number(g.started_at)))} s`)))));
}
