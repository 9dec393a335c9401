// REST calls. Public ones are plain; account ones ride on the HttpOnly session cookie and must send
// the anti-CSRF header X-Exchange-Session (the server refuses cookie requests without it).

export class ApiError extends Error {
  constructor(status, code, msg) {
    super(msg);
    this.status = status;
    this.code = code;
  }

  /** A message for people: the server's words plus its Binance code. */
  get text() {
    return this.code ? `${this.message} (code ${this.code})` : this.message;
  }
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  return q.toString();
}

/** GET/POST/DELETE `path` with `params` (query for GET and DELETE, form body for POST). */
export async function call(method, path, params = {}, { session = false, timeoutMs = 15000 } = {}) {
  const headers = {};
  if (session) headers['X-Exchange-Session'] = '1';
  let url = path;
  let body;
  const q = query(params);
  if (method === 'POST' && q) {
    headers['Content-Type'] = 'application/x-www-form-urlencoded';
    body = q;
  } else if (q) {
    url += `?${q}`;
  }
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  let res;
  try {
    res = await fetch(url, { method, headers, body, credentials: 'same-origin', signal: ctl.signal,
                             cache: 'no-store' });
  } catch (err) {
    throw new ApiError(0, 0, err.name === 'AbortError' ? 'The exchange did not answer in time.'
                                                       : 'Cannot reach the exchange (connection lost).');
  } finally {
    clearTimeout(timer);
  }
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    const msg = data && typeof data.msg === 'string' ? data.msg : `HTTP ${res.status}`;
    throw new ApiError(res.status, data && data.code, msg);
  }
  return data;
}

export const pub = (path, params) => call('GET', path, params);
export const user = (method, path, params) => call(method, path, params, { session: true });
