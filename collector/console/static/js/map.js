// The map of Seoul: the 25 district boundaries (served with the console), an optional tile layer from the
// configuration, every camera as a dot (points.js), and the incident being worked on.
import { api, session } from "./api.js";
import { language, onLanguage, t } from "./i18n.js";
import { COLOURS, PointsLayer } from "./points.js";

const SEOUL = [37.5665, 126.978];
let map;
let districtsLayer;
let incidentLayer;
const points = new PointsLayer();
const names = {}; // district slug -> properties of its boundary

// Korean names of the boundaries -> the API's district slugs.
export const SLUGS = {
  "종로구": "jongno", "중구": "jung", "용산구": "yongsan", "성동구": "seongdong", "광진구": "gwangjin",
  "동대문구": "dongdaemun", "중랑구": "jungnang", "성북구": "seongbuk", "강북구": "gangbuk", "도봉구": "dobong",
  "노원구": "nowon", "은평구": "eunpyeong", "서대문구": "seodaemun", "마포구": "mapo", "양천구": "yangcheon",
  "강서구": "gangseo", "구로구": "guro", "금천구": "geumcheon", "영등포구": "yeongdeungpo", "동작구": "dongjak",
  "관악구": "gwanak", "서초구": "seocho", "강남구": "gangnam", "송파구": "songpa", "강동구": "gangdong",
};

export function districtName(slug) {
  const p = names[slug];
  if (!p) return slug;
  return language() === "ko" ? p.SIG_KOR_NM : p.SIG_ENG_NM;
}

export async function createMap(container, config) {
  map = L.map(container, { preferCanvas: true, zoomSnap: 0.5, minZoom: 9, maxZoom: 19 }).setView(SEOUL, 11);
  map.attributionControl.setPrefix("Leaflet");
  if (config.tile_url) {
    L.tileLayer(config.tile_url, { attribution: config.tile_attribution, maxZoom: 19 }).addTo(map);
  }
  const boundaries = await (await fetch("data/seoul_districts_simple.geojson")).json();
  for (const f of boundaries.features) names[SLUGS[f.properties.SIG_KOR_NM]] = f.properties;
  districtsLayer = L.geoJSON(boundaries, {
    style: () => ({ color: "#50606e", weight: 1.2, fillColor: "#ffffff", fillOpacity: config.tile_url ? 0 : 0.55 }),
    onEachFeature: (feature, layer) => layer.bindTooltip(() => document.createTextNode(districtName(SLUGS[feature.properties.SIG_KOR_NM])),
      { sticky: true, className: "district-label" }),
  }).addTo(map);
  let attribution = t("attribution.districts");
  map.attributionControl.addAttribution(attribution);
  onLanguage(() => {
    map.attributionControl.removeAttribution(attribution);
    attribution = t("attribution.districts");
    map.attributionControl.addAttribution(attribution);
  });
  points.addTo(map);
  legend().addTo(map);
  incidentLayer = L.layerGroup().addTo(map);
  map.on("click", (e) => {
    const hit = points.near(e.containerPoint);
    if (hit) L.popup().setLatLng(e.latlng).setContent(cameraPopup(hit)).openOn(map);
  });
  window.consoleMap = { map, points }; // for the browser tests and the curious
  return map;
}

// What the dots' colours mean, in the page's language.
function legend() {
  const control = L.control({ position: "bottomleft" });
  control.onAdd = () => {
    const box = L.DomUtil.create("div", "legend");
    const fill = () => box.replaceChildren(...Object.entries(COLOURS).map(([state, colour]) => {
      const item = document.createElement("span");
      const dot = document.createElement("i");
      dot.style.background = colour;
      item.append(dot, t(`state.${state}`));
      return item;
    }));
    fill();
    onLanguage(fill);
    return box;
  };
  return control;
}

function cameraPopup(hit) {
  const box = document.createElement("div");
  box.textContent = `${hit.id} · ${districtName(hit.district)} · ${t(`state.${hit.state}`)}`;
  return box;
}

// All cameras the role may list; resolves once they are drawn (performance mark `map-ready`).
export async function loadPoints(status) {
  if (!session.may("cameras.list")) {
    status.textContent = t("map.noPoints");
    return;
  }
  status.textContent = t("map.loading");
  const all = await api("/cameras/points");
  const drawn = new Promise((resolve) => points.once("drawn", resolve));
  points.setPoints(all);
  await drawn;
  performance.mark("map-ready");
  document.body.dataset.mapPoints = String(all.count);
  status.textContent = t("map.points", { count: all.count.toLocaleString() });
}

export function onMapClick(handler) {
  map.on("click", (e) => handler(e.latlng.lat, e.latlng.lng));
}

// The incident: its grant (a circle around each position) and the cameras it lists.
export function showIncident(incident, cameras) {
  incidentLayer.clearLayers();
  const grant = incident.grant;
  for (const p of grant?.positions ?? []) {
    L.circle([p.lat, p.lon], { radius: grant.radius_m, color: "#0b5cad", weight: 2, fillOpacity: 0.08 }).addTo(incidentLayer);
    L.circleMarker([p.lat, p.lon], { radius: 6, color: "#0b5cad", fillColor: "#ffffff", fillOpacity: 1, weight: 3 }).addTo(incidentLayer);
  }
  for (const c of cameras) {
    if (c.lat === null || c.lon === null) continue;
    L.circleMarker([c.lat, c.lon], { radius: 7, color: "#10283f", weight: 2, fillColor: "#ffd54f", fillOpacity: 0.9 })
      .bindTooltip(() => document.createTextNode(`${c.camera_id} · ${Math.round(c.distance_m)} m`)) // text, never HTML
      .addTo(incidentLayer);
  }
  const bounds = incidentLayer.getLayers().filter((l) => l.getBounds).map((l) => l.getBounds());
  if (bounds.length) map.fitBounds(bounds.reduce((a, b) => a.extend(b), L.latLngBounds(bounds[0].getSouthWest(), bounds[0].getNorthEast())), { maxZoom: 17 });
}

export function markPlace(lat, lon) {
  incidentLayer.clearLayers();
  L.circleMarker([lat, lon], { radius: 7, color: "#b3261e", weight: 3, fillColor: "#ffffff", fillOpacity: 1 }).addTo(incidentLayer);
}

// Districts coloured by availability (platform operators); `rows`: GET /v1/districts.
export function colourDistricts(rows) {
  const by = Object.fromEntries(rows.map((r) => [r.district, r]));
  districtsLayer.setStyle((feature) => {
    const row = by[SLUGS[feature.properties.SIG_KOR_NM]];
    const a = row?.availability;
    const fill = a === null || a === undefined ? "#bdbdbd" : a >= 0.95 ? "#a5d6a7" : a >= 0.8 ? "#ffe082" : "#ef9a9a";
    return { color: "#50606e", weight: 1.2, fillColor: fill, fillOpacity: 0.55 };
  });
}
