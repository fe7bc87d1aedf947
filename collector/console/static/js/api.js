// The console's only back end: the /v1 API, with the bearer token of this tab (sessionStorage, never a URL).
const TOKEN = "console.token";
let signedOut = () => {};

export class ApiError extends Error {
  constructor(status, code, message, { field = null, retryAfter = null } = {}) {
    super(message);
    Object.assign(this, { status, code, field, retryAfter });
  }
}

export const session = {
  token: () => sessionStorage.getItem(TOKEN),
  keep: (token) => sessionStorage.setItem(TOKEN, token),
  forget: () => sessionStorage.removeItem(TOKEN),
  onSignedOut: (callback) => { signedOut = callback; },
  me: null, // GET /v1/me once signed in
  may: (action) => Boolean(session.me?.actions.includes(action)),
};

export function authorization() {
  return { Authorization: `Bearer ${session.token()}` };
}

export async function api(path, { method = "GET", body, params, raw = false } = {}) {
  const url = new URL(`/v1${path}`, location.origin);
  for (const [k, v] of Object.entries(params ?? {})) if (v !== "" && v !== null && v !== undefined) url.searchParams.set(k, v);
  const headers = authorization();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new ApiError(0, "network", String(error));
  }
  if (!response.ok) throw await failure(response);
  return raw ? response : response.json();
}

async function failure(response) {
  let error = {};
  try {
    error = (await response.json()).error ?? {};
  } catch { /* not the API's JSON: keep the status */ }
  const failed = new ApiError(response.status, error.code ?? `http_${response.status}`, error.message ?? response.statusText, {
    field: error.field ?? null, retryAfter: response.headers.get("Retry-After"),
  });
  if (response.status === 401) signedOut(failed);
  return failed;
}
