/**
 * The REST side (docs/api.md) with the token pair: login/register, a single-flight
 * refresh that never loops on a dead refresh token, and `accessToken()` for the socket's
 * token callback.
 */
import { ApiError, FileTooLarge, SessionEnded } from "./errors.js";
import type {
  CreateRoomBody,
  FileInfo,
  FileUploaded,
  HistoryItem,
  InboxState,
  InviteCode,
  JoinResult,
  MemberPage,
  NotificationPage,
  PrivateUser,
  PushRegistration,
  PushSubscriptionBody,
  Room,
  RoomPage,
  TokenPair,
  User,
} from "./types.js";

// Refresh an access token this long before its `exp`: covers clock skew and a slow
// refresh round trip, and is longer than the socket's renewal lead (30 s), so a renewal
// always gets a genuinely new token.
const REFRESH_LEEWAY_MS = 60_000;
// Outside browsers (Node), fetch and WebSocket share undici's connection pool, and an
// upgrade sent on a connection a REST call left open is not routed to the gateway's
// WebSocket server (the gateway picks the protocol from a connection's first request).
// Closing REST connections after each call keeps the pool empty; browsers always open a
// dedicated connection for a WebSocket and keep their keep-alive.
const CLOSE_REST_CONNECTIONS = typeof window === "undefined";
// auth codes that mean the refresh token will never work again (docs/api.md).
const DEAD_REFRESH_CODES = new Set(["invalid_refresh_token", "refresh_token_expired", "refresh_token_reused"]);
// The servers' default file limit (ROOMCAST_GATEWAY_FILES_MAX_BYTES, 25 MiB). A larger
// file is refused before a byte is sent: the gateway answers 413 from the declared size
// and closes the connection, which fetch may report as a network error mid-upload.
const DEFAULT_FILE_MAX_BYTES = 25 * 1024 * 1024;

export interface HttpOptions {
  /** The gateway's base URL ("" in a page the gateway serves: same origin). */
  baseUrl?: string;
  /** A stored pair to resume a session with (e.g. from sessionStorage). */
  tokens?: TokenPair;
  /** Called whenever the pair changes (login, refresh) or ends (`null`). */
  onTokens?: (tokens: TokenPair | null) => void;
  fetch?: typeof fetch;
  /** The gateway's file limit, when it is not the default 25 MiB (uploads above it are refused locally). */
  fileMaxBytes?: number;
}

/** The `exp` claim of a JWT in milliseconds, or undefined (never verified here). */
export function jwtExpiryMs(token: string): number | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    const exp = (JSON.parse(json) as { exp?: unknown }).exp;
    return typeof exp === "number" ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

export class RoomcastHttp {
  readonly baseUrl: string;
  private pair: TokenPair | null;
  private refreshing: Promise<TokenPair> | null = null;
  private readonly onTokens: ((tokens: TokenPair | null) => void) | undefined;
  private readonly fetchImpl: typeof fetch;
  private readonly fileMaxBytes: number;

  constructor(options: HttpOptions = {}) {
    this.baseUrl = (options.baseUrl ?? "").replace(/\/$/, "");
    this.pair = options.tokens ?? null;
    this.onTokens = options.onTokens;
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.fileMaxBytes = options.fileMaxBytes ?? DEFAULT_FILE_MAX_BYTES;
  }

  get tokens(): TokenPair | null {
    return this.pair;
  }

  get user(): PrivateUser | null {
    return this.pair?.user ?? null;
  }

  // ------------------------------------------------------------- auth

  async register(username: string, password: string, displayName?: string): Promise<PrivateUser> {
    const body: Record<string, string> = { username, password };
    if (displayName) body.display_name = displayName;
    const answer = await this.call<{ user: PrivateUser }>("POST", "/v1/auth/register", body, false);
    return answer.user;
  }

  async login(username: string, password: string): Promise<TokenPair> {
    const pair = await this.call<TokenPair>("POST", "/v1/auth/login", { username, password }, false);
    this.store(pair);
    return pair;
  }

  async logout(): Promise<void> {
    const pair = this.pair;
    this.store(null);
    if (pair) await this.call("POST", "/v1/auth/logout", { refresh_token: pair.refresh_token }, false);
  }

  /**
   * A valid access token for the socket's token callback: the current one, or a new one
   * when it is about to expire or `force` is set (the gateway refused it with 4001).
   * Throws SessionEnded when the refresh token is dead (no retry loop).
   */
  async accessToken(force = false): Promise<string> {
    const pair = this.pair;
    if (!pair) throw new SessionEnded("not_logged_in", "log in first");
    const exp = jwtExpiryMs(pair.access_token);
    if (!force && (exp === undefined || exp - Date.now() > REFRESH_LEEWAY_MS)) return pair.access_token;
    return (await this.refresh()).access_token;
  }

