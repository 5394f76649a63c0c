/**
 * A typed client for the Organizations API: openapi-fetch over the generated `paths`, with the bearer token
 * attached to every request and, for this API's own accounts, one transparent refresh on a 401.
 *
 *   const client = createApiClient({ baseUrl: "https://api.example.com" });
 *   await signIn(client, { email, password });            // flows.ts
 *   const { data } = await client.api.GET("/api/v1/users/me");
 *
 * Two ways to authenticate (API.md: "Every protected endpoint accepts both"):
 * - own accounts: tokens from /auth/login live in a `TokenStorage`; a 401 on a request that carried the access
 *   token triggers one refresh (deduplicated: concurrent 401s share a single POST /auth/refresh) and one retry;
 * - Supabase: pass `getAccessToken` returning the Supabase session's access token (supabase-js refreshes it).
 */
import createClient, { type Client } from "openapi-fetch";

import type { components, paths } from "./schema.js";

export type { components, operations, paths } from "./schema.js";
export type Schemas = components["schemas"];
export type TokenPair = Schemas["TokenPair"];
export type ErrorRead = Schemas["ErrorRead"];
export type ValidationErrorBody = Schemas["HTTPValidationError"];
/** Every `code` an error answer can carry (each operation's answers narrow it to that operation's own). */
export type ErrorCode = Schemas["ErrorCode"];

export const API_PREFIX = "/api/v1";

/** What a signed-in own-account session keeps. `refreshToken` is null in cookie mode (the cookie holds it). */
export interface StoredTokens {
  accessToken: string;
  refreshToken: string | null;
  /** Epoch milliseconds when the access token expires (from `expires_in`). */
  expiresAt: number;
  sessionId: string;
}

/** Where tokens live. Keep it in memory where you can; see README.md "Storing tokens". */
export interface TokenStorage {
  load(): StoredTokens | null;
  save(tokens: StoredTokens | null): void;
}

export function memoryStorage(initial: StoredTokens | null = null): TokenStorage {
  let tokens = initial;
  return {
    load: () => tokens,
    save: (next) => {
      tokens = next;
    },
  };
}

/** A `sessionStorage`/`localStorage`-backed store (a script on the page can read it: prefer cookie mode). */
export function webStorage(storage: Pick<Storage, "getItem" | "setItem" | "removeItem">, key = "api.tokens"): TokenStorage {
  return {
    load: () => {
      const raw = storage.getItem(key);
      if (!raw) return null;
      try {
        return JSON.parse(raw) as StoredTokens;
      } catch {
        return null;
      }
    },
    save: (tokens) => (tokens ? storage.setItem(key, JSON.stringify(tokens)) : storage.removeItem(key)),
  };
}

/**
 * An error answer: `status` and the API's machine-readable `code` (`validation_error` for a 422), typed as the
 * union of every code, so that `error.code === "emial_taken"` does not compile. `http_<status>` when the body
 * carried no code (a proxy's answer, say).
 */
export class ApiError extends Error {
  readonly status: number;
  readonly code: ErrorCode | `http_${number}`;
  readonly detail: unknown;

