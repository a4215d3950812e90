/**
 * Wire types of Roomcast: WebSocket frames (docs/protocol.md) and REST bodies
 * (docs/api.md). The REST types are checked against JSON Schemas exported from the
 * server's pydantic models (schema/*.json, test/schema.test.ts), so they cannot drift.
 * Fields may be added by the server, never removed or retyped; ignore unknown ones.
 */

// ------------------------------------------------------------------ REST

export type RoleName = "member" | "admin" | "owner";
export type Visibility = "public" | "private" | "direct";

export interface User {
  id: string;
  username: string;
  display_name: string;
  avatar_url: string | null;
  created_at: string;
}

export interface PrivateUser extends User {
  email: string | null;
}

export interface UserEnvelope {
  user: User;
}

export interface TokenPair {
  access_token: string;
  refresh_token: string;
  token_type?: string;
  expires_in: number;
  user: PrivateUser;
}

export interface RegisterRequest {
  username: string;
  password: string;
  email?: string | null;
  display_name?: string | null;
}

export interface LoginRequest {
  username: string;
  password: string;
}

export interface Room {
  id: string;
  name: string;
  topic: string;
  visibility: Visibility;
  owner_id: string | null;
  member_count: number;
  created_at: string;
  updated_at: string;
  my_role: RoleName | null;
  invite_code: string | null;
  direct_user_ids: string[] | null;
  /** One send per this many seconds per member (0: off); owners and admins are exempt. */
  slow_mode_seconds?: number;
  /** Messages older than this many days leave history (0: kept). */
  retention_days?: number;
}

/** A room of `GET /v1/rooms`; `unread` and `last_message` only with `scope=joined`. */
export interface ListedRoom extends Room {
  unread?: number | null;
  /** scope=joined only: unread messages that mention you; null when history is unavailable. */
  mentions?: number | null;
  last_message?: Record<string, unknown> | null;
}

export interface RoomEnvelope {
  room: Room;
}

export interface RoomPage {
  items: ListedRoom[];
  next_cursor: string | null;
  /** scope=joined only: the caller's unread notifications (at most 999); null when the notifier is unavailable. */
  unread_notifications?: number | null;
}

export interface Member {
  user_id: string;
  role: RoleName;
  joined_at: string;
}

export interface ListedMember extends Member {
  username: string | null;
  display_name: string | null;
}

export interface MemberPage {
  items: ListedMember[];
  next_cursor: string | null;
}

export interface JoinResult {
  room: Room;
  member: Member;
}

export interface InviteCode {
  invite_code: string;
}

/** A message's reactions in history: one emoji, how many people, and whether you are one. */
export interface ReactionCount {
  emoji: string;
  count: number;
  /** The reader added this emoji. */
  me: boolean;
}

/**
 * A history item (a page of `messages()` or `replies()`): a message, or a tombstone
 * (`deleted: true`). Optional fields are absent when empty.
 */
export interface HistoryItem {
  id: string;
  seq: number;
  room: string;
  sender: Sender;
  body?: MessageBody;
  sent_at: string;
  to?: string | null;
  edited_at?: string | null;
  deleted?: boolean;
  deleted_at?: string;
  /** The seq of the message this one replies to (its thread's parent). */
  reply_to?: number;
  /** The parent was deleted (the reply still shows). */
  reply_to_deleted?: boolean;
  /** Ids of the room members it mentions. */
  mentions?: string[];
  /** On a parent: its replies not deleted, and when the newest was sent. */
  reply_count?: number;
  last_reply_at?: string;
  /** Aggregated once per (user, emoji), most used first. */
  reactions?: ReactionCount[];
}

export interface MessagePage {
  items: Record<string, unknown>[];
  next_before: number | null;
}

/** An uploaded file's metadata (`POST /v1/rooms/{id}/files`, and a file message's `body.file`). */
export interface FileInfo {
  /** 24 hex characters: what a file send's `file_id` and `downloadFile` take. */
  id: string;
  name: string;
  size: number;
  content_type: string;
  /** Hex SHA-256 of the stored bytes. */
  sha256: string;
}

export interface FileUploaded {
  file: FileInfo;
}

export interface CreateRoomBody {
  name: string;
  visibility: "public" | "private";
  topic?: string;
}

export interface ErrorDetail {
  code: string;
  message: string;
}

export interface ErrorEnvelope {
  error: ErrorDetail;
}

// ------------------------------------------------- REST: notifications

/**
 * The inbox and Web Push rows (docs/notifications.md). The notifier builds them by hand,
 * not from pydantic models, so there is no exported schema: test/notifications.test.ts
 * checks these shapes against the real service instead.
 */
export type NotificationKind = "dm" | "mention" | "reply";

export interface NotificationSender {
  id: string;
  username: string;
  display_name?: string | null;
  avatar_url?: string | null;
}

export interface Notification {
  /** `"<seq>:<user>"`: stable, one per user and message. */
  id: string;
  kind: NotificationKind;
  room: string;
  /** The message's stream sequence: what `markNotificationsRead(upTo)` takes. */
  seq: number;
  sender: NotificationSender;
  /** The message's first 140 characters. */
  preview: string;
  sent_at: string;
  /** A private message (`to`) addressed to the caller. */
  private: boolean;
  read: boolean;
}

