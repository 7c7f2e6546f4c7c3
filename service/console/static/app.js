// The console: a sign-in form, then one page per view (#/overview, #/generations, #/projects,
// #/models), each drawn from the Admin API. Plain ES modules, no build step.

import * as api from "./api.js";
import {el, replace, toast} from "./dom.js";
import {showOverview} from "./pages/overview.js";
import {showGenerations} from "./pages/generations.js";
import {showProjects} from "./pages/projects.js";
import {showModels} from "./pages/models.js";

const PAGES = {
  overview: showOverview,
  generations: showGenerations,
  projects: showProjects,
  models: showModels,
};

const main = () => document.getElementById("main");

function signInForm(message = "") {
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  const token = el("input", {
    id: "admin-token", name: "token", type: "password", autocomplete: "current-password",
    required: true, placeholder: "mg_admin_...", "aria-label": "Admin token",
  });
  const problem = el("p", {id: "sign-in-error", class: "error", role: "alert"}, message);
  const form = el("form", {id: "sign-in", class: "card narrow"},
    el("h1", {}, "Sign in"),
    el("p", {class: "hint"}, "The gateway's admin token (MG_ADMIN_TOKEN; `make run` prints it)."),
    el("label", {for: "admin-token"}, "Admin token"),
    token,
    el("button", {type: "submit"}, "Sign in"),
    problem,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.textContent = "";
    try {
      await api.signIn(token.value.trim());
      token.value = "";
      if (!location.hash || location.hash === "#/sign-in") location.hash = "#/overview";
      await route();
    } catch (error) {
      problem.textContent = error instanceof api.ApiError && error.status === 401
        ? "That token was refused."
        : `Could not sign in: ${error.message}`;
    }
  });
  replace(main(), form);
  token.focus();
}

let drawing = 0;
async function route() {
  const name = (location.hash.match(/^#\/(\w+)/) || [])[1] || "overview";
  const show = PAGES[name] || PAGES.overview;
  const turn = ++drawing;
  document.getElementById("nav").hidden = false;
  document.getElementById("sign-out").hidden = false;
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  const page = el("section", {id: `page-${name}`, class: "page", "aria-busy": "true"});
  replace(main(), page);
  try {
    await show(page);
  } catch (error) {
    if (error instanceof api.ApiError && error.status === 401) return;  // the sign-in form is up
    if (turn === drawing) replace(page, el("p", {class: "error"}, `Could not load this page: ${error.message}`));
  } finally {
    page.removeAttribute("aria-busy");
  }
}

async function start() {
  api.whenSignedOut(() => signInForm("Your session has ended; sign in again."));
  document.getElementById("sign-out").addEventListener("click", async () => {
    await api.signOut().catch(() => {});
    signInForm();
  });
  window.addEventListener("hashchange", () => { route(); });
  try {
    if (await api.signedIn()) {
      await route();
    } else {
      signInForm();
    }
  } catch (error) {
    // (404: the admin API is off, and its message says how to turn it on)
    signInForm(error instanceof api.ApiError && error.status === 404
      ? error.message
      : `The admin API did not answer: ${error.message}`);
  }
}

start();
