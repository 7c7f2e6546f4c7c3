// Projects and keys: create a project, set its budget, allowlist and rate limit, create a key (shown
// once) and revoke keys. Every change goes through the Admin API, which records it in the audit log.

import * as api from "../api.js";
import {capText, el, renewsText, replace, toast, usd, when} from "../dom.js";

export async function showProjects(page) {
  const list = el("div", {id: "projects"});
  const changes = el("div", {id: "audit"});
  page.append(el("h1", {}, "Projects and keys"), createForm(() => draw(list, changes)), list,
    el("div", {class: "card"}, el("h2", {}, "Recent changes"), changes));
  await draw(list, changes);
}

async function draw(list, changes) {
  await Promise.all([drawProjects(list, () => draw(list, changes), () => drawAudit(changes)), drawAudit(changes)]);
}

/** The audit log's newest entries: who changed what, through the admin API or the `mg` command. */
async function drawAudit(changes) {
  const entries = await api.audit();
  if (!entries.length) {
    replace(changes, el("p", {class: "hint"}, "No changes yet."));
    return;
  }
  replace(changes, el("table", {},
    el("thead", {}, el("tr", {}, ["When", "Who", "What", "Target", "Values"].map((h) => el("th", {}, h)))),
    el("tbody", {}, entries.map((entry) => el("tr", {"data-action": entry.action},
      el("td", {}, when(entry.at)), el("td", {}, entry.actor), el("td", {}, entry.action),
      el("td", {}, el("code", {}, entry.target)),
      el("td", {}, Object.entries(entry.detail || {}).map(([k, v]) => `${k}=${v}`).join(", ")))))));
}

async function drawProjects(list, redraw, keysChanged) {
  const [projects, keys] = await Promise.all([api.projects.list(), api.keys.list()]);
  if (!projects.length) {
    replace(list, el("p", {class: "hint"}, "No projects yet."));
    return;
  }
  replace(list, projects.map((project) => projectCard(project, keys.filter((k) => k.project_id === project.id), redraw, keysChanged)));
}

/** The budget as the API takes it: US dollars as decimal text ("5", "12.50"); null for no cap. */
function budgetText(text) {
  const value = text.trim().replace(/^\$/, "");
  if (value === "") return null;
  if (!/^\d+(\.\d{1,6})?$/.test(value)) throw new Error(`${value} is not an amount of dollars`);
  return value;
}

function patterns(text) {
  return text.split(/[\s,]+/).map((p) => p.trim()).filter(Boolean);
}

function projectFields(prefix, project = {}) {
  const budget = project.budget_micros === undefined || project.budget_micros === null ? "" : String(Number(project.budget_micros) / 1e6);
  return {
    budget: el("input", {id: `${prefix}-budget`, name: "budget", inputmode: "decimal", placeholder: "no cap", value: budget}),
    period: el("input", {id: `${prefix}-period`, name: "period", placeholder: "never", value: project.budget_period || "",
                         title: "day, week, month (UTC) or a rolling Nd such as 30d; empty: a lifetime cap"}),
    allow: el("input", {id: `${prefix}-allow`, name: "allow", placeholder: "every model", value: (project.allow || []).join(", ")}),
    rpm: el("input", {id: `${prefix}-rpm`, name: "rpm", inputmode: "numeric", placeholder: "default", value: project.rpm || ""}),
  };
}

function rpmOf(fields) {
  const rpm = fields.rpm.value.trim();
  return rpm === "" ? undefined : Number(rpm);
}

/** A new project's fields (CreateProjectRequest). */
function creation(name, fields) {
  const budget = budgetText(fields.budget.value);
  const period = fields.period.value.trim();
  return {name, budget_usd: budget ?? undefined, budget_period: period || undefined, allow: patterns(fields.allow.value),
          rpm: rpmOf(fields)};
}

/** A change of a project's settings (UpdateProjectRequest): an empty budget removes the cap, an empty
 * period makes it a lifetime cap again. */
function update(project, fields) {
  const budget = budgetText(fields.budget.value);
  const period = fields.period.value.trim();
  return {
    ...(budget === null ? {no_budget: true} : {budget_usd: budget}),
    ...(period === (project.budget_period || "") ? {} : {budget_period: period || "none"}),
    allow: {patterns: patterns(fields.allow.value)},
    rpm: rpmOf(fields),
  };
}

