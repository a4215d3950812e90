/**
 * RoomcastSocket: one logical connection over several gateway URLs that survives
 * gateway restarts, network changes and token expiry without losing or doubling a
 * message. The same guarantees as the Python SDK (docs/client.md):
 *
 * - reconnect: the next URL at once, then exponential backoff with full jitter per failed
 *   round; the browser's `offline`/`online` events pause and restart the loop at once;
 * - resume: every room is re-subscribed with `since=<last seq held>` after each `ready`;
 * - exactly-once sends: a send keeps its `client_id` and is re-sent after a reconnect;
 *   a send older than the resend window (below the stream's duplicate window) is looked
 *   for in its room's resume and re-sent only if missing (SendUnconfirmed if the room
 *   cannot be replayed that far);
 * - gaps: a frame whose `prev` is ahead of the last seq held is repaired from history
 *   (or by a resume with `since` when history does not hold the range yet);
 * - tokens: a callback gives tokens; 4001 asks it for a forced refresh once, a second
 *   refusal or a dead refresh token ends the session (no retry loop).
 */
import { reconnectDelay } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { ConnectionClosed, RequestRejected, SendUnconfirmed, SessionEnded } from "./errors.js";
import { jwtExpiryMs, type RoomcastHttp } from "./http.js";
import type {
  AckFrame,
  DeleteFrame,
  EditFrame,
  ErrorFrame,
  EventFrame,
  HistoryItem,
  MessageFrame,
  PresenceFrame,
  ReactionFrame,
  ReadFrame,
  ServerFrame,
  TypingFrame,
  UserRef,
} from "./types.js";

export type Status = "connecting" | "online" | "reconnecting" | "offline" | "closed";

/** A message frame, and whether it came from a resume, a replay or a gap repair. */
export interface Message extends MessageFrame {
  replayed: boolean;
}

/** A reaction frame, and whether it came from a resume or a replay. */
export interface Reaction extends ReactionFrame {
  replayed: boolean;
}

/** What `send` and `sendFile` take besides the room and the body. */
export interface SendOptions {
  /** A private message to this member. */
  to?: string;
  /** Your own client_id (a UUID), to make your own retries idempotent too. */
  clientId?: string;
  /** The seq of a message of the same room: this one is a reply in its thread. */
  replyTo?: number;
}

export interface Gap {
  room: string;
  /** The last seq held, the `prev` that arrived, and the frame's own seq. */
  last: number;
  prev: number;
  seq: number;
  /** How it was repaired. */
  via: "history" | "resume";
}

export interface Subscribed {
  room: string;
  seq: number;
  since: number | undefined;
  truncated: boolean;
  resumed: boolean;
}

export interface Ack {
  clientId: string;
  id: string;
  seq: number;
  duplicate: boolean;
}

export interface SocketEvents extends Record<string, unknown> {
  status: Status;
  ready: UserRef;
  message: Message;
  edit: EditFrame;
  delete: DeleteFrame;
  /** An emoji added or removed on a message (live, or replayed by a resume). */
  reaction: Reaction;
  read: ReadFrame;
  typing: TypingFrame;
  presence: PresenceFrame;
  /** Member events: member_joined, member_left, member_removed, role_changed, ... */
  event: EventFrame;
  subscribed: Subscribed;
  unsubscribed: { room: string; reason: string | undefined };
  gap: Gap;
  /** An error frame that names no pending command (shown to the user at most). */
  error: ErrorFrame;
  /** The session ended for good (SessionEnded, or ConnectionClosed). */
  closed: Error;
}

export type TokenCallback = (request: { forceRefresh: boolean }) => string | Promise<string>;

export interface SocketOptions {
  /** Gateway base URLs (http(s):// or ws(s)://); `/v1/ws` is appended when missing. */
  urls: string | string[];
  /** A fixed token, or a callback (e.g. `({forceRefresh}) => http.accessToken(forceRefresh)`). */
  token: string | TokenCallback;
  /** REST client used to repair gaps from history. */
  http?: RoomcastHttp;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  readyTimeoutMs?: number;
  resendWindowMs?: number;
  /** A WebSocket implementation (default: the platform's). */
  WebSocket?: typeof WebSocket;
  /** Where `online`/`offline` events come from (default: `window` in a browser). */
  networkEvents?: EventTarget | null;
}

