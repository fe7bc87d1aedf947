// Live tiles (the live-view API, docs/api.md): one HLS player per camera, its latency measured from the
// playlist's EXT-X-PROGRAM-DATE-TIME against this page's clock, and the last minutes saved as a clip.
import Hls from "../vendor/hls.js-1.7.4/hls.light.min.mjs";
import { api, authorization, session } from "./api.js";
import { $, el, guarded } from "./dom.js";
import { t } from "./i18n.js";
import { addClip } from "./clips.js";
import { current, onIncident } from "./incident.js";
import { watermarked } from "./watermark.js";

const SAVE_MINUTES = 2;
const tiles = new Map(); // session id -> {hls, timers, node}

// Live view is offered when the policy gives the role the `live` action (a collector with the live-view API).
export function initLive() {
  current.liveAvailable = session.may("live");
  current.openLive = (camera, button) => guarded(button, () => openTile(camera));
  $("#live-status").textContent = t(current.liveAvailable ? "live.none" : "live.unavailable");
  onIncident((incident) => {
    if (!incident || incident.state !== "open") [...tiles.keys()].forEach((id) => closeTile(id, false));
  });
}

async function openTile(camera) {
  const live = await api(`/incidents/${current.incident.incident_id}/live`, {
    method: "POST", body: { camera_id: camera.camera_id, stream: "sub" },
  });
  const video = el("video", { muted: true, autoplay: true, playsinline: true, controls: true });
  video.muted = true;
  const latency = el("span", { class: "latency", text: "…" });
  const node = el("article", { class: "tile", dataset: { session: live.session_id, camera: camera.camera_id } },
    el("header", {}, el("strong", { text: camera.camera_id }), latency),
    watermarked(video),
    el("div", { class: "buttons" },
      el("button", { type: "button", class: "quiet", text: t("live.save", { minutes: SAVE_MINUTES }),
        onclick: (e) => guarded(e.target, () => save(live.session_id)) }),
      el("button", { type: "button", class: "danger", text: t("live.stop"), onclick: () => closeTile(live.session_id, true) })));
  $("#tiles").append(node);
  const hls = new Hls({
    enableWorker: false, // a worker would need blob: scripts, which the console's CSP forbids
    // Play 1.5 s behind the end of the newest listed segment. With 1 s segments (a 1 s GOP) that end is itself
    // 1.3-2.3 s old when the playlist shows it (capture, upload, the next reload): 1.8-2.8 s glass to glass,
    // where hls.js's default (3 segments) gives 4-5 s and 2 segments up to 3.3 s.
    liveSyncDuration: 1.5,
    maxLiveSyncPlaybackRate: 1.5, // after a stall, play a little faster back to that distance
    // The playlist is the API's (it needs the token); its segments are presigned S3 URLs (they must not get it).
    // hls.js calls this before opening the request: open it here to set the header (hls.js then sends it).
    xhrSetup: (xhr, url) => {
      if (new URL(url, location.href).origin !== location.origin) return;
      xhr.open("GET", url, true);
      xhr.setRequestHeader("Authorization", authorization().Authorization);
    },
  });
  hls.loadSource(live.playlist_url);
  hls.attachMedia(video);
  const measure = setInterval(() => {
    const at = hls.playingDate;
    if (!at || video.paused) return;
    const seconds = (Date.now() - at.getTime()) / 1000;
    node.dataset.latency = seconds.toFixed(2);
    latency.textContent = t("live.latency", { seconds: seconds.toFixed(1) });
  }, 500);
  const renew = setInterval(() => api(`/live/${live.session_id}/renew`, { method: "POST" }).catch(() => {}), 4 * 60_000);
  tiles.set(live.session_id, { hls, timers: [measure, renew], node });
  document.querySelector('#tabs [data-view="live"]').click();
}

async function save(sessionId) {
  const end = new Date();
  const start = new Date(end.getTime() - SAVE_MINUTES * 60_000);
  const clip = await api(`/live/${sessionId}/save`, { method: "POST", body: { start: start.toISOString(), end: end.toISOString() } });
  addClip(clip);
}

function closeTile(sessionId, stop) {
  const tile = tiles.get(sessionId);
  if (!tile) return;
  tiles.delete(sessionId);
  tile.timers.forEach(clearInterval);
  tile.hls.destroy();
  tile.node.remove();
  if (stop && session.token()) api(`/live/${sessionId}/stop`, { method: "POST" }).catch(() => {});
}
