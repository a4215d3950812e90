/** Errors the SDK raises; branch on `code` (stable), show `message`. */

/**
 * Moderation codes (docs/moderation.md): `banned` is a REST error (403, joining a room
 * you are banned from); `muted` and `slow_mode` refuse a socket command
 * ({@link RequestRejected}), `slow_mode` with `retryAfter`.
 */
export const ModerationCode = {
  banned: "banned",
  muted: "muted",
  slowMode: "slow_mode",
} as const;
export type ModerationCode = (typeof ModerationCode)[keyof typeof ModerationCode];

/** A REST call answered with an error envelope. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Seconds to wait before retrying (429, from Retry-After). */
    readonly retryAfter?: number,
  ) {
    super(`${status} ${code}: ${message}`);
    this.name = "ApiError";
  }
}

/** An upload larger than the server's file limit (413 `file_too_large`; default 25 MiB). */
export class FileTooLarge extends ApiError {
  constructor(code: string, message: string) {
    super(413, code, message);
    this.name = "FileTooLarge";
  }
}

/**
 * The session cannot be renewed: the refresh token is invalid, expired or reused, or
 * the gateway refused a freshly fetched token. Log in again; the SDK does not retry.
 */
export class SessionEnded extends Error {
  constructor(readonly code: string, message: string) {
    super(`${code}: ${message}`);
    this.name = "SessionEnded";
  }
}

/**
 * The gateway refused a command (an `error` frame whose `ref` names it). Not retried by
 * the SDK: `muted` lasts until the mute ends; `slow_mode` says when to try again in
 * `retryAfter` (seconds).
 */
export class RequestRejected extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly ref?: string,
    /** `slow_mode`: seconds until the room accepts this member's next send. */
    readonly retryAfter?: number,
  ) {
    super(`${code}: ${message}`);
    this.name = "RequestRejected";
  }
}

/**
 * A send that was never acked and is too old to re-send safely (past the stream's
 * duplicate window), and whose room could not be replayed far enough to find it. It may
 * or may not be stored.
 */
export class SendUnconfirmed extends RequestRejected {
  constructor(clientId: string) {
    super("unconfirmed", "no ack, and too old to re-send safely; it may or may not be stored", clientId);
    this.name = "SendUnconfirmed";
  }
}

/** The socket ended for good (closed by the app, or a close reconnecting cannot fix). */
export class ConnectionClosed extends Error {
  constructor(readonly code: number, readonly reason: string) {
    super(`connection closed: ${code} ${reason}`.trim());
    this.name = "ConnectionClosed";
  }
}