  /** Rotate the pair once, shared by concurrent callers (rotation reuse revokes the family). */
  refresh(): Promise<TokenPair> {
    if (this.refreshing) return this.refreshing;
    const pair = this.pair;
    if (!pair) return Promise.reject(new SessionEnded("not_logged_in", "log in first"));
    this.refreshing = (async () => {
      try {
        const fresh = await this.call<TokenPair>(
          "POST",
          "/v1/auth/refresh",
          { refresh_token: pair.refresh_token },
          false,
        );
        this.store(fresh);
        return fresh;
      } catch (error) {
        if (error instanceof ApiError && (error.status === 401 || DEAD_REFRESH_CODES.has(error.code))) {
          this.store(null);
          throw new SessionEnded(error.code, error.message);
        }
        throw error;
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  // ------------------------------------------------------------ users

  async me(): Promise<PrivateUser> {
    return (await this.call<{ user: PrivateUser }>("GET", "/v1/users/me")).user;
  }

  async findUser(username: string): Promise<User> {
    return (await this.call<{ user: User }>("GET", `/v1/users?username=${encodeURIComponent(username)}`)).user;
  }

  // ------------------------------------------------------------ rooms

  async createRoom(name: string, visibility: CreateRoomBody["visibility"] = "public", topic?: string): Promise<Room> {
    const body: CreateRoomBody = topic ? { name, visibility, topic } : { name, visibility };
    return (await this.call<{ room: Room }>("POST", "/v1/rooms", body)).room;
  }

  listRooms(scope: "public" | "joined" = "joined", cursor?: string): Promise<RoomPage> {
    const query = new URLSearchParams({ scope, limit: "100" });
    if (cursor) query.set("cursor", cursor);
    return this.call<RoomPage>("GET", `/v1/rooms?${query}`);
  }

  async getRoom(roomId: string): Promise<Room> {
    return (await this.call<{ room: Room }>("GET", `/v1/rooms/${seg(roomId)}`)).room;
  }

  joinRoom(roomId: string, inviteCode?: string): Promise<JoinResult> {
    return this.call<JoinResult>("POST", `/v1/rooms/${seg(roomId)}/join`, inviteCode ? { invite_code: inviteCode } : {});
  }

  async leaveRoom(roomId: string): Promise<void> {
    await this.call("POST", `/v1/rooms/${seg(roomId)}/leave`, {});
  }

  members(roomId: string, cursor?: string): Promise<MemberPage> {
    const query = new URLSearchParams({ limit: "100" });
    if (cursor) query.set("cursor", cursor);
    return this.call<MemberPage>("GET", `/v1/rooms/${seg(roomId)}/members?${query}`);
  }

  async rotateInviteCode(roomId: string): Promise<string> {
    return (await this.call<InviteCode>("POST", `/v1/rooms/${seg(roomId)}/invite-code`, {})).invite_code;
  }

  async openDm(userId: string): Promise<Room> {
    return (await this.call<{ room: Room }>("POST", "/v1/dms", { user_id: userId })).room;
  }

  /** History, newest first: messages with `seq < before` (all when omitted). */
  async messages(
    roomId: string,
    options: { before?: number; limit?: number } = {},
  ): Promise<{ items: HistoryItem[]; next_before: number | null }> {
    const query = new URLSearchParams({ limit: String(options.limit ?? 50) });
    if (options.before !== undefined) query.set("before", String(options.before));
    return this.call("GET", `/v1/rooms/${seg(roomId)}/messages?${query}`);
  }

  /** The thread of message `seq`: its replies you may see, newest first (`before` pages back). */
  replies(
    roomId: string,
    seq: number,
    options: { before?: number; limit?: number } = {},
  ): Promise<{ items: HistoryItem[]; next_before: number | null }> {
    const query = new URLSearchParams({ limit: String(options.limit ?? 50) });
    if (options.before !== undefined) query.set("before", String(options.before));
    return this.call("GET", `/v1/rooms/${seg(roomId)}/messages/${seq}/replies?${query}`);
  }

  // ------------------------------------------------------------ files

  /**
   * Upload a file into a room (members only; docs/files.md): a browser `File` (its name
   * is kept) or any `Blob` (Node too; pass `name`). Sent as multipart/form-data, which
   * the platform streams from the blob with its Content-Length. Resolves with the
   * metadata; share it with `socket.sendFile(room, file.id)`. A file over the limit
   * (`fileMaxBytes`, default 25 MiB like the servers) rejects with {@link FileTooLarge}
   * before anything is sent, and so does the server's 413.
   */
  async uploadFile(roomId: string, file: Blob, options: { name?: string } = {}): Promise<FileInfo> {
    if (file.size > this.fileMaxBytes) {
      throw new FileTooLarge("file_too_large", `the file is larger than ${this.fileMaxBytes} bytes`);
    }
    const name = options.name ?? (typeof File !== "undefined" && file instanceof File ? file.name : "file");
    const path = `/v1/rooms/${seg(roomId)}/files`;
    const response = await this.authorized(path, (headers) => {
      const form = new FormData(); // a new one per attempt: its body is consumed by a send
      form.append("file", file, name);
      return { method: "POST", headers, body: form };
    });
    return ((await response.json()) as FileUploaded).file;
  }

  /**
   * A shared file's bytes as a Blob (its `type` is the served content type), or bytes
   * `start` to `end` (inclusive) of it. Members of a room where it was shared only: any
   * other caller gets 404 `file_not_found`. In a page, `URL.createObjectURL(blob)` gives
   * a link or an image source.
   */
  async downloadFile(fileId: string, options: { start?: number; end?: number } = {}): Promise<Blob> {
    const range =
      options.start !== undefined || options.end !== undefined
        ? `bytes=${options.start ?? ""}-${options.end ?? ""}`
        : undefined;
    const response = await this.authorized(`/v1/files/${seg(fileId)}`, (headers) => {
      if (range) headers.range = range;
      return { method: "GET", headers };
    });
    return response.blob();
  }

  /**
   * The download URL of a file. It needs the bearer token (`Authorization`), so a plain
   * link or `<img src>` cannot use it: fetch it with `fileRequest` or use `downloadFile`.
   */
  fileUrl(fileId: string): string {
    return `${this.baseUrl}/v1/files/${seg(fileId)}`;
  }

  /** `fileUrl` with a valid bearer header, for your own fetch (e.g. streaming a large file). */
  async fileRequest(fileId: string): Promise<{ url: string; headers: Record<string, string> }> {
    return { url: this.fileUrl(fileId), headers: { authorization: `Bearer ${await this.accessToken()}` } };
  }

  // ------------------------------------------------------------ notifications

  /** One page of the inbox (mentions, replies, DMs), newest first, with the unread count. */
  notifications(options: { cursor?: string | null; limit?: number } = {}): Promise<NotificationPage> {
    const query = new URLSearchParams({ limit: String(options.limit ?? 50) });
    if (options.cursor) query.set("cursor", options.cursor);
    return this.call<NotificationPage>("GET", `/v1/notifications?${query}`);
  }

  /** Marks every notification up to the stream sequence `upTo` read (never moves back). */
  markNotificationsRead(upTo: number): Promise<InboxState> {
    return this.call<InboxState>("POST", "/v1/notifications/read", { up_to: upTo });
  }

  /** The VAPID public key: `applicationServerKey` for `pushManager.subscribe`. */
  async pushVapidKey(): Promise<string> {
    return (await this.call<{ key: string }>("GET", "/v1/push/vapid-key")).key;
  }

  /** Registers a `PushSubscription` (or its `toJSON()`) for Web Push; the same endpoint replaces its entry. */
  registerPush(subscription: PushSubscriptionBody | { toJSON(): unknown }): Promise<PushRegistration> {
    const body = "toJSON" in subscription ? subscription.toJSON() : subscription;
    return this.call<PushRegistration>("POST", "/v1/push/subscriptions", body);
  }

  /** Forgets the subscription with this endpoint (fine when already gone). */
  async unregisterPush(endpoint: string): Promise<void> {
    await this.call("DELETE", "/v1/push/subscriptions", { endpoint });
  }

  // ------------------------------------------------------------ transport

  /** One request; with `auth`, a 401 token_expired is refreshed and retried once. */
  async call<T>(method: string, path: string, body?: unknown, auth = true): Promise<T> {
    let token = auth ? await this.accessToken() : undefined;
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { accept: "application/json" };
      if (body !== undefined) headers["content-type"] = "application/json";
      if (token) headers.authorization = `Bearer ${token}`;
      if (CLOSE_REST_CONNECTIONS) headers.connection = "close";
      const response = await this.fetchImpl(this.baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (response.ok) {
        if (response.status === 204) return undefined as T;
        return (await response.json()) as T;
      }
      const error = await errorOf(response);
      if (auth && attempt === 0 && error.status === 401 && error.code === "token_expired") {
        token = await this.accessToken(true);
        continue;
      }
      throw error;
    }
  }

  /** A request built by `init` with the bearer token; a 401 token_expired is refreshed and retried once. */
  private async authorized(path: string, init: (headers: Record<string, string>) => RequestInit): Promise<Response> {
    let token = await this.accessToken();
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { authorization: `Bearer ${token}` };
      if (CLOSE_REST_CONNECTIONS) headers.connection = "close";
      const response = await this.fetchImpl(this.baseUrl + path, init(headers));
      if (response.ok) return response;
      const error = await errorOf(response);
      if (attempt === 0 && error.status === 401 && error.code === "token_expired") {
        token = await this.accessToken(true);
        continue;
      }
      throw error;
    }
  }

  private store(pair: TokenPair | null): void {
    this.pair = pair;
    this.onTokens?.(pair);
  }
}

function seg(value: string): string {
  return encodeURIComponent(value);
}

async function errorOf(response: Response): Promise<ApiError> {
  let code = "http_error";
  let message = response.statusText;
  try {
    const body = (await response.json()) as { error?: { code?: string; message?: string } };
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch {
    // not JSON: keep the status text
  }
  const retry = Number(response.headers.get("retry-after"));
  if (response.status === 413) return new FileTooLarge(code, message);
  return new ApiError(response.status, code, message, Number.isFinite(retry) && retry > 0 ? retry : undefined);
}
