// The REST client and the session: the access token lives in memory only; the refresh token in
// sessionStorage (this tab only) so a reload keeps the session. Tokens never go into a URL.
import { Store } from "./store";

export type Role = "viewer" | "operator" | "admin";
export interface User { id: string; username: string; role: Role; two_factor_enabled: boolean }

export class ApiError extends Error {
  constructor(public status: number, public code: string, message: string, public details: any = {}) {
    super(message);
  }
}

interface Tokens { access_token: string; refresh_token: string; expires_in: number }

const REFRESH_KEY = "mcc.refresh";
const API = "/api/v1";

let access: string | null = null;
let refreshTimer: number | undefined;
let refreshing: Promise<boolean> | null = null;

export const session = new Store<{ user: User | null; ready: boolean }>({ user: null, ready: false });

export function accessToken(): string | null { return access; }

export function can(minimum: Role): boolean {
  const rank = { viewer: 0, operator: 1, admin: 2 };
  const user = session.get().user;
  return !!user && rank[user.role] >= rank[minimum];
}

// Copies of one tab (a duplicated tab) start with the same refresh token; when one rotates it,
// the others would present the rotated token at their next refresh, which the API takes for a
// stolen token's replay and ends the session in every copy. So each rotation leaves a note in
// localStorage: the new refresh token, sealed (AES-GCM) under a key derived from the token it
// replaced and filed under a hash of that token, so only a tab that held it can find and read the
// note, never another document of the origin. Refreshes take turns across tabs (Web Locks), and
// inside the lock a tab first follows the notes from its token to the newest, then exchanges that.
// Both APIs exist in secure contexts only (https, localhost); elsewhere each tab goes alone and the
// API's reuse grace is what keeps copies that refresh together logged in.
const subtle: SubtleCrypto | undefined = globalThis.crypto?.subtle;
const sealing = !!subtle && typeof navigator !== "undefined" && !!navigator.locks;
const NOTE_PREFIX = "mcc.rotation.";
const NOTE_LIFETIME_MS = 24 * 3600 * 1000;  // a copy asleep for longer finds no trail: log in again
const utf8 = new TextEncoder();
const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const unhex = (text: string) => new Uint8Array((text.match(/../g) || []).map((pair) => parseInt(pair, 16)));
const digest = async (text: string) => new Uint8Array(await subtle!.digest("SHA-256", utf8.encode(text)));
const noteKey = async (token: string) => NOTE_PREFIX + hex(await digest("mcc.rotation-id:" + token));
const sealKey = async (token: string) =>
  subtle!.importKey("raw", await digest("mcc.rotation-key:" + token), "AES-GCM", false, ["encrypt", "decrypt"]);

async function leaveNote(previous: string, next: string): Promise<void> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const sealed = new Uint8Array(await subtle!.encrypt({ name: "AES-GCM", iv }, await sealKey(previous), utf8.encode(next)));
  const now = Date.now();
  for (const key of Object.keys(localStorage)) {
    if (!key.startsWith(NOTE_PREFIX)) continue;
    try { if (now - JSON.parse(localStorage.getItem(key) || "{}").at < NOTE_LIFETIME_MS) continue; } catch { /* unreadable */ }
    localStorage.removeItem(key);
  }
  localStorage.setItem(await noteKey(previous), JSON.stringify({ iv: hex(iv), sealed: hex(sealed), at: now }));
}

/** The newest refresh token the notes lead to from ``token`` (``token`` itself when none). */
async function newest(token: string): Promise<string> {
  for (let hop = 0; hop < 10_000; hop++) {
    const raw = localStorage.getItem(await noteKey(token));
    if (!raw) return token;
    try {
      const note = JSON.parse(raw);
      const plain = await subtle!.decrypt({ name: "AES-GCM", iv: unhex(note.iv) }, await sealKey(token), unhex(note.sealed));
      token = new TextDecoder().decode(plain);
    } catch {
      return token;  // not sealed under this token: not ours to follow
    }
  }
  return token;
}

/** Run ``work`` holding the origin-wide refresh lock; without it where the lock cannot be had. */
async function oneTabAtATime<T>(work: () => Promise<T>): Promise<T> {
  if (!sealing) return work();
  let started = false;
  try {
    return await navigator.locks.request("mcc.refresh", () => { started = true; return work(); });
  } catch (error) {
    if (started) throw error;
    return work();  // the lock was refused (e.g. a sandboxed document): go alone
  }
}

function adopt(tokens: Tokens) {
  access = tokens.access_token;
  sessionStorage.setItem(REFRESH_KEY, tokens.refresh_token);
  window.clearTimeout(refreshTimer);
  // Refresh a minute before expiry (or at half-life for short tokens).
  const lead = Math.min(60, tokens.expires_in / 2);
  refreshTimer = window.setTimeout(() => { refresh(); }, (tokens.expires_in - lead) * 1000);
}

function forget() {
  access = null;
  window.clearTimeout(refreshTimer);
  sessionStorage.removeItem(REFRESH_KEY);
  session.set({ user: null, ready: true });
}