function labelled(label, input) {
  return el("label", {class: "field"}, el("span", {}, label), input);
}

function createForm(done) {
  const name = el("input", {id: "new-project-name", name: "name", required: true, placeholder: "team-name", pattern: "[A-Za-z0-9_.\\-]+"});
  const fields = projectFields("new-project");
  const form = el("form", {id: "new-project", class: "card inline-form"},
    el("h2", {}, "New project"),
    labelled("Name", name), labelled("Budget, USD", fields.budget), labelled("Renews every", fields.period),
    labelled("Models allowed (globs)", fields.allow), labelled("Requests / min / key", fields.rpm),
    el("button", {type: "submit"}, "Create project"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.projects.create(creation(name.value.trim(), fields));
      toast(`Project ${name.value.trim()} created.`);
      form.reset();
      await done();
    } catch (error) {
      toast(error.message, "error");
    }
  });
  return form;
}

/** A project's card. `redraw` draws every project again (after a change to this one's settings);
 * `keysChanged` is told of a key created or revoked (the audit list follows). */
function projectCard(project, keys, redraw, keysChanged) {
  const fields = projectFields(`project-${project.name}`, project);
  const save = el("form", {class: "inline-form settings"},
    labelled("Budget, USD", fields.budget), labelled("Renews every", fields.period),
    labelled("Models allowed (globs)", fields.allow), labelled("Requests / min / key", fields.rpm),
    el("button", {type: "submit"}, "Save"));
  save.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.projects.update(project.name, update(project, fields));
      toast(`Project ${project.name} saved.`);
      await redraw();
    } catch (error) {
      toast(error.message, "error");
    }
  });
  const newKey = el("div", {class: "new-key", "aria-live": "polite"});
  const createKey = el("button", {type: "button", class: "create-key"}, "Create key");
  createKey.addEventListener("click", async () => {
    try {
      const created = await api.keys.create(project.name);
      replace(newKey,
        el("p", {}, "The new key, shown only this once:"),
        el("code", {class: "secret", id: `new-key-${project.name}`}, created.key),
        el("button", {type: "button", class: "quiet", onclick: () => navigator.clipboard?.writeText(created.key)}, "Copy"));
      await redrawKeys();
    } catch (error) {
      toast(error.message, "error");
    }
  });
  const keyTable = el("div", {class: "keys"});
  const redrawKeys = async () => {
    replace(keyTable, keysTable(await api.keys.list(project.name), redrawKeys));
    await keysChanged();
  };
  replace(keyTable, keysTable(keys, redrawKeys));
  return el("article", {class: "card project", "data-project": project.name},
    el("h2", {}, project.name),
    el("p", {class: "hint"},
      `Spent ${usd(project.spent_micros)} of ${capText(project)}${renewsText(project)} · created ${when(project.created_at)}`),
    save,
    el("h3", {}, "Keys"),
    keyTable,
    createKey,
    newKey);
}

function keysTable(keys, redrawKeys) {
  if (!keys.length) return el("p", {class: "hint"}, "No keys.");
  return el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "Key"), el("th", {}, "Created"), el("th", {}, "Status"), el("th", {}))),
    el("tbody", {}, keys.map((key) => {
      const revoked = Boolean(key.revoked_at);
      const revoke = revoked ? null : el("button", {type: "button", class: "danger revoke", "data-key-id": key.id}, "Revoke");
      revoke?.addEventListener("click", async () => {
        if (!confirm(`Revoke ${key.prefix}...? Calls with it fail at once.`)) return;
        try {
          await api.keys.revoke(key.id);
          toast(`Key ${key.prefix}... revoked.`);
          await redrawKeys();
        } catch (error) {
          toast(error.message, "error");
        }
      });
      return el("tr", {"data-key-id": key.id, class: revoked ? "revoked" : ""},
        el("td", {}, el("code", {}, `${key.prefix}...`)),
        el("td", {}, when(key.created_at)),
        el("td", {}, revoked ? `revoked ${when(key.revoked_at)}` : "active"),
        el("td", {}, revoke));
    })));
}
