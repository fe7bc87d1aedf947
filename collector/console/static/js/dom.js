// Small DOM helpers. Text from the API is always set as text, never as HTML.
import { t } from "./i18n.js";

export const $ = (selector, root = document) => root.querySelector(selector);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export function badge(state) {
  return el("span", { class: `state state-${state}`, text: t(`state.${state}`) });
}

// The one place refusals and errors become words for the operator (never a blank page).
export function showError(error) {
  const box = $("#message");
  box.classList.remove("info");
  box.textContent = describe(error);
  box.dataset.code = error.code ?? "";
  box.dataset.status = error.status ?? "";
  box.hidden = false;
}

export function showInfo(text) {
  const box = $("#message");
  box.classList.add("info");
  box.textContent = text;
  box.dataset.code = "";
  box.dataset.status = "";
  box.hidden = false;
}

export function clearMessage() {
  $("#message").hidden = true;
}

function describe(e) {
  const values = { code: e.code, message: e.message, status: e.status, field: e.field ? `, ${e.field}` : "" };
  if (e.code === "incident_closed" || e.code === "incident_expired") return t("refused.closed");
  if (e.status === 0) return t("refused.network");
  if (e.status === 429) return t("refused.429", { seconds: e.retryAfter ?? "?" });
  if ([401, 403, 404, 422, 503].includes(e.status)) return t(`refused.${e.status}`, values);
  return t("refused.other", values);
}

// Run an action from a button or form: errors become messages, the control waits meanwhile.
export async function guarded(control, action) {
  if (control) control.disabled = true;
  try {
    clearMessage();
    return await action();
  } catch (error) {
    if (error.status === undefined) console.error(error);
    showError(error.status === undefined ? { status: -1, code: "client", message: String(error) } : error);
    return undefined;
  } finally {
    if (control) control.disabled = false;
  }
}