async function parse(response: Response): Promise<any> {
  if (response.status === 204) return null;
  const text = await response.text();
  let body: any = null;
  try { body = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!response.ok) {
    const error = body && body.error;
    if (error) throw new ApiError(response.status, error.code, error.message, error.details || {});
    throw new ApiError(response.status, "HTTP_" + response.status, text.slice(0, 200) || response.statusText);
  }
  return body;
}

async function raw(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const init: RequestInit = { method, headers: { ...headers } };
  if (access) (init.headers as any).Authorization = `Bearer ${access}`;
  if (body !== undefined) {
    (init.headers as any)["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(API + path, init);
}

/** Exchange the refresh token for new tokens (one at a time, across tabs); false when the session is over. */
export function refresh(): Promise<boolean> {
  if (refreshing) return refreshing;
  if (!sessionStorage.getItem(REFRESH_KEY)) return Promise.resolve(false);
  refreshing = oneTabAtATime(async () => {
    const stored = sessionStorage.getItem(REFRESH_KEY);
    if (!stored) return false;
    try {
      const token = sealing ? await newest(stored) : stored;
      const response = await exchange(token);
      if (!response) return false;  // network trouble: keep the session, the next call retries
      if (response.status === 401 || response.status === 422) { forget(); return false; }
      const tokens: Tokens = await parse(response);
      adopt(tokens);
      if (sealing) {
        try { await leaveNote(token, tokens.refresh_token); } catch { /* storage full: copies go by the grace */ }
      }
      return true;
    } catch {
      return false;
    }
  }).catch(() => false).finally(() => { refreshing = null; });
  return refreshing;
}

/** POST the refresh token; null when no answer came back. A lost answer is asked again soon:
 * the server may have rotated the token already, and presenting it again within its reuse grace
 * (MCC_REFRESH_REUSE_GRACE_SECONDS, 10 s) still gets a new pair, where later it ends the session. */
async function exchange(token: string): Promise<Response | null> {
  for (const pause of [0, 1000, 2000]) {
    if (pause) await new Promise((resolve) => window.setTimeout(resolve, pause));
    try {
      return await fetch(API + "/auth/refresh", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: token }),
        signal: AbortSignal.timeout(10_000),  // other tabs wait on the lock: never hang here
      });
    } catch { /* no answer: ask again */ }
  }
  return null;
}

// A step-up second factor (403 TWO_FACTOR_REQUIRED) asks the person for a code; the console's
// dialog registers itself here.
export let askSecondFactor: ((reason: string) => Promise<string | null>) | null = null;
export function onSecondFactor(handler: typeof askSecondFactor) { askSecondFactor = handler; }

/** Call the API; a 401 triggers one refresh and retry; a failed refresh ends the session. */
export async function api<T = any>(method: string, path: string, body?: unknown): Promise<T> {
  let response = await raw(method, path, body);
  if (response.status === 401 && sessionStorage.getItem(REFRESH_KEY)) {
    if (await refresh()) response = await raw(method, path, body);
    else throw new ApiError(401, "UNAUTHORIZED", "Your session has ended; log in again.");
  }
  if (response.status === 403 && askSecondFactor) {
    const copy = response.clone();
    const error = await copy.json().catch(() => null);
    if (error?.error?.code === "TWO_FACTOR_REQUIRED") {
      const code = await askSecondFactor(error.error.details?.reason || error.error.message);
      if (code) response = await raw(method, path, body, { "X-MCC-2FA-Code": code });
    }
  }
  return parse(response);
}

export type LoginResult = { done: true } | { done: false; temp_token: string };

export async function login(username: string, password: string): Promise<LoginResult> {
  const result = await parse(await fetch(API + "/auth/login", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ username, password }),
  }));
  if (result.requires_2fa) return { done: false, temp_token: result.temp_token };
  await start(result);
  return { done: true };
}

export async function verifyCode(temp_token: string, code: string): Promise<void> {
  await start(await parse(await fetch(API + "/auth/2fa/verify", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ temp_token, code }),
  })));
}

async function start(tokens: Tokens) {
  adopt(tokens);
  const user = await api<User>("GET", "/auth/me");
  session.set({ user, ready: true });
}

/** On page load: resume the tab's session from its refresh token, if any. */
export async function resume(): Promise<void> {
  if (await refresh()) {
    try {
      session.set({ user: await api<User>("GET", "/auth/me"), ready: true });
      return;
    } catch { /* fall through */ }
  }
  session.set({ user: null, ready: true });
}

export async function logout(): Promise<void> {
  const refresh_token = sessionStorage.getItem(REFRESH_KEY);
  try { await raw("POST", "/auth/logout", { refresh_token }); } catch { /* going anyway */ }
  forget();
}

export function errorText(error: unknown): string {
  if (error instanceof ApiError) {
    const details = error.details && Object.keys(error.details).length ? " " + JSON.stringify(error.details) : "";
    return `${error.code}: ${error.message}${details}`;
  }
  return String((error as any)?.message || error);
}
