// Building the page from data without ever parsing data as HTML: every string goes in as a text
// node (textContent), every attribute through setAttribute; no string is ever parsed as markup.

/** An element: el("td", {class: "num"}, "12", otherNode). Children are strings (text) or nodes. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace what `node` holds with `children`. */
export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** An SVG element (charts drawn by hand: spend bars). */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  append(node, children);
  return node;
}

let toastTimer = 0;
/** A short message at the bottom of the page. */
export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  box.className = kind;
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 6000);
}

const usdFormat = new Intl.NumberFormat("en-US", {style: "currency", currency: "USD", maximumFractionDigits: 4});
/** Micro-dollars (the gateway's unit of money) as dollars. */
export function usd(micros) {
  return usdFormat.format(Number(micros || 0) / 1e6);
}

/** A project's cap as people read it: "$5.00", "$5.00 a month", "$5.00 per 30 days", "no cap". Of a
 * cap that renews, the API's spent_micros is the period in force's. */
export function capText(project) {
  if (project.budget_micros === undefined || project.budget_micros === null) return "no cap";
  const period = project.budget_period || "";
  if (!period) return usd(project.budget_micros);
  return `${usd(project.budget_micros)} ${/^\d+d$/.test(period) ? `per ${period.slice(0, -1)} days` : `a ${period}`}`;
}

/** When a cap that renews renews, in UTC as the periods are: " · renews 2027-01-01 00:00 UTC"; "" for a
 * lifetime cap. */
export function renewsText(project) {
  if (!project.budget_period || !project.renews_at) return "";
  return ` · renews ${new Date(Number(project.renews_at) * 1000).toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

/** Unix seconds as a short local date and time. */
export function when(seconds) {
  if (!seconds) return "";
  return new Date(Number(seconds) * 1000).toLocaleString(undefined, {dateStyle: "short", timeStyle: "medium"});
}

export function ms(value) {
  return value === null || value === undefined || Number.isNaN(value) ? "–" : `${Math.round(value)} ms`;
}

export function percent(part, whole) {
  return whole ? `${(100 * part / whole).toFixed(1)} %` : "–";
}