export interface NotificationPage {
  /** Newest first. */
  items: Notification[];
  /** Pass as `cursor` for older ones; null on the last page. */
  next_cursor: string | null;
  /** Notifications after the read position, capped at 999. */
  unread: number;
}

export interface InboxState {
  read_up_to: number;
  unread: number;
}

/** A browser's `PushSubscription.toJSON()`. */
export interface PushSubscriptionBody {
  endpoint: string;
  expirationTime?: number | null;
  keys: { p256dh: string; auth: string };
}

export interface PushRegistration {
  id: string;
  endpoint: string;
}

// --------------------------------------------------------- frames: shared

export interface TextBody {
  type: "text";
  content: string;
}

/** What a send shares: a file the sender uploaded into the room (docs/files.md). */
export interface FileSendBody {
  type: "file";
  file_id: string;
  caption?: string;
}

/** A file message's stored body: the file's metadata, and the caption if any. */
export interface FileBody {
  type: "file";
  file: FileInfo;
  caption?: string;
}

/** A message's body: text, or a shared file. */
export type MessageBody = TextBody | FileBody;

export interface Sender {
  id: string;
  username: string;
  display_name: string;
  avatar_url?: string | null;
}

export interface UserRef {
  id: string;
  username: string;
  display_name?: string;
}

// ---------------------------------------------------- frames: client -> gateway

export type ClientFrame =
  | { type: "auth"; token: string }
  | { type: "subscribe"; room: string; since?: number }
  | { type: "unsubscribe"; room: string }
  | { type: "send"; room: string; client_id: string; body: TextBody | FileSendBody; to?: string; reply_to?: number }
  | { type: "edit"; room: string; seq: number; client_id: string; body: TextBody }
  | { type: "delete"; room: string; seq: number; client_id: string }
  | { type: "react" | "unreact"; room: string; seq: number; emoji: string; client_id: string }
  | { type: "read"; room: string; seq: number }
  | { type: "typing"; room: string }
  | { type: "presence"; room: string }
  | { type: "ping" };

// ---------------------------------------------------- frames: gateway -> client

export interface ReadyFrame {
  type: "ready";
  user: UserRef;
}

export interface SubscribedFrame {
  type: "subscribed";
  room: string;
  seq: number;
  truncated?: boolean;
}

export interface UnsubscribedFrame {
  type: "unsubscribed";
  room: string;
  reason?: string;
}

export interface MessageFrame {
  type: "message";
  seq: number;
  prev: number;
  id: string;
  room: string;
  sender: Sender;
  body: MessageBody;
  sent_at: string;
  to?: string | null;
  /** The seq of the message this one replies to. */
  reply_to?: number | null;
  /** Ids of the room members it mentions (`@username` resolved when sent). */
  mentions?: string[];
  client_id: string;
  kind?: "message";
}

export interface SkipFrame {
  type: "skip";
  room: string;
  seq: number;
  prev: number;
}

export interface EditFrame {
  type: "edit";
  seq: number;
  prev: number;
  room: string;
  target_seq: number;
  sender: Sender;
  body: TextBody;
  edited_at: string;
  sent_at: string;
  client_id: string;
}

export interface DeleteFrame {
  type: "delete";
  seq: number;
  prev: number;
  room: string;
  target_seq: number;
  sender: Sender;
  deleted_at: string;
  sent_at: string;
  client_id: string;
}

/** An emoji added (`op: "add"`) to or removed from message `target_seq`; part of the chain. */
export interface ReactionFrame {
  type: "reaction";
  seq: number;
  prev: number;
  room: string;
  target_seq: number;
  sender: Sender;
  emoji: string;
  op: "add" | "remove";
  sent_at: string;
  client_id: string;
  kind?: "reaction";
}

export interface ReadFrame {
  type: "read";
  room: string;
  user: UserRef;
  seq: number;
}

export interface AckFrame {
  type: "ack";
  client_id: string;
  id: string;
  seq: number;
  duplicate?: boolean;
}

export type MemberEventName =
  | "member_joined"
  | "member_left"
  | "member_removed"
  | "role_changed"
  | "room_updated"
  | "room_deleted";

export interface EventFrame {
  type: "event";
  room: string;
  event: MemberEventName;
  user_id?: string;
  role?: RoleName;
  actor_id?: string;
  at_ms?: number;
  room_info?: Partial<Room>;
}

export interface TypingFrame {
  type: "typing";
  room: string;
  user: UserRef;
}

/** The answer to a presence query (`online`) or a change (`user` + `status`). */
export interface PresenceFrame {
  type: "presence";
  room: string;
  online?: UserRef[];
  count?: number;
  truncated?: boolean;
  user?: UserRef;
  status?: "online" | "offline";
}

export interface ErrorFrame {
  type: "error";
  code: string;
  message: string;
  ref?: string;
  /** `slow_mode`: seconds until the room accepts this member's next send. */
  retry_after?: number;
}

export interface PongFrame {
  type: "pong";
}

export type ServerFrame =
  | ReadyFrame
  | SubscribedFrame
  | UnsubscribedFrame
  | MessageFrame
  | SkipFrame
  | EditFrame
  | DeleteFrame
  | ReactionFrame
  | ReadFrame
  | AckFrame
  | EventFrame
  | TypingFrame
  | PresenceFrame
  | ErrorFrame
  | PongFrame;
