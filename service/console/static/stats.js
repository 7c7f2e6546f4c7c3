// Figures the overview draws, computed from ledger rows (one per generation that reached a provider).

// The outcome of a prompt the provider refused on content grounds; other non-ok outcomes are errors.
export const REFUSAL = "CONTENT_POLICY_VIOLATION";
const SUCCESS = new Set(["ok", "partial"]);

export function isError(row) { return !SUCCESS.has(row.outcome) && row.outcome !== REFUSAL; }
export function isRefusal(row) { return row.outcome === REFUSAL; }

/** Requests and images per hour over the last `hours` hours, oldest first: [starts, requests, images]. */
export function perHour(rows, now = Date.now() / 1000, hours = 24) {
  const end = Math.ceil(now / 3600) * 3600;
  const start = end - hours * 3600;
  const starts = Array.from({length: hours}, (_, i) => start + i * 3600);
  const requests = new Array(hours).fill(0);
  const images = new Array(hours).fill(0);
  for (const row of rows) {
    const slot = Math.floor((Number(row.created_at) - start) / 3600);
    if (slot < 0 || slot >= hours) continue;
    requests[slot] += 1;
    images[slot] += Number(row.images_returned || 0);
  }
  return [starts, requests, images];
}

/** The value below which `p` (0..1) of `values` lie (nearest rank); null for none. */
export function percentile(values, p) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil(p * sorted.length));
  return sorted[rank - 1];
}

/** Per provider: calls, p50 and p95 of the upstream latency (successful calls), errors, refusals. */
export function byProvider(rows) {
  const groups = new Map();
  for (const row of rows) {
    const name = row.provider || "?";
    if (!groups.has(name)) groups.set(name, {provider: name, calls: 0, errors: 0, refusals: 0, latencies: []});
    const group = groups.get(name);
    group.calls += 1;
    if (isError(row)) group.errors += 1;
    if (isRefusal(row)) group.refusals += 1;
    if (!isError(row) && !isRefusal(row) && Number(row.upstream_latency_ms) > 0) {
      group.latencies.push(Number(row.upstream_latency_ms));
    }
  }
  return [...groups.values()]
    .map((g) => ({...g, p50: percentile(g.latencies, 0.5), p95: percentile(g.latencies, 0.95)}))
    .sort((a, b) => b.calls - a.calls);
}

/** Micro-dollars charged per project id in the rows. */
export function spendByProject(rows) {
  const spend = new Map();
  for (const row of rows) {
    spend.set(row.project_id, (spend.get(row.project_id) || 0) + Number(row.cost_micros || 0));
  }
  return spend;
}

/** Unix seconds of this day's start, local time. */
export function startOfToday(now = new Date()) {
  return Math.floor(new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime() / 1000);
}
