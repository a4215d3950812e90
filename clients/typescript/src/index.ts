/** @roomcast/client: the Roomcast chat SDK for browsers and Node >= 20. */
export { RoomcastHttp, jwtExpiryMs, type HttpOptions } from "./http.js";
export {
  RoomcastSocket,
  newClientId,
  wsUrl,
  type Ack,
  type Gap,
  type Message,
  type Reaction,
  type SendOptions,
  type SocketEvents,
  type SocketOptions,
  type Status,
  type Subscribed,
  type TokenCallback,
} from "./socket.js";
export { fileOf, textOf } from "./body.js";
export { backoffCap, fullJitter, reconnectDelay, type BackoffOptions } from "./backoff.js";
export {
  ApiError,
  ConnectionClosed,
  FileTooLarge,
  ModerationCode,
  RequestRejected,
  SendUnconfirmed,
  SessionEnded,
} from "./errors.js";
export type * from "./types.js";
