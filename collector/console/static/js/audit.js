// Auditors: search the audit trail, see whether the chain verifies against its signed checkpoints, and
// download the monthly review with the districts' provision ledgers.
import { api, session } from "./api.js";
import { $, el, guarded } from "./dom.js";
import { kst, t } from "./i18n.js";

let nextAfter = null;

export function initAudit() {
  $("#audit-form").addEventListener("submit", (e) => {
    e.preventDefault();
    guarded($("#audit-search"), () => search(0));
  });
  $("#audit-more").addEventListener("click", (e) => guarded(e.target, () => search(nextAfter)));
  $("#chain-check").addEventListener("click", (e) => guarded(e.target, checkChain));
  $("#report-form").hidden = !session.may("audit.report");
  $("#report-month").value = new Date().toISOString().slice(0, 7);
  $("#report-form").addEventListener("submit", (e) => {
    e.preventDefault();
    guarded($("#report-download"), downloadReport);
  });
}

function zoned(local) {
  return local ? new Date(local).toISOString() : "";
}

async function search(after) {
  const params = {
    after, limit: 200,
    account: $("#audit-account").value.trim(), agency: $("#audit-agency").value.trim(),
    incident: $("#audit-incident").value.trim(), camera: $("#audit-camera").value.trim(),
    since: zoned($("#audit-since").value), until: zoned($("#audit-until").value),
  };
  if (params.since && !params.until) params.until = new Date(Date.now() + 60_000).toISOString();
  const page = await api("/audit", { params });
  const rows = page.entries.map(row);
  const body = $("#audit tbody");
  if (after === 0) body.replaceChildren(...rows);
  else body.append(...rows);
  nextAfter = page.next_after;
  $("#audit-more").hidden = nextAfter === null;
  body.dataset.count = String(body.children.length);
}

function row(entry) {
  const r = entry.record;
  const result = r.result === "allowed" ? r.result : `${r.result} (${r.code})`;
  return el("tr", { dataset: { seq: entry.seq, action: r.action, result: r.result } },
    el("td", { text: String(entry.seq) }),
    el("td", { text: kst(new Date(r.at * 1000).toISOString()) }),
    el("td", { text: r.account }),
    el("td", { text: r.agency }),
    el("td", { text: r.action }),
    el("td", { text: result, class: r.result === "allowed" ? "" : "verdict-bad" }),
    el("td", { text: r.incident ?? "" }),
    el("td", { text: (r.subjects ?? []).map((s) => s.camera_id).join(", ") }),
    el("td", { text: r.purpose ?? "" }));
}

async function checkChain() {
  const status = $("#chain-status");
  const v = await api("/audit/verify");
  status.dataset.ok = String(v.ok);
  status.className = v.ok ? "verdict-ok" : "verdict-bad";
  status.textContent = v.ok
    ? t("audit.ok", { records: v.records, checkpoints: v.checkpoints, last: v.last_seq, unanchored: v.unanchored_records })
    : t("audit.broken", { seq: v.first_bad?.seq ?? "?", reason: v.first_bad?.reason ?? v.problems[0]?.reason ?? "" });
}

// The report needs the token, so it is fetched here and handed to the browser as a file.
async function downloadReport() {
  const month = $("#report-month").value;
  const response = await api("/audit/report", { params: { month }, raw: true });
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", { href: url, download: `audit-report-${month}.zip` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
