// The Admin API (/v1/admin/...), called with the console's session: an HttpOnly cookie the browser
// sends by itself (the page never sees it), and for writes the CSRF token the session's answer gave,
// in a header a page of another origin cannot set.

const SESSION = "/v1/admin/session";
const CSRF_HEADER = "x-mg-csrf";
const CSRF_KEY = "mg-console-csrf";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Called when the session is missing or over: the app shows the sign-in form. */
let onSignedOut = () => {};
export function whenSignedOut(callback) { onSignedOut = callback; }

async function call(method, path, body, {quiet401 = false, token = ""} = {}) {
  const headers = {"Accept": "application/json"};
  if (token) headers["Authorization"] = `Bearer ${token}`;
  if (method !== "GET") {
    headers[CSRF_HEADER] = sessionStorage.getItem(CSRF_KEY) || "";
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  const text = await response.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch { data = {}; }
  if (!response.ok) {
    const error = data.error || {};
    if (response.status === 401 && !quiet401) onSignedOut();
    throw new ApiError(response.status, error.code || `HTTP_${response.status}`, error.message || text || response.statusText);
  }
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") q.set(name, String(value));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** Exchange the admin token for a session cookie; keeps the CSRF token for writes. */
export async function signIn(token) {
  const answer = await call("POST", SESSION, {}, {quiet401: true, token});
  sessionStorage.setItem(CSRF_KEY, answer.csrf_token || "");
  return answer;
}

export async function signOut() {
  try { await call("DELETE", SESSION, undefined, {quiet401: true}); } finally { sessionStorage.removeItem(CSRF_KEY); }
}

/** Whether the browser holds a live session (a cheap read that needs one). */
export async function signedIn() {
  try {
    await call("GET", "/v1/admin/projects", undefined, {quiet401: true});
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return false;
    throw error;
  }
}

export const projects = {
  list: async () => (await call("GET", "/v1/admin/projects")).projects || [],
  create: (fields) => call("POST", "/v1/admin/projects", fields),
  update: (name, fields) => call("PATCH", `/v1/admin/projects/${encodeURIComponent(name)}`, fields),
};

export const keys = {
  list: async (project) => (await call("GET", `/v1/admin/keys${query({project})}`)).keys || [],
  create: (project) => call("POST", "/v1/admin/keys", {project}),  // {key (shown once), record}
  revoke: (id) => call("POST", `/v1/admin/keys/${encodeURIComponent(id)}/revoke`, {}),
};

export const usage = {
  get: (params = {}) => call("GET", `/v1/admin/usage${query(params)}`),
};

/** Ledger rows (newest first) matching `filters` (project, model, outcome, since, until; times as
 * "24h" or ISO text), following the pages up to `limit` rows. */
export async function ledger(filters = {}, {limit = 2000} = {}) {
  const rows = [];
  let pageToken = "";
  do {
    const size = Math.min(500, limit - rows.length);
    const page = await call("GET", `/v1/admin/ledger${query({...filters, page_size: size, page_token: pageToken})}`);
    rows.push(...(page.entries || []));
    pageToken = page.next_page_token || "";
  } while (pageToken && rows.length < limit);
  return rows;
}

export const inflight = {
  list: async () => (await call("GET", "/v1/admin/inflight")).generations || [],
};

/** The newest changes made through the admin API or the `mg` command. */
export async function audit(pageSize = 20) {
  return (await call("GET", `/v1/admin/audit${query({page_size: pageSize})}`)).entries || [];
}

/** The whole catalog: every model and alias, with availability and prices. */
export async function catalog() {
  return (await call("GET", "/v1/admin/catalog")).data || [];
}

/** The thumbnail of image `index` of a generation (kept with MG_KEEP_THUMBNAILS). */
export function thumbnailUrl(requestId, index = 0) {
  return `/v1/admin/thumbnails/${encodeURIComponent(requestId)}/${index}`;
}
