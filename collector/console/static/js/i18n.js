// The console's words in Korean (default) and English. t(key, values) fills {name} placeholders.
const WORDS = {
  ko: {
    title: "서울 CCTV 공유 플랫폼", signout: "로그아웃", otherLang: "English",
    "signin.title": "로그인", "signin.button": "로그인",
    "signin.help": "기관의 인증 서버(OIDC)가 발급한 토큰을 붙여 넣으세요. 토큰은 이 탭에만 보관되고 주소에 남지 않습니다.",
    "signin.placeholder": "eyJ...",
    "tab.map": "지도·사건", "tab.live": "실시간", "tab.districts": "자치구 현황", "tab.audit": "감사",
    who: "{sub} · {agency} · {role}",
    "map.loading": "카메라 위치를 불러오는 중…", "map.points": "카메라 {count}대 표시", "map.noPoints": "이 역할은 카메라 목록을 볼 수 없습니다.",
    "incident.new": "사건 등록", "incident.clickHint": "지도를 눌러 위치를 정하거나 좌표를 입력하세요.",
    "incident.no": "사건 번호", "incident.service": "서비스", "incident.type": "유형", "incident.purpose": "목적",
    "incident.lat": "위도", "incident.lon": "경도", "incident.radius": "반경 (m)", "incident.open": "사건 열기", "incident.arm": "사전 녹화 준비 (가까운 N대)",
    "incident.sighting": "목격 위치 추가", "incident.close": "사건 종료", "incident.another": "새 사건",
    "incident.summary": "{state} · {district} · 위치 {positions}곳 · 허용 반경 {radius} m · {expires}까지",
    "incident.sightingHint": "지도에서 목격 위치를 누르세요.", "incident.closed": "종료됨", "incident.openState": "진행 중",
    "cameras.title": "주변 카메라", "cameras.id": "카메라", "cameras.distance": "거리", "cameras.district": "자치구",
    "cameras.state": "상태", "cameras.agent": "에이전트", "cameras.none": "허용 범위 안에 카메라가 없습니다.",
    "cameras.live": "실시간",
    "clips.request": "영상 요청", "clips.which": "대상", "clips.nearest": "가까운 N대", "clips.chosen": "선택한 카메라",
    "clips.n": "N", "clips.preroll": "사전 구간 (초)", "clips.length": "길이 (초)", "clips.ask": "요청",
    "clips.noneChosen": "카메라를 하나 이상 선택하세요.", "clips.download": "영상 내려받기", "clips.manifest": "매니페스트",
    "clips.verified": "매니페스트 서명 확인됨", "clips.unverified": "매니페스트 확인 실패: {problem}", "clips.pending": "매니페스트 확인 대기",
    "clips.window": "{start} – {end}", "clips.source": "출처: {source}", "clips.refused": "재생 거부: {code}",
    "live.unavailable": "이 플랫폼에는 아직 실시간 보기가 없습니다.", "live.none": "사건의 카메라 목록에서 '실시간'을 누르세요.",
    "live.latency": "지연 {seconds} s", "live.stop": "중지", "live.save": "최근 {minutes}분 저장", "live.ended": "종료: {reason}",
    "districts.name": "자치구", "districts.agent": "에이전트", "districts.cameras": "카메라", "districts.availability": "가용률",
    "state.online": "정상", "state.degraded": "저하", "state.offline": "끊김", "state.unknown": "알 수 없음", "state.unauthorized": "인증 실패",
    "state.requested": "요청됨", "state.accepted": "접수", "state.capturing": "녹화 중", "state.uploading": "업로드 중",
    "state.succeeded": "완료", "state.failed": "실패",
    yes: "연결", no: "끊김", none: "없음",
    "audit.chain": "감사 기록 체인", "audit.verify": "검증", "audit.search": "감사 기록 검색", "audit.account": "계정",
    "audit.agency": "기관", "audit.incident": "사건", "audit.camera": "카메라", "audit.since": "부터", "audit.until": "까지",
    "audit.find": "검색", "audit.time": "시각", "audit.action": "행위", "audit.result": "결과", "audit.more": "더 보기",
    "audit.report": "월간 점검 보고서와 제공 대장", "audit.month": "월", "audit.download": "내려받기 (ZIP)",
    "audit.ok": "정상: 기록 {records}건, 체크포인트 {checkpoints}개 (마지막 #{last}, 미고정 {unanchored}건)",
    "audit.broken": "손상: #{seq}부터 신뢰할 수 없음 — {reason}", "audit.found": "{count}건",
    "refused.403": "거부되었습니다 ({code}): {message}", "refused.429": "요청이 너무 많습니다. {seconds}초 뒤에 다시 시도하세요.",
    "refused.closed": "사건이 이미 종료되었습니다. 새 사건을 여세요.", "refused.401": "로그인이 만료되었거나 토큰이 잘못되었습니다 ({code}).",
    "refused.422": "입력을 확인하세요 ({code}{field}): {message}", "refused.404": "찾을 수 없습니다 ({code}).",
    "refused.503": "지금은 처리할 수 없습니다 ({code}): {message}", "refused.other": "오류 {status} ({code}): {message}",
    "refused.network": "서버에 연결할 수 없습니다.",
    "attribution.districts": "자치구 경계: 행정안전부 도로명주소(JUSO) 2015, southkorea/seoul-maps (Apache-2.0)",
  },
  en: {
    title: "Seoul CCTV sharing platform", signout: "Sign out", otherLang: "한국어",
    "signin.title": "Sign in", "signin.button": "Sign in",
    "signin.help": "Paste a token from your agency's identity provider (OIDC). It stays in this tab only, never in an address.",
    "signin.placeholder": "eyJ...",
    "tab.map": "Map & incident", "tab.live": "Live", "tab.districts": "Districts", "tab.audit": "Audit",
    who: "{sub} · {agency} · {role}",
    "map.loading": "Loading camera positions…", "map.points": "{count} cameras shown", "map.noPoints": "This role may not list cameras.",
    "incident.new": "New incident", "incident.clickHint": "Click the map to place it, or type the coordinates.",
    "incident.no": "Incident number", "incident.service": "Service", "incident.type": "Type", "incident.purpose": "Purpose",
    "incident.lat": "Latitude", "incident.lon": "Longitude", "incident.radius": "Radius (m)", "incident.open": "Open incident", "incident.arm": "Arm pre-roll (nearest N)",
    "incident.sighting": "Add sighting", "incident.close": "Close incident", "incident.another": "New incident",
    "incident.summary": "{state} · {district} · {positions} position(s) · granted radius {radius} m · until {expires}",
    "incident.sightingHint": "Click the sighting on the map.", "incident.closed": "closed", "incident.openState": "open",
    "cameras.title": "Cameras nearby", "cameras.id": "Camera", "cameras.distance": "Distance", "cameras.district": "District",
    "cameras.state": "State", "cameras.agent": "Agent", "cameras.none": "No camera within the grant.",
    "cameras.live": "Live",
    "clips.request": "Request clips", "clips.which": "Cameras", "clips.nearest": "Nearest N", "clips.chosen": "Chosen cameras",
    "clips.n": "N", "clips.preroll": "Pre-roll (s)", "clips.length": "Length (s)", "clips.ask": "Request",
    "clips.noneChosen": "Choose at least one camera.", "clips.download": "Download clip", "clips.manifest": "Manifest",
    "clips.verified": "Manifest signature verified", "clips.unverified": "Manifest check failed: {problem}", "clips.pending": "Manifest not checked yet",
    "clips.window": "{start} – {end}", "clips.source": "source: {source}", "clips.refused": "Playback refused: {code}",
    "live.unavailable": "This platform has no live view yet.", "live.none": "Press 'Live' in the incident's camera list.",
    "live.latency": "latency {seconds} s", "live.stop": "Stop", "live.save": "Save last {minutes} min", "live.ended": "ended: {reason}",
    "districts.name": "District", "districts.agent": "Agent", "districts.cameras": "Cameras", "districts.availability": "Availability",
    "state.online": "online", "state.degraded": "degraded", "state.offline": "offline", "state.unknown": "unknown", "state.unauthorized": "unauthorized",
    "state.requested": "requested", "state.accepted": "accepted", "state.capturing": "capturing", "state.uploading": "uploading",
    "state.succeeded": "done", "state.failed": "failed",
    yes: "online", no: "offline", none: "none",
    "audit.chain": "Audit chain", "audit.verify": "Verify", "audit.search": "Search the audit trail", "audit.account": "Account",
    "audit.agency": "Agency", "audit.incident": "Incident", "audit.camera": "Camera", "audit.since": "From", "audit.until": "Until",
    "audit.find": "Search", "audit.time": "Time", "audit.action": "Action", "audit.result": "Result", "audit.more": "More",
    "audit.report": "Monthly review and provision ledgers", "audit.month": "Month", "audit.download": "Download (ZIP)",
    "audit.ok": "OK: {records} records, {checkpoints} checkpoints (last #{last}, {unanchored} not yet anchored)",
    "audit.broken": "BROKEN: untrustworthy from #{seq} — {reason}", "audit.found": "{count} records",
    "refused.403": "Refused ({code}): {message}", "refused.429": "Too many requests. Try again in {seconds} s.",
    "refused.closed": "The incident is closed already. Open a new one.", "refused.401": "Signed out: the token expired or is not valid ({code}).",
    "refused.422": "Please check the input ({code}{field}): {message}", "refused.404": "Not found ({code}).",
    "refused.503": "Not possible right now ({code}): {message}", "refused.other": "Error {status} ({code}): {message}",
    "refused.network": "The server cannot be reached.",
    "attribution.districts": "District boundaries: JUSO 2015 via southkorea/seoul-maps (Apache-2.0)",
  },
};

const KEY = "console.lang";
let lang = localStorage.getItem(KEY) === "en" ? "en" : "ko";
const listeners = [];

export function t(key, values = {}) {
  const text = WORDS[lang][key] ?? WORDS.ko[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

export function language() {
  return lang;
}

export function setLanguage(next) {
  lang = next;
  localStorage.setItem(KEY, next);
  translate(document);
  listeners.forEach((f) => f());
}

export function onLanguage(listener) {
  listeners.push(listener);
}

export function translate(root) {
  document.documentElement.lang = lang;
  document.title = t("title");
  root.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  root.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
}

// Times as people in Seoul read them.
const formats = {};
export function kst(iso) {
  if (!iso) return "";
  formats[lang] ??= new Intl.DateTimeFormat(lang === "ko" ? "ko-KR" : "en-GB", {
    timeZone: "Asia/Seoul", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });
  return formats[lang].format(new Date(iso));
}
