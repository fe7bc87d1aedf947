// District availability at a glance (platform operators): agent presence and cameras by state, per district,
// in a table and as the colour of each district on the map.
import { api } from "./api.js";
import { $, el, showError } from "./dom.js";
import { onLanguage, t } from "./i18n.js";
import { colourDistricts, districtName } from "./map.js";

const REFRESH_MS = 15_000;
const STATES = ["online", "degraded", "offline", "unknown"];
let rows = [];

export function initDistricts() {
  onLanguage(render);
  refresh();
  setInterval(refresh, REFRESH_MS);
}

async function refresh() {
  try {
    rows = (await api("/districts")).districts;
  } catch (error) {
    showError(error);
    return;
  }
  render();
  colourDistricts(rows);
}

function render() {
  $("#districts tbody").replaceChildren(...rows.map((d) => el("tr", { dataset: { district: d.district } },
    el("td", { text: districtName(d.district) }),
    el("td", {}, el("span", {
      class: `state ${d.agent_online ? "ok" : "bad"}`,
      text: d.agent_online === null ? t("none") : t(d.agent_online ? "yes" : "no"),
    })),
    el("td", { text: d.cameras.toLocaleString() }),
    ...STATES.map((s) => el("td", { text: String(d.by_state[s] ?? 0) })),
    el("td", { text: d.availability === null ? "–" : `${(d.availability * 100).toFixed(1)} %` }))));
}
