// Clip requests of the incident: ask (nearest N or chosen cameras, a window with pre-roll), follow each one's
// progress (one listing request per poll, whatever the number of clips), then play it, show its manifest
// check and offer it with its manifest for download.
import { api, session } from "./api.js";
import { $, badge, el, guarded, showError } from "./dom.js";
import { kst, t } from "./i18n.js";
import { chosenCameras, current, onIncident, onTheIncident } from "./incident.js";
import { watermarked } from "./watermark.js";

const POLL_MS = 1500;
const cards = new Map(); // clip id -> {card, state}
let timer = null;

export function initClips() {
  $("#clip-form").hidden = !session.may("clip.request");
  $("#clip-form").addEventListener("submit", (e) => {
    e.preventDefault();
    guarded($("#clip-ask"), () => onTheIncident(requestClips));
  });
  onIncident((incident) => {
    $("#clip-form").hidden = !session.may("clip.request") || incident?.state !== "open";
    if (!incident) { cards.clear(); $("#clips").replaceChildren(); }
  });
}

async function requestClips() {
  const preroll = Number($("#clip-preroll").value);
  const length = Number($("#clip-length").value);
  const start = new Date(Date.now() - preroll * 1000);
  const body = { start: start.toISOString(), end: new Date(start.getTime() + length * 1000).toISOString() };
  if ($("#clip-which").value === "chosen") {
    body.camera_ids = chosenCameras();
    if (!body.camera_ids.length) throw { status: 422, code: "camera_ids", message: t("clips.noneChosen") };
  } else {
    body.nearest = Number($("#clip-n").value);
  }
  const asked = await api(`/incidents/${current.incident.incident_id}/clips`, { method: "POST", body });
  asked.clips.forEach(addClip);
  poll();
}

// Also used by live tiles: a saved stretch of live view is an ordinary clip.
export function addClip(clip) {
  const card = el("article", { class: "clip", dataset: { clip: clip.clip_id } });
  $("#clips").prepend(card);
  cards.set(clip.clip_id, { card, state: null, incident: clip.incident_id });
  update(clip);
  poll();
}

function poll() {
  if (timer === null) timer = setTimeout(tick, POLL_MS);
}

async function tick() {
  timer = null;
  const waiting = [...cards.entries()].filter(([, c]) => !["succeeded", "failed"].includes(c.state));
  if (!waiting.length) return;
  try {
    for (const incident of new Set(waiting.map(([, c]) => c.incident))) {
      const listed = await api("/clips", { params: { incident, limit: 500 } });
      for (const clip of listed.clips) if (cards.has(clip.clip_id)) await update(clip);
    }
  } catch (error) {
    showError(error);
  }
  poll();
}

async function update(clip) {
  const entry = cards.get(clip.clip_id);
  if (entry.state === clip.state) return;
  entry.state = clip.state;
  if (clip.state === "succeeded") clip = await api(`/clips/${clip.clip_id}`); // the playback URLs: one audited issue
  render(entry.card, clip);
}

function render(card, clip) {
  card.dataset.state = clip.state;
  const head = el("header", {}, el("strong", { text: clip.camera_id }), badge(clip.state));
  const when = el("div", { class: "status", text: t("clips.window", { start: kst(clip.start), end: kst(clip.end) }) });
  const parts = [head, when];
  if (clip.reason) parts.push(el("div", { class: "verdict-bad", text: clip.reason }));
  if (clip.state === "succeeded") parts.push(...delivered(clip));
  card.replaceChildren(...parts);
}

function delivered(clip) {
  const parts = [el("div", { class: "status", text: t("clips.source", { source: clip.source ?? "?" }) })];
  parts.push(verdict(clip));
  if (clip.playback_refused) parts.push(el("div", { class: "verdict-bad", text: t("clips.refused", { code: clip.playback_refused }) }));
  if (!clip.playback) return parts;
  const video = el("video", { src: clip.playback.url, controls: true, muted: true, preload: "auto", playsinline: true });
  video.muted = true;
  parts.push(watermarked(video));
  const links = el("div", { class: "links" },
    el("a", { href: clip.playback.url, download: `${clip.clip_id}.mp4`, text: t("clips.download"), target: "_blank", rel: "noopener" }));
  if (clip.playback.manifest_url) {
    links.append(el("a", { href: clip.playback.manifest_url, download: `${clip.clip_id}.manifest.json`, text: t("clips.manifest"), target: "_blank", rel: "noopener" }));
  }
  parts.push(links);
  return parts;
}

function verdict(clip) {
  if (clip.manifest_verified === true) return el("div", { class: "verdict-ok manifest", text: `✔ ${t("clips.verified")}` });
  if (clip.manifest_verified === false) {
    return el("div", { class: "verdict-bad manifest", text: `✘ ${t("clips.unverified", { problem: clip.manifest_problem })}` });
  }
  return el("div", { class: "status manifest", text: t("clips.pending") });
}