// The first failed round waits up to 250 ms, doubling per failed round up to 10 s: a
// restarting gateway is back within seconds, a dead region should not be hammered.
const DEFAULT_BACKOFF_INITIAL_MS = 250;
const DEFAULT_BACKOFF_MAX_MS = 10_000;
// Open + auth -> ready. The gateway verifies the JWT locally; 10 s covers a loaded one.
const DEFAULT_READY_TIMEOUT_MS = 10_000;
// See the Python SDK's DEFAULT_RESEND_WINDOW: the stream's duplicate window is 120 s;
// 90 s leaves room for the publish timeout, buffered frames and clock drift.
const DEFAULT_RESEND_WINDOW_MS = 90_000;
// After 4008 (rate limited / too many sockets) wait at least this long.
const RATE_LIMITED_DELAY_MS = 2_000;
// Renew the socket's token this long before `exp` (at most a fifth of its remaining life).
const REAUTH_LEAD_MS = 30_000;
// Pages of history read to repair one gap (100 items each) before falling back to a resume.
const MAX_REPAIR_PAGES = 10;

// After an error event, wait this long for the close event before treating the socket as
// closed (a close normally follows at once).
const ERROR_CLOSE_GRACE_MS = 1_000;

const CLOSE_NORMAL = 1000;
const CLOSE_TOO_LARGE = 1009;
const CLOSE_UNAUTHENTICATED = 4001;
const CLOSE_FORBIDDEN = 4003;
const CLOSE_RATE_LIMITED = 4008;
// Closes after which reconnecting cannot help.
const FATAL_CLOSES = new Set([CLOSE_FORBIDDEN, CLOSE_TOO_LARGE]);
// "Not now" errors: a send stays pending and is re-sent after the reconnect that follows.
const RESEND_CODES = new Set(["gateway_restarting"]);
// Retried on the same connection after a backoff, with the same client_id.
const RETRY_CODES = new Set(["rate_limited", "unavailable"]);

type Chained =
  | MessageFrame
  | EditFrame
  | DeleteFrame
  | ReactionFrame
  | { type: "skip"; room: string; seq: number; prev: number };
type CommandKind = "send" | "edit" | "delete" | "react" | "unreact";
// Commands whose stored frame names our client_id in the room's replay (a message, a
// reaction): past the resend window they wait for the resume instead of going out again.
const CHAINED_KINDS: ReadonlySet<CommandKind> = new Set(["send", "react", "unreact"]);

interface Waiter<T> {
  resolve: (value: T) => void;
  reject: (error: Error) => void;
}

class RoomState {
  /** The seq of the last chained frame seen (undefined until subscribed). */
  last: number | undefined;
  sentSince: number | undefined;
  /** Frames up to this seq are replays (the head when a `since` subscribe began). */
  replayUntil = 0;
  /** The next frame's prev is not checked (after a truncated replay). */
  unchecked = false;
  confirmed = false;
  inFlight = false;
  held = 0;
  heldTruncated = false;
  /** Frames that arrived while a gap is repaired, handled after it. */
  buffer: Chained[] | null = null;
  waiters: Waiter<Subscribed>[] = [];
  constructor(
    readonly room: string,
    last: number | undefined,
  ) {
    this.last = last;
  }
}

class Pending {
  transmitted = false;
  firstSent: number | undefined;
  held = false;
  stored: { id: string; seq: number } | undefined;
  retries = 0;
  constructor(
    readonly clientId: string,
    readonly frame: string,
    readonly room: string,
    readonly kind: CommandKind,
    readonly waiter: Waiter<Ack>,
  ) {}
  markSent(): void {
    this.transmitted = true;
    this.firstSent ??= Date.now();
  }
}

