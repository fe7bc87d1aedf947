// A visible watermark over every video: the signed-in account, its agency and the time, refreshed each second,
// so that a screen recording still names who watched and when.
import { session } from "./api.js";

const marks = new Set();

export function watermarked(video) {
  const label = el("span");
  const corner = el("span", "corner");
  const overlay = document.createElement("div");
  overlay.className = "watermark";
  overlay.append(label, corner);
  const player = document.createElement("div");
  player.className = "player";
  player.append(video, overlay);
  const mark = { label, corner, shown: false };
  marks.add(mark);
  write(mark, text());
  return player;
}

function el(tag, className = "") {
  const node = document.createElement(tag);
  node.className = className;
  return node;
}

function text() {
  const me = session.me;
  const now = new Date().toLocaleString("sv-SE", { timeZone: "Asia/Seoul" });
  return `${me?.sub ?? ""} · ${me?.agency ?? ""} · ${now} KST`;
}

function write(mark, value) {
  mark.label.textContent = value;
  mark.corner.textContent = value;
}

// Every second; a player taken off the page (a closed tile, a new incident) is forgotten.
setInterval(() => {
  const value = text();
  for (const mark of marks) {
    if (mark.label.isConnected) {
      mark.shown = true;
      write(mark, value);
    } else if (mark.shown) {
      marks.delete(mark);
    }
  }
}, 1000);
