// The console's start: sign in (a bearer token kept in this tab's sessionStorage), learn who we are and what
// the policy allows (GET /v1/me), then show only the views and controls of those actions.
import { api, session } from "./api.js";
import { initAudit } from "./audit.js";
import { initClips } from "./clips.js";
import { initDistricts } from "./districts.js";
import { $, clearMessage, el, guarded, showError } from "./dom.js";
import { language, onLanguage, setLanguage, t, translate } from "./i18n.js";
import { initIncident } from "./incident.js";
import { initLive } from "./live.js";
import { createMap, loadPoints } from "./map.js";

const SIGNED_OUT = "console.signedOut";
const VIEWS = {
  map: (may) => may("cameras.list") || may("incident.open"),
  live: (may) => may("live"),
  districts: (may) => may("districts.list"),
  audit: (may) => may("audit.read"),
};

async function start() {
  translate(document);
  $("#lang").textContent = t("otherLang");
  $("#lang").addEventListener("click", () => setLanguage(language() === "ko" ? "en" : "ko"));
  onLanguage(() => { $("#lang").textContent = t("otherLang"); showWho(); });
  $("#signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("#token").value.trim();
    $("#token").value = "";
    session.keep(token);
    guarded($("#signin-button"), enter);
  });
  $("#signout").addEventListener("click", signOut);
  // A 401 (expired or revoked token): back to the sign-in, saying why.
  session.onSignedOut((error) => { sessionStorage.setItem(SIGNED_OUT, error.code); signOut(); });
  const why = sessionStorage.getItem(SIGNED_OUT);
  sessionStorage.removeItem(SIGNED_OUT);
  if (why) showError({ status: 401, code: why });
  if (session.token()) await guarded(null, enter);
}

async function enter() {
  session.me = await api("/me");
  clearMessage();
  $("#signin").hidden = true;
  $("#views").hidden = false;
  $("#tabs").hidden = false;
  $("#signout").hidden = false;
  showWho();
  const may = session.may;
  const views = Object.keys(VIEWS).filter((v) => VIEWS[v](may));
  for (const button of document.querySelectorAll("#tabs button")) {
    button.hidden = !views.includes(button.dataset.view);
    button.addEventListener("click", () => showView(button.dataset.view));
  }
  showView(views[0] ?? "map");
  const config = await fetch("config.json").then((r) => r.json());
  if (views.includes("map") || views.includes("districts")) await createMap($("#map"), config);
  if (may("incident.open") || may("incident.read")) {
    initIncident();
    initClips();
    initLive();
  }
  if (views.includes("districts")) initDistricts();
  if (views.includes("audit")) initAudit();
  if (views.includes("map")) await loadPoints($("#map-status"));
}

function showView(name) {
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${name}`;
  for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.dataset.view === name);
  if (name === "map") window.consoleMap?.map.invalidateSize();
}

function showWho() {
  const me = session.me;
  if (!me) return;
  const who = $("#who");
  who.hidden = false;
  who.replaceChildren(el("span", { text: t("who", { sub: me.sub, agency: me.agency_name ?? me.agency, role: me.role_description || me.role }) }));
  who.dataset.agency = me.agency;
  who.dataset.role = me.role;
}

function signOut() {
  session.forget();
  session.me = null;
  location.reload();
}

start();