/** A random UUID, also outside secure contexts (where crypto.randomUUID is missing). */
export function newClientId(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function wsUrl(url: string): string {
  let u = url.replace(/^http(s?):/, "ws$1:").replace(/\/$/, "");
  if (!u.endsWith("/v1/ws")) u += "/v1/ws";
  return u;
}

export class RoomcastSocket extends Emitter<SocketEvents> {
  readonly urls: string[];
  /** The `user` of the last `ready`. */
  user: UserRef | null = null;
  status: Status = "connecting";
  /** Counters for tests and dashboards. */
  readonly stats = { connects: 0, reconnects: 0, resent: 0, duplicateAcks: 0, gaps: 0, confirmedByResume: 0 };

  private readonly options: Required<
    Pick<SocketOptions, "backoffInitialMs" | "backoffMaxMs" | "readyTimeoutMs" | "resendWindowMs">
  > &
    SocketOptions;
  private readonly WS: typeof WebSocket;
  private index = 0;
  private ws: WebSocket | null = null;
  private live = false;
  private closedError: Error | null = null;
  private offline = false;
  private wake: (() => void) | null = null;
  private readonly rooms = new Map<string, RoomState>();
  private readonly pending = new Map<string, Pending>();
  private readonly presenceWaiters = new Map<string, Waiter<PresenceFrame>[]>();
  private firstReady: Waiter<UserRef> | null = null;
  private tokenInUse = "";
  private reauthTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly detachNetwork: () => void;

  constructor(options: SocketOptions) {
    super();
    const urls = typeof options.urls === "string" ? [options.urls] : options.urls;
    if (urls.length === 0) throw new Error("at least one gateway URL is required");
    this.urls = urls.map(wsUrl);
    this.options = {
      backoffInitialMs: DEFAULT_BACKOFF_INITIAL_MS,
      backoffMaxMs: DEFAULT_BACKOFF_MAX_MS,
      readyTimeoutMs: DEFAULT_READY_TIMEOUT_MS,
      resendWindowMs: DEFAULT_RESEND_WINDOW_MS,
      ...options,
    };
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: typeof WebSocket }).WebSocket;
    if (!WS) throw new Error("no WebSocket: pass one (Node 20: --experimental-websocket, or the ws package)");
    this.WS = WS;
    const target =
      options.networkEvents !== undefined
        ? options.networkEvents
        : typeof window !== "undefined" && typeof window.addEventListener === "function"
          ? window
          : null;
    const onOffline = (): void => this.goOffline();
    const onOnline = (): void => this.goOnline();
    target?.addEventListener("offline", onOffline);
    target?.addEventListener("online", onOnline);
    this.detachNetwork = () => {
      target?.removeEventListener("offline", onOffline);
      target?.removeEventListener("online", onOnline);
    };
    if (typeof navigator !== "undefined" && navigator.onLine === false && target) this.offline = true;
  }

  // ---------------------------------------------------------------- public API

  /** Connect; resolves with the user at the first `ready` (rejects if the session ends first). */
  start(): Promise<UserRef> {
    const promise = new Promise<UserRef>((resolve, reject) => (this.firstReady = { resolve, reject }));
    void this.loop();
    return promise;
  }

  /** Subscribe to a room (with `since`: replay what followed it). Resumes are automatic. */
  subscribe(room: string, options: { since?: number } = {}): Promise<Subscribed> {
    this.ensureOpen();
    let state = this.rooms.get(room);
    if (!state) {
      state = new RoomState(room, options.since);
      this.rooms.set(room, state);
    } else if (options.since !== undefined) {
      state.last = options.since;
    }
    const promise = new Promise<Subscribed>((resolve, reject) => state.waiters.push({ resolve, reject }));
    if (this.live) this.sendSubscribe(state);
    return promise;
  }

  unsubscribe(room: string): void {
    const state = this.rooms.get(room);
    if (!state) return;
    this.rooms.delete(room);
    this.failHeld(room);
    for (const w of state.waiters) w.reject(new RequestRejected("unsubscribed", "unsubscribed", room));
    this.transmit({ type: "unsubscribe", room });
  }

  /**
   * Send a text message (privately `to` a member, a reply in the thread of `replyTo`);
   * resolves at its ack (stored durably, exactly once across reconnects).
   */
  send(room: string, content: string, options: SendOptions = {}): Promise<Ack> {
    return this.sendBody(room, { type: "text", content }, options);
  }

  /**
   * Share a file uploaded into the room (`RoomcastHttp.uploadFile`'s `id`), with an
   * optional caption; acked like a send. Refused with `file_not_found` when the file is
   * not your upload into this room.
   */
  sendFile(room: string, fileId: string, options: SendOptions & { caption?: string } = {}): Promise<Ack> {
    const body: Record<string, unknown> = { type: "file", file_id: fileId };
    if (options.caption) body.caption = options.caption;
    return this.sendBody(room, body, options);
  }

  private sendBody(room: string, body: Record<string, unknown>, options: SendOptions): Promise<Ack> {
    const clientId = options.clientId ?? newClientId();
    const frame: Record<string, unknown> = { type: "send", room, client_id: clientId, body };
    if (options.to) frame.to = options.to;
    if (options.replyTo !== undefined) frame.reply_to = options.replyTo;
    return this.command(clientId, frame, room, "send");
  }

  /**
   * Add `emoji` to message `seq`; resolves at its ack with the reaction's own seq. Kept
   * and re-sent with the same client_id across reconnects: stored exactly once.
   */
  react(room: string, seq: number, emoji: string, clientId = newClientId()): Promise<Ack> {
    return this.command(clientId, { type: "react", room, seq, emoji, client_id: clientId }, room, "react");
  }

  /** Remove your `emoji` from message `seq` (acked and exactly once, like `react`). */
  unreact(room: string, seq: number, emoji: string, clientId = newClientId()): Promise<Ack> {
    return this.command(clientId, { type: "unreact", room, seq, emoji, client_id: clientId }, room, "unreact");
  }

  edit(room: string, seq: number, content: string, clientId = newClientId()): Promise<Ack> {
    const frame = { type: "edit", room, seq, client_id: clientId, body: { type: "text", content } };
    return this.command(clientId, frame, room, "edit");
  }

  delete(room: string, seq: number, clientId = newClientId()): Promise<Ack> {
    return this.command(clientId, { type: "delete", room, seq, client_id: clientId }, room, "delete");
  }

  /** "I am typing" (the gateway drops extras beyond one per 2 s: call it per keystroke). */
  typing(room: string): void {
    this.transmit({ type: "typing", room });
  }

  /** Mark the room read up to `seq` (coalesced by the gateway). */
  read(room: string, seq: number): void {
    this.transmit({ type: "read", room, seq });
  }

  /** Who is online in a subscribed room; then watch `presence` events. */
  presence(room: string): Promise<PresenceFrame> {
    this.ensureOpen();
    const promise = new Promise<PresenceFrame>((resolve, reject) => {
      const list = this.presenceWaiters.get(room) ?? [];
      list.push({ resolve, reject });
      this.presenceWaiters.set(room, list);
    });
    this.transmit({ type: "presence", room });
    return promise;
  }

  /** The last seq held for a room (what a resume sends as `since`). */
  lastSeq(room: string): number | undefined {
    return this.rooms.get(room)?.last;
  }

  /** Sends not acked yet (they are re-sent after a reconnect). */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** End the session: pending sends reject with ConnectionClosed(1000). */
  close(): void {
    if (this.closedError) return;
    this.end(new ConnectionClosed(CLOSE_NORMAL, "closed by client"));
  }

  // ------------------------------------------------------------ connection loop

  private async loop(): Promise<void> {
    let failures = 0;
    let rejections = 0;
    while (!this.closedError) {
      if (this.offline) {
        this.setStatus("offline");
        await this.sleep(Infinity);
        continue;
      }
      const url = this.urls[this.index]!;
      let token: string;
      try {
        token = await this.fetchToken(rejections > 0);
      } catch (error) {
        if (error instanceof SessionEnded) return this.end(error);
        failures++;
        await this.sleep(reconnectDelay(failures * this.urls.length, this.urls.length, this.backoff()));
        continue;
      }
      if (this.closedError) return;
      const result = await this.connectOnce(url, token);
      if (this.closedError) return;
      this.live = false;
      this.ws = null;
      this.clearReauth();
      for (const state of this.rooms.values()) {
        state.inFlight = false;
        state.buffer = null;
      }
      for (const [room, list] of this.presenceWaiters) {
        for (const w of list) w.reject(new ConnectionClosed(result.code, result.reason));
        this.presenceWaiters.delete(room);
      }
      if (FATAL_CLOSES.has(result.code)) return this.end(new ConnectionClosed(result.code, result.reason));
      if (result.code === CLOSE_UNAUTHENTICATED) rejections++;
      if (rejections >= 2) {
        return this.end(new SessionEnded(result.authError ?? "unauthenticated", "the gateway refused a fresh token"));
      }
      this.index = (this.index + 1) % this.urls.length;
      let delay: number;
      if (result.wasReady) {
        failures = 0;
        // At once, jittered over one initial backoff so a restarting gateway's clients
        // do not all land on the next one in the same millisecond.
        delay = Math.random() * this.options.backoffInitialMs;
      } else {
        failures++;
        delay = reconnectDelay(failures, this.urls.length, this.backoff());
      }
      if (result.code === CLOSE_RATE_LIMITED) delay = Math.max(delay, RATE_LIMITED_DELAY_MS);
      if (!this.offline) this.setStatus("reconnecting");
      await this.sleep(delay);
    }
  }

  private backoff(): { initialMs: number; maxMs: number } {
    return { initialMs: this.options.backoffInitialMs, maxMs: this.options.backoffMaxMs };
  }

  private async fetchToken(forceRefresh: boolean): Promise<string> {
    const token = this.options.token;
    return typeof token === "string" ? token : await token({ forceRefresh });
  }

  /** One connection: resolves when it closes (or fails to reach `ready`). */
  private connectOnce(
    url: string,
    token: string,
  ): Promise<{ wasReady: boolean; code: number; reason: string; authError?: string }> {
    return new Promise((resolve) => {
      let wasReady = false;
      let authError: string | undefined;
      let ws: WebSocket;
      try {
        ws = new this.WS(url);
      } catch (error) {
        resolve({ wasReady: false, code: 1006, reason: String(error) });
        return;
      }
      this.ws = ws;
      this.tokenInUse = token;
      const timer = setTimeout(() => ws.close(CLOSE_NORMAL, "no ready in time"), this.options.readyTimeoutMs);
      ws.addEventListener("open", () => ws.send(JSON.stringify({ type: "auth", token })));
      ws.addEventListener("message", (event: MessageEvent) => {
        if (typeof event.data !== "string") return;
        let frame: ServerFrame;
        try {
          frame = JSON.parse(event.data) as ServerFrame;
        } catch {
          return;
        }
        if (!wasReady) {
          if (frame.type === "ready") {
            wasReady = true;
            clearTimeout(timer);
            this.onReady(ws, frame.user);
          } else if (frame.type === "error") {
            authError = frame.code;
          }
          return;
        }
        if (this.ws === ws) this.route(frame);
      });
      let settled = false;
      const finish = (code: number, reason: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ wasReady, code, reason, authError });
      };
      ws.addEventListener("close", (event: CloseEvent) => finish(event.code, event.reason));
      // Some implementations report a refused handshake with an error and no close.
      ws.addEventListener("error", () => setTimeout(() => finish(1006, "connection failed"), ERROR_CLOSE_GRACE_MS));
    });
  }

  private goOffline(): void {
    if (this.closedError) return;
    this.offline = true;
    this.setStatus("offline");
    this.ws?.close(CLOSE_NORMAL, "offline");
  }

  private goOnline(): void {
    if (!this.offline) return;
    this.offline = false;
    if (!this.closedError) this.setStatus("reconnecting");
    this.wake?.(); // skip the rest of any backoff: the network is back
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = Number.isFinite(ms) ? setTimeout(done, ms) : undefined;
      const wake = (): void => done();
      this.wake = wake;
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
    });
  }

  private setStatus(status: Status): void {
    if (this.status === status || this.status === "closed") return;
    this.status = status;
    this.emit("status", status);
  }

  private end(error: Error): void {
    if (this.closedError) return;
    this.closedError = error;
    this.clearReauth();
    this.detachNetwork();
    const ws = this.ws;
    this.ws = null;
    this.live = false;
    ws?.close(CLOSE_NORMAL);
    for (const p of this.pending.values()) p.waiter.reject(error);
    this.pending.clear();
    for (const state of this.rooms.values()) for (const w of state.waiters) w.reject(error);
    for (const list of this.presenceWaiters.values()) for (const w of list) w.reject(error);
    this.presenceWaiters.clear();
    this.firstReady?.reject(error);
    this.firstReady = null;
    this.setStatus("closed");
    this.status = "closed";
    this.emit("closed", error);
    this.wake?.();
  }

  private ensureOpen(): void {
    if (this.closedError) throw this.closedError;
  }

  private transmit(frame: Record<string, unknown>): boolean {
    return this.transmitRaw(JSON.stringify(frame));
  }

  private transmitRaw(text: string): boolean {
    const ws = this.ws;
    if (!this.live || !ws || ws.readyState !== ws.OPEN) return false;
    ws.send(text);
    return true;
  }

  // ------------------------------------------------------------- state restore

  private onReady(ws: WebSocket, user: UserRef): void {
    this.user = user;
    this.live = true;
    this.stats.connects++;
    if (this.stats.connects > 1) this.stats.reconnects++;
    for (const state of this.rooms.values()) {
      state.held = 0;
      this.sendSubscribe(state);
    }
    this.restorePending();
    this.setStatus("online");
    this.emit("ready", user);
    this.firstReady?.resolve(user);
    this.firstReady = null;
    this.scheduleReauth(ws);
  }

  /**
   * Re-send every unacked frame, except sends and reactions the server may no longer
   * deduplicate: those wait for their room's resume. Found there (our user, our client_id): acked
   * without a resend; not found: re-sent; not checkable: SendUnconfirmed.
   */
  private restorePending(): void {
    const now = Date.now();
    for (const p of [...this.pending.values()]) {
      p.held = false;
      if (p.stored) {
        this.confirmStored(p);
        continue;
      }
      if (CHAINED_KINDS.has(p.kind) && p.firstSent !== undefined && now - p.firstSent > this.options.resendWindowMs) {
        const state = this.rooms.get(p.room);
        if (!state || state.last === undefined) this.unconfirmed(p);
        else {
          p.held = true;
          state.held++;
        }
        continue;
      }
      if (p.transmitted) this.stats.resent++;
      if (this.transmitRaw(p.frame)) p.markSent();
    }
  }

  private releaseHeld(state: RoomState): void {
    state.held = 0;
    for (const p of [...this.pending.values()]) {
      if (!p.held || p.room !== state.room) continue;
      p.held = false;
      if (state.heldTruncated) {
        this.unconfirmed(p);
        continue;
      }
      p.firstSent = undefined; // a new duplicate window starts with this transmission
      this.stats.resent++;
      if (this.transmitRaw(p.frame)) p.markSent();
    }
  }

  private sendSubscribe(state: RoomState): void {
    const frame: Record<string, unknown> = { type: "subscribe", room: state.room };
    if (state.last !== undefined) frame.since = state.last;
    state.sentSince = state.last;
    state.inFlight = this.transmit(frame);
  }

  private scheduleReauth(ws: WebSocket): void {
    this.clearReauth();
    if (typeof this.options.token === "string") return;
    const exp = jwtExpiryMs(this.tokenInUse);
    if (exp === undefined) return;
    const remaining = exp - Date.now();
    if (remaining <= 0) return;
    const delay = remaining - Math.min(REAUTH_LEAD_MS, remaining / 5);
    this.reauthTimer = setTimeout(() => void this.reauth(ws), delay);
  }

  private async reauth(ws: WebSocket): Promise<void> {
    let token: string;
    try {
      token = await this.fetchToken(false);
    } catch (error) {
      if (error instanceof SessionEnded) this.end(error);
      return; // keep the current token; 4001 + reconnect if it really ends
    }
    if (ws !== this.ws || token === this.tokenInUse) return;
    this.tokenInUse = token;
    if (this.transmit({ type: "auth", token })) this.scheduleReauth(ws);
  }

  private clearReauth(): void {
    clearTimeout(this.reauthTimer);
    this.reauthTimer = undefined;
  }

  // ---------------------------------------------------------------- commands

  private command(
    clientId: string,
    frame: Record<string, unknown>,
    room: string,
    kind: CommandKind,
  ): Promise<Ack> {
    this.ensureOpen();
    if (this.pending.has(clientId)) return Promise.reject(new Error(`client_id ${clientId} is already pending`));
    return new Promise<Ack>((resolve, reject) => {
      const p = new Pending(clientId, JSON.stringify(frame), room, kind, { resolve, reject });
      this.pending.set(clientId, p);
      // Not connected: it goes out after the next ready (restorePending).
      if (this.transmitRaw(p.frame)) p.markSent();
    });
  }

  private confirmStored(p: Pending): void {
    this.dropPending(p);
    this.stats.duplicateAcks++;
    this.stats.confirmedByResume++;
    p.waiter.resolve({ clientId: p.clientId, id: p.stored!.id, seq: p.stored!.seq, duplicate: true });
  }

  private unconfirmed(p: Pending): void {
    this.dropPending(p);
    p.waiter.reject(new SendUnconfirmed(p.clientId));
  }

  private dropPending(p: Pending): void {
    if (this.pending.get(p.clientId) === p) this.pending.delete(p.clientId);
    if (p.held) {
      p.held = false;
      const state = this.rooms.get(p.room);
      if (state && state.held > 0) state.held--;
    }
  }

  private failHeld(room: string): void {
    for (const p of [...this.pending.values()]) if (p.held && p.room === room) this.unconfirmed(p);
  }

  // ---------------------------------------------------------------- routing

  private route(frame: ServerFrame): void {
    switch (frame.type) {
      case "message":
      case "edit":
      case "delete":
      case "reaction":
      case "skip":
        return this.onChained(frame);
      case "ack":
        return this.onAck(frame);
      case "subscribed":
        return this.onSubscribed(frame.room, frame.seq ?? 0, frame.truncated === true);
      case "unsubscribed":
        return this.onUnsubscribed(frame.room, frame.reason);
      case "read":
        return this.emit("read", frame);
      case "typing":
        return this.emit("typing", frame);
      case "event":
        return this.emit("event", frame);
      case "presence":
        return this.onPresence(frame);
      case "error":
        return this.onError(frame);
      case "ready":
        if (frame.user) this.user = frame.user; // a renewed token was accepted
        return;
      default:
        return; // pong and frame types added later
    }
  }

  private onChained(frame: Chained): void {
    const state = this.rooms.get(frame.room);
    if (state?.buffer) {
      state.buffer.push(frame); // a gap repair is running: keep the order
      return;
    }
    if ((frame.type === "message" || frame.type === "reaction") && this.pending.size > 0) this.sawStored(frame);
    let replayed = false;
    if (state) {
      const last = state.last;
      if (last !== undefined) {
        if (frame.seq <= last) return; // already held
        if (frame.prev > last && !state.unchecked) {
          this.repairGap(state, frame);
          return;
        }
      }
      state.unchecked = false;
      state.last = frame.seq;
      replayed = frame.seq <= state.replayUntil;
      if (state.held && frame.seq >= state.replayUntil) this.releaseHeld(state);
    }
    this.deliver(frame, replayed);
  }

  private deliver(frame: Chained, replayed: boolean): void {
    if (frame.type === "message") this.emit("message", { ...frame, replayed });
    else if (frame.type === "edit") this.emit("edit", frame);
    else if (frame.type === "delete") this.emit("delete", frame);
    else if (frame.type === "reaction") this.emit("reaction", { ...frame, replayed });
  }

  /**
   * Our own message (or reaction) carrying a pending send's (or react's) client_id: it is
   * stored, so after a reconnect it is acked from the stream instead of sent again.
   */
  private sawStored(frame: MessageFrame | ReactionFrame): void {
    const p = this.pending.get(frame.client_id);
    const kind = frame.type === "message" ? "send" : frame.op === "add" ? "react" : "unreact";
    if (!p || p.kind !== kind || p.room !== frame.room) return;
    if (!this.user || frame.sender?.id !== this.user.id) return;
    p.stored = { id: frame.type === "message" ? frame.id : String(frame.seq), seq: frame.seq };
    if (p.held) this.confirmStored(p);
  }

  /**
   * `frame.prev` is ahead of the last seq held: fetch (last, prev] from history and
   * deliver it first; frames arriving meanwhile wait in order. History that does not
   * hold the range (not written yet, or no http client): resume with `since=last`.
   */
  private repairGap(state: RoomState, frame: Chained): void {
    const last = state.last!;
    state.buffer = [frame];
    this.stats.gaps++;
    const ws = this.ws;
    void this.fetchRange(state.room, last, frame.prev).then(
      (items) => {
        if (this.ws !== ws || this.rooms.get(state.room) !== state || state.buffer === null) return;
        const buffered = state.buffer;
        state.buffer = null;
        if (!items || !items.some((item) => item.seq === frame.prev)) {
          // Not (yet) in history: the stream replays it exactly.
          this.emit("gap", { room: state.room, last, prev: frame.prev, seq: frame.seq, via: "resume" });
          this.sendSubscribe(state);
          return;
        }
        this.emit("gap", { room: state.room, last, prev: frame.prev, seq: frame.seq, via: "history" });
        for (const item of items) {
          if (item.deleted || !item.body) continue;
          this.deliver({ ...historyMessage(item), prev: 0 }, true);
        }
        state.last = frame.prev;
        for (const f of buffered) this.onChained(f);
      },
      () => undefined,
    );
  }

  private async fetchRange(room: string, last: number, prev: number): Promise<HistoryItem[] | null> {
    const http = this.options.http;
    if (!http) return null;
    const found: HistoryItem[] = [];
    let before: number | null = prev + 1;
    try {
      for (let page = 0; page < MAX_REPAIR_PAGES && before !== null; page++) {
        const answer: { items: HistoryItem[]; next_before: number | null } = await http.messages(room, {
          before,
          limit: 100,
        });
        for (const item of answer.items) if (item.seq > last && item.seq <= prev) found.push(item);
        if (answer.items.some((item) => item.seq <= last)) break;
        before = answer.next_before;
      }
    } catch {
      return null;
    }
    return found.sort((a, b) => a.seq - b.seq);
  }

  private onAck(frame: AckFrame): void {
    const p = this.pending.get(frame.client_id);
    if (!p) return;
    this.dropPending(p);
    if (frame.duplicate) this.stats.duplicateAcks++;
    p.waiter.resolve({ clientId: p.clientId, id: frame.id, seq: frame.seq, duplicate: frame.duplicate === true });
  }

  private onSubscribed(room: string, seq: number, truncated: boolean): void {
    const state = this.rooms.get(room);
    if (!state) return;
    const since = state.sentSince;
    state.inFlight = false;
    if (state.last === undefined) state.last = seq;
    if (since !== undefined) state.replayUntil = seq;
    if (truncated) state.unchecked = true;
    if (state.held) {
      state.heldTruncated = truncated;
      if (state.last !== undefined && state.last >= seq) this.releaseHeld(state);
    }
    const item: Subscribed = { room, seq, since, truncated, resumed: state.confirmed };
    state.confirmed = true;
    const waiters = state.waiters;
    state.waiters = [];
    for (const w of waiters) w.resolve(item);
    this.emit("subscribed", item);
  }

  private onUnsubscribed(room: string, reason: string | undefined): void {
    this.failHeld(room);
    const state = this.rooms.get(room);
    this.rooms.delete(room);
    for (const w of state?.waiters ?? []) w.reject(new RequestRejected(reason ?? "unsubscribed", "unsubscribed", room));
    this.emit("unsubscribed", { room, reason });
  }

  private onPresence(frame: PresenceFrame): void {
    if (frame.online !== undefined) {
      const list = this.presenceWaiters.get(frame.room);
      const waiter = list?.shift();
      if (list && list.length === 0) this.presenceWaiters.delete(frame.room);
      if (waiter) waiter.resolve(frame);
    }
    this.emit("presence", frame);
  }

  private onError(frame: ErrorFrame): void {
    const ref = frame.ref;
    if (ref !== undefined) {
      const p = this.pending.get(ref);
      if (p) {
        if (RETRY_CODES.has(frame.code)) {
          const delay = Math.random() * Math.min(this.options.backoffMaxMs, 500 * 2 ** p.retries++);
          const ws = this.ws;
          setTimeout(() => {
            if (this.ws === ws && this.pending.get(ref) === p && this.transmitRaw(p.frame)) this.stats.resent++;
          }, delay);
        } else if (!RESEND_CODES.has(frame.code)) {
          this.dropPending(p);
          p.waiter.reject(new RequestRejected(frame.code, frame.message, ref, frame.retry_after));
        }
        return;
      }
      const state = this.rooms.get(ref);
      if (state && state.inFlight && frame.code !== "not_subscribed") {
        state.inFlight = false;
        if (RESEND_CODES.has(frame.code)) return;
        if (RETRY_CODES.has(frame.code) && state.confirmed) {
          setTimeout(() => this.rooms.get(ref) === state && this.sendSubscribe(state), 1000);
          return;
        }
        this.failHeld(ref);
        this.rooms.delete(ref);
        const error = new RequestRejected(frame.code, frame.message, ref);
        for (const w of state.waiters) w.reject(error);
        if (state.confirmed) this.emit("unsubscribed", { room: ref, reason: frame.code });
        return;
      }
      const presence = this.presenceWaiters.get(ref);
      if (presence && frame.code === "not_subscribed") {
        this.presenceWaiters.delete(ref);
        for (const w of presence) w.reject(new RequestRejected(frame.code, frame.message, ref));
        return;
      }
    }
    this.emit("error", frame);
  }
}

function historyMessage(item: HistoryItem): MessageFrame {
  return {
    type: "message",
    seq: item.seq,
    prev: 0,
    id: item.id,
    room: item.room,
    sender: item.sender,
    body: item.body!,
    sent_at: item.sent_at,
    to: item.to ?? null,
    ...(item.reply_to !== undefined ? { reply_to: item.reply_to } : {}),
    ...(item.mentions !== undefined ? { mentions: item.mentions } : {}),
    client_id: "",
  };
}