  constructor(status: number, body: unknown) {
    const record = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
    const code =
      typeof record.code === "string"
        ? (record.code as ErrorCode)
        : status === 422
          ? "validation_error"
          : (`http_${status}` as const);
    const detail = record.detail ?? body;
    super(typeof detail === "string" ? `${status} ${code}: ${detail}` : `${status} ${code}`);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

/** Throws `ApiError` for an error answer, else returns `data` (undefined for a 204). */
export function unwrap<T>(result: { data?: T; error?: unknown; response: Response }): T {
  if (!result.response.ok) {
    throw new ApiError(result.response.status, result.error);
  }
  return result.data as T;
}

export interface ApiClientOptions {
  /** Origin of the API, e.g. "https://api.example.com" (the schema's paths already start with /api/v1). */
  baseUrl: string;
  /** Own accounts: where the tokens are kept. Default: memory. */
  storage?: TokenStorage;
  /**
   * "body" (default): the refresh token is kept by the client and sent in the body.
   * "cookie": for deployments with AUTH_REFRESH_COOKIE=true in a browser: the refresh token stays in an
   * HttpOnly cookie; refresh and logout send the `X-CSRF-Token` header, requests use `credentials: "include"`.
   */
  refreshMode?: "body" | "cookie";
  /** Supabase: the current Supabase access token (e.g. from supabase.auth.getSession()). Replaces `storage`. */
  getAccessToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /** Called once when the own-account session cannot be refreshed any more (sign in again). */
  onSessionExpired?: (error: ApiError) => void;
  /** Cookie mode: how to read the `csrf_token` cookie. Default: `document.cookie` when there is a document. */
  readCsrfCookie?: () => string | null;
  /** A fetch to use instead of globalThis.fetch. */
  fetch?: (input: Request) => Promise<Response>;
}

/** Requests that never carry the access token (and are never retried after a refresh). */
const PUBLIC_PATHS = [
  "/auth/login",
  "/auth/token",
  "/auth/register",
  "/auth/refresh",
  "/auth/password-reset/",
  "/auth/verify-email/confirm",
  "/auth/mfa/verify",
];

/** 401 codes about the request's body, not the access token: answered as they are, without a refresh. */
const NOT_THE_TOKENS_FAULT = new Set(["invalid_credentials", "reauthentication_required"]);

function isPublic(url: string): boolean {
  const { pathname } = new URL(url);
  const path = pathname.startsWith(API_PREFIX) ? pathname.slice(API_PREFIX.length) : pathname;
  return PUBLIC_PATHS.some((prefix) => path === prefix || (prefix.endsWith("/") && path.startsWith(prefix)));
}

async function errorCode(response: Response): Promise<string | null> {
  try {
    const body = (await response.clone().json()) as { code?: unknown };
    return typeof body.code === "string" ? body.code : null;
  } catch {
    return null;
  }
}

function documentCookie(name: string): string | null {
  const doc = (globalThis as { document?: { cookie?: string } }).document;
  if (!doc?.cookie) return null;
  for (const part of doc.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return null;
}

export const CSRF_HEADER = "X-CSRF-Token";

/** The session side of the client: tokens in, the deduplicated refresh, sign-out. */
export class AuthSession {
  private inflight: Promise<string | null> | null = null;
  private csrf: string | null = null;
  private readonly storage: TokenStorage;

  constructor(
    private readonly raw: Client<paths>,
    private readonly options: ApiClientOptions,
  ) {
    this.storage = options.storage ?? memoryStorage();
  }

  get mode(): "own" | "supabase" {
    return this.options.getAccessToken ? "supabase" : "own";
  }

  get tokens(): StoredTokens | null {
    return this.storage.load();
  }

  /** Keep a pair from /auth/login, /auth/token or /auth/refresh (and the CSRF header in cookie mode). */
  accept(pair: TokenPair, response?: Response): StoredTokens {
    const csrf = response?.headers.get(CSRF_HEADER);
    if (csrf) this.csrf = csrf;
    const tokens: StoredTokens = {
      accessToken: pair.access_token,
      refreshToken: this.options.refreshMode === "cookie" ? null : pair.refresh_token,
      expiresAt: Date.now() + pair.expires_in * 1000,
      sessionId: pair.session_id,
    };
    this.storage.save(tokens);
    return tokens;
  }

  clear(): void {
    this.storage.save(null);
    this.csrf = null;
  }

  async accessToken(): Promise<string | null> {
    if (this.options.getAccessToken) return (await this.options.getAccessToken()) ?? null;
    return this.storage.load()?.accessToken ?? null;
  }

  /** Headers for the cookie-mode calls (refresh, logout): the CSRF token of the double-submit check. */
  csrfHeaders(): Record<string, string> {
    if (this.options.refreshMode !== "cookie") return {};
    const value = this.options.readCsrfCookie?.() ?? documentCookie("csrf_token") ?? this.csrf;
    return value ? { [CSRF_HEADER]: value } : {};
  }

  /**
   * Spend the refresh token once for a new pair; concurrent callers share one request. Resolves to the new
   * access token, or null when the session is over (the storage is then cleared and onSessionExpired called).
   */
  refresh(): Promise<string | null> {
    if (this.mode === "supabase") return Promise.resolve(null);
    this.inflight ??= this.doRefresh().finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  private async doRefresh(): Promise<string | null> {
    const refreshToken = this.storage.load()?.refreshToken ?? null;
    const cookieMode = this.options.refreshMode === "cookie";
    // In cookie mode the refresh token is the browser's: a reloaded page (no tokens in memory) can refresh too.
    if (!cookieMode && !refreshToken) return null;
    const result = await this.raw.POST("/api/v1/auth/refresh", {
      body: cookieMode ? {} : { refresh_token: refreshToken },
      headers: this.csrfHeaders(),
    });
    if (result.data) {
      return this.accept(result.data, result.response).accessToken;
    }
    const error = new ApiError(result.response.status, result.error);
    if (result.response.status === 401 || result.response.status === 403) {
      this.clear();
      this.options.onSessionExpired?.(error);
      return null;
    }
    throw error; // 429 or 5xx: the session may still be fine, keep the tokens
  }

  /** The fetch the typed client uses: attach the token; on a 401, refresh once and retry once. */
  readonly fetch = async (request: Request): Promise<Response> => {
    const send = this.options.fetch ?? ((input: Request) => globalThis.fetch(input));
    if (isPublic(request.url) || request.headers.has("Authorization")) {
      return send(request);
    }
    const token = await this.accessToken();
    if (!token) return send(request);
    const retry = request.clone(); // a body can be read only once: keep a copy for the retry
    request.headers.set("Authorization", `Bearer ${token}`);
    const response = await send(request);
    if (response.status !== 401 || this.mode === "supabase") return response;
    // A wrong password in the body (e.g. POST /users/me/email) is not the token's fault: no refresh; nor is a
    // request to prove it is the user again (DELETE /users/me without current_password).
    if (NOT_THE_TOKENS_FAULT.has((await errorCode(response)) ?? "")) return response;
    // Another request may have refreshed meanwhile: use its token instead of spending the refresh token again.
    const latest = await this.accessToken();
    const fresh = latest && latest !== token ? latest : await this.refresh();
    if (!fresh) return response;
    retry.headers.set("Authorization", `Bearer ${fresh}`);
    return send(retry);
  };
}

export interface ApiClient {
  /** The typed openapi-fetch client: `api.GET("/api/v1/profile")`, `api.POST(...)`, ... */
  api: Client<paths>;
  session: AuthSession;
}

export function createApiClient(options: ApiClientOptions): ApiClient {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const common = {
    baseUrl,
    ...(options.refreshMode === "cookie" ? { credentials: "include" as const } : {}),
  };
  const raw = createClient<paths>({ ...common, ...(options.fetch ? { fetch: options.fetch } : {}) });
  const session = new AuthSession(raw, options);
  const api = createClient<paths>({ ...common, fetch: session.fetch });
  return { api, session };
}
