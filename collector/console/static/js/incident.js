// Open an incident (map click or coordinates), list the cameras its grant covers, add sightings, close it.
import { api, session } from "./api.js";
import { $, badge, el, guarded, showInfo, clearMessage } from "./dom.js";
import { kst, onLanguage, t } from "./i18n.js";
import { districtName, markPlace, onMapClick, showIncident } from "./map.js";

export const current = { incident: null, cameras: [], listeners: [] };
const ENDED = new Set(["incident_closed", "incident_expired"]);
let awaitingSighting = false;

export function initIncident() {
  const form = $("#incident-form");
  form.hidden = !session.may("incident.open");
  const services = $("#inc-service");
  services.replaceChildren(...(session.me.services ?? []).map((s) => el("option", { value: s, text: s })));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    guarded($("#inc-open"), openIncident);
  });
  onMapClick((lat, lon) => {
    if (awaitingSighting) {
      awaitingSighting = false;
      guarded($("#inc-sighting"), () => onTheIncident(() => addSighting(lat, lon)));
    } else if (!current.incident && !form.hidden) {
      $("#inc-lat").value = lat.toFixed(6);
      $("#inc-lon").value = lon.toFixed(6);
      markPlace(lat, lon);
    }
  });
  $("#inc-sighting").addEventListener("click", () => {
    awaitingSighting = true;
    showInfo(t("incident.sightingHint"));
  });
  $("#inc-close").addEventListener("click", (e) => guarded(e.target, () => onTheIncident(closeIncident)));
  $("#inc-new").addEventListener("click", () => setIncident(null, []));
  onLanguage(render);
}

// Call `listener(incident, cameras)` whenever the incident or its cameras change.
export function onIncident(listener) {
  current.listeners.push(listener);
}

async function openIncident() {
  const body = {
    incident_no: $("#inc-no").value.trim(),
    service: $("#inc-service").value,
    type: $("#inc-type").value.trim(),
    purpose: $("#inc-purpose").value.trim(),
    lat: Number($("#inc-lat").value),
    lon: Number($("#inc-lon").value),
    radius_m: Number($("#inc-radius").value),
    occurred_at: new Date().toISOString(),
  };
  const arm = Number($("#inc-arm").value);
  if (arm > 0) body.arm_nearest = arm; // the nearest cameras start keeping their pre-roll now
  const opened = await api("/incidents", { method: "POST", body });
  setIncident(opened.incident, opened.cameras);
}

// Run an action on the incident; when it was closed or expired meanwhile (elsewhere), show it as it is now.
export async function onTheIncident(action) {
  try {
    return await action();
  } catch (error) {
    if (ENDED.has(error.code) && current.incident) {
      await api(`/incidents/${current.incident.incident_id}`).then((now) => setIncident(now, current.cameras), () => {});
    }
    throw error;
  }
}

async function refreshCameras() {
  const id = current.incident.incident_id;
  const [incident, listed] = await Promise.all([api(`/incidents/${id}`), api(`/incidents/${id}/cameras`)]);
  setIncident(incident, listed.cameras);
}

async function addSighting(lat, lon) {
  clearMessage();
  const id = current.incident.incident_id;
  await api(`/incidents/${id}/positions`, { method: "POST", body: { lat, lon, at: new Date().toISOString() } });
  await refreshCameras();
}

async function closeIncident() {
  const id = current.incident.incident_id;
  const closed = await api(`/incidents/${id}/close`, { method: "POST" });
  setIncident(closed, current.cameras);
}

export function setIncident(incident, cameras) {
  current.incident = incident;
  current.cameras = cameras;
  render();
  if (incident) showIncident(incident, incident.state === "open" ? cameras : []);
  current.listeners.forEach((f) => f(incident, cameras));
}

function render() {
  const incident = current.incident;
  $("#incident-form").hidden = Boolean(incident) || !session.may("incident.open");
  $("#incident").hidden = !incident;
  if (!incident) return;
  $("#incident").dataset.state = incident.state;
  $("#incident").dataset.incident = incident.incident_id;
  const open = incident.state === "open";
  $("#inc-title").textContent = `${incident.incident_no} · ${incident.type}`;
  $("#inc-summary").textContent = t("incident.summary", {
    state: t(open ? "incident.openState" : "incident.closed"),
    district: districtName(incident.district),
    positions: incident.grant?.positions.length ?? 0,
    radius: Math.round(incident.grant?.radius_m ?? 0),
    expires: kst(incident.grant?.expires_at),
  });
  $("#inc-sighting").hidden = !open || !session.may("incident.update");
  $("#inc-close").hidden = !open || !session.may("incident.close");
  const rows = open ? current.cameras.map(cameraRow) : [];
  const body = $("#cameras tbody");
  body.replaceChildren(...rows);
  if (open && !rows.length) body.append(el("tr", {}, el("td", { colspan: 7, text: t("cameras.none") })));
}

function cameraRow(c) {
  const choose = session.may("clip.request") ? el("input", { type: "checkbox", value: c.camera_id, class: "choose" }) : "";
  const live = current.liveAvailable
    ? el("button", { type: "button", class: "quiet live-open", text: t("cameras.live"), dataset: { camera: c.camera_id },
      onclick: (e) => current.openLive?.(c, e.target) })
    : "";
  return el("tr", { dataset: { camera: c.camera_id, district: c.district } },
    el("td", {}, choose),
    el("td", { text: c.camera_id }),
    el("td", { text: `${Math.round(c.distance_m)} m` }),
    el("td", { text: districtName(c.district), class: "district" }),
    el("td", {}, badge(c.state)),
    el("td", { text: c.agent_online === null ? t("none") : t(c.agent_online ? "yes" : "no") }),
    el("td", {}, live));
}

export function chosenCameras() {
  return [...document.querySelectorAll("#cameras input.choose:checked")].map((box) => box.value);
}
