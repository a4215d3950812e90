/**
 * Roomcast's web chat app. Plain DOM and the SDK, no framework (see build.mjs).
 * The session (token pair) lives in sessionStorage, so a reload keeps you logged in;
 * every joined room is subscribed, and the SDK resumes them with `since` after any
 * reconnect, so the user only sees the connection badge change.
 */
import {
  RoomcastHttp,
  RoomcastSocket,
  fileOf,
  textOf,
  type FileInfo,
  type HistoryItem,
  type ListedMember,
  type ListedRoom,
  type Message,
  type Reaction,
  type Status,
  type TokenPair,
  type UserRef,
} from "../../typescript/src/index.js";
import { notificationsPanel } from "./notifications.js";
import { disablePush, enablePush, pushState } from "./push.js";

const TOKENS_KEY = "roomcast.tokens";
const GATEWAYS_KEY = "roomcast.gateways";
// Typing notices are shown this long after the last one (the protocol says 3-5 s).
const TYPING_SHOW_MS = 4_000;
// History page size for the first view of a room and each scroll-back step.
const PAGE = 50;
// The one-click reaction of each message (any other emoji arrives as a chip).
const QUICK_EMOJI = "👍";
// A downloaded file's object URL is kept this long: enough for the browser to save it.
const OBJECT_URL_TTL_MS = 60_000;

/** A message's reactions: per emoji the count, whether you are in it, and who was seen adding it live. */
type Reactions = Map<string, { count: number; me: boolean; users: Set<string> }>;

interface Shown {
  seq: number;
  sender: { id: string; username: string; display_name?: string };
  content: string;
  to?: string | null;
  edited?: boolean;
  pending?: boolean;
  file?: FileInfo;
  replyTo?: number;
  replyToDeleted?: boolean;
  replyCount?: number;
  reactions?: Reactions;
  mentionsMe?: boolean;
}

function reactionsFrom(list: { emoji: string; count: number; me: boolean }[] | undefined): Reactions {
  return new Map((list ?? []).map((r) => [r.emoji, { count: r.count, me: r.me, users: new Set<string>() }]));
}

/** Applies a live reaction once per (user, emoji): history's counts do not name users, yours are `me`. */
function applyReaction(reactions: Reactions, r: Reaction, myId: string): void {
  const entry = reactions.get(r.emoji) ?? { count: 0, me: false, users: new Set<string>() };
  const mine = r.sender.id === myId;
  const has = mine ? entry.me : entry.users.has(r.sender.id);
  if (r.op === "add" && !has) {
    entry.count++;
    if (mine) entry.me = true;
    else entry.users.add(r.sender.id);
  } else if (r.op === "remove") {
    if (mine ? entry.me : has || entry.count > (entry.me ? 1 : 0)) entry.count--;
    if (mine) entry.me = false;
    else entry.users.delete(r.sender.id);
  }
  if (entry.count > 0) reactions.set(r.emoji, entry);
  else reactions.delete(r.emoji);
}

function sizeText(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

interface RoomView {
  room: ListedRoom;
  messages: Map<number, Shown>;
  unread: number;
  /** Unread messages that mention you (the joined list's `mentions`, then live). */
  mentions: number;
  oldest: number | null; // next_before for scroll-back (null: start reached)
  loaded: boolean;
  members: ListedMember[];
  online: Map<string, UserRef>;
  typing: Map<string, { name: string; until: number }>;
  reads: Map<string, { username: string; seq: number }>;
}

const root = document.getElementById("app")!;

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | boolean | undefined> = {},
  ...children: (Node | string | null | undefined | false)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child) el.append(child);
  return el;
}

/** Gateways for the socket: `?gateways=a,b` (kept for the tab), else this page's origin. */
function gatewayUrls(): string[] {
  const fromQuery = new URLSearchParams(location.search).get("gateways");
  if (fromQuery) sessionStorage.setItem(GATEWAYS_KEY, fromQuery);
  const list = (fromQuery ?? sessionStorage.getItem(GATEWAYS_KEY) ?? "").split(",").filter(Boolean);
  const own = location.origin;
  return [own, ...list.filter((u) => u.replace(/\/$/, "") !== own)];
}

function storedTokens(): TokenPair | undefined {
  const raw = sessionStorage.getItem(TOKENS_KEY);
  return raw ? (JSON.parse(raw) as TokenPair) : undefined;
}

const http = new RoomcastHttp({
  tokens: storedTokens(),
  onTokens: (pair) =>
    pair ? sessionStorage.setItem(TOKENS_KEY, JSON.stringify(pair)) : sessionStorage.removeItem(TOKENS_KEY),
});

// ------------------------------------------------------------------ login

function showLogin(message = ""): void {
  root.replaceChildren();
  const username = h("input", { id: "username", "data-testid": "login-username", autocomplete: "username", required: true });
  const password = h("input", {
    id: "password",
    type: "password",
    "data-testid": "login-password",
    autocomplete: "current-password",
    required: true,
  });
  const error = h("p", { class: "error", role: "alert" }, message);
  const form = h(
    "form",
    { class: "login", "aria-label": "Log in" },
    h("h1", {}, "Roomcast"),
    h("label", { for: "username" }, "Username", username),
    h("label", { for: "password" }, "Password", password),
    error,
    h(
      "div",
      { class: "row" },
      h("button", { type: "submit", "data-testid": "login-submit" }, "Log in"),
      h("button", { type: "button", "data-testid": "register-submit" }, "Register"),
    ),
  );
  const attempt = async (register: boolean): Promise<void> => {
    error.textContent = "";
    try {
      if (register) await http.register(username.value.trim(), password.value);
      await http.login(username.value.trim(), password.value);
      void startChat();
    } catch (e) {
      error.textContent = (e as Error).message;
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void attempt(false);
  });
  form.querySelector('[data-testid="register-submit"]')!.addEventListener("click", () => {
    if (form.reportValidity()) void attempt(true);
  });
  root.append(form);
  root.removeAttribute("aria-busy");
  username.focus();
}

// ------------------------------------------------------------------- chat

async function startChat(): Promise<void> {
  const me = http.user!;
  const views = new Map<string, RoomView>();
  let active: string | null = null;
  let editing: number | null = null;
  let replying: number | null = null; // the seq the next send replies to
  let threadOf: number | null = null; // the parent whose thread is open

  const socket = new RoomcastSocket({
    urls: gatewayUrls(),
    token: ({ forceRefresh }) => http.accessToken(forceRefresh),
    http,
  });

  // ---- layout
  const status = h("span", { id: "connection-status", "data-testid": "connection-status", role: "status" }, "Connecting…");
  const banner = h("div", { class: "banner", role: "alert", hidden: true }, "Connection lost. Reconnecting…");
  const logout = h("button", { type: "button", "data-testid": "logout" }, "Log out");
  // Web Push: shown only where the browser supports it; a click asks for permission.
  const pushToggle = h("button", { type: "button", class: "link", "data-testid": "push-toggle", hidden: true }, "Enable push notifications");
  const showPush = (state: string): void => {
    pushToggle.hidden = state === "unsupported";
    pushToggle.dataset.state = state;
    pushToggle.textContent = state === "on" ? "Disable push notifications" : state === "denied" ? "Push notifications blocked" : "Enable push notifications";
    pushToggle.toggleAttribute("disabled", state === "denied");
  };
  void pushState().then(showPush, () => showPush("unsupported"));
  pushToggle.addEventListener("click", () => {
    const next = pushToggle.dataset.state === "on" ? disablePush(http).then(() => "off") : enablePush(http);
    void next.then(showPush).catch(showError);
  });
  // A notification may name a room not shown yet (a DM someone else opened): add it first.
  const inbox = notificationsPanel(http, h, (id) => {
    const ready = views.has(id) ? Promise.resolve() : http.getRoom(id).then((room) => addRoom(room));
    void ready.then(() => openRoom(id)).catch(showError);
  });
  const roomList = h("ul", { class: "rooms", "data-testid": "room-list", "aria-label": "Rooms" });
  const createName = h("input", { id: "room-name", "data-testid": "room-create-name", required: true, maxlength: "64" });
  const createForm = h(
    "form",
    { "aria-label": "Create a room" },
    h("label", { for: "room-name" }, "New room"),
    createName,
    h("button", { type: "submit", "data-testid": "room-create-submit" }, "Create"),
  );
  const joinInput = h("input", { id: "join-code", "data-testid": "join-code-input", required: true, placeholder: "room id or id:code" });
  const joinForm = h(
    "form",
    { "aria-label": "Join a room" },
    h("label", { for: "join-code" }, "Join with an invite code"),
    joinInput,
    h("button", { type: "submit", "data-testid": "join-code-submit" }, "Join"),
  );
  const dmInput = h("input", { id: "dm-user", "data-testid": "dm-username", required: true });
  const dmForm = h(
    "form",
    { "aria-label": "Direct message" },
    h("label", { for: "dm-user" }, "Message a user"),
    dmInput,
    h("button", { type: "submit", "data-testid": "dm-submit" }, "Open DM"),
  );
  const navError = h("p", { class: "error", role: "alert" });
  const title = h("h2", { id: "room-title" }, "Pick a room");
  const invite = h("p", { class: "muted", "data-testid": "invite-code" });
  const list = h("ol", { class: "messages", "data-testid": "message-list", role: "log", "aria-labelledby": "room-title" });
  const typing = h("div", { class: "typing muted", "data-testid": "typing-indicator", "aria-live": "polite" });
  const input = h("input", {
    id: "message-input",
    type: "text",
    "data-testid": "message-input",
    "aria-label": "Message",
    autocomplete: "off",
    maxlength: "4000",
    disabled: true,
  });
  const to = h("select", { id: "message-to", "data-testid": "message-to", "aria-label": "Send to" });
  const send = h("button", { type: "submit", "data-testid": "message-send", disabled: true }, "Send");
  const fileInput = h("input", { id: "file-input", type: "file", class: "file-input", "data-testid": "file-input", disabled: true });
  const attach = h("label", { for: "file-input", class: "attach" }, "Attach a file", fileInput);
  const replyText = h("span", { "data-testid": "reply-target" });
  const replyCancel = h("button", { type: "button", class: "link", "data-testid": "reply-cancel" }, "Cancel reply");
  const replyBanner = h("div", { class: "reply-banner muted", "data-testid": "reply-banner", hidden: true }, replyText, " ", replyCancel);
  const composer = h("form", { class: "composer", "aria-label": "Write a message" }, replyBanner, to, input, send, attach);
  const threadTitle = h("h2", { id: "thread-title" }, "Thread");
  const threadParent = h("p", { "data-testid": "thread-parent" });
  const threadList = h("ol", { class: "thread", "data-testid": "thread-list", "aria-labelledby": "thread-title" });
  const threadClose = h("button", { type: "button", class: "link", "data-testid": "thread-close" }, "Close thread");
  const threadView = h(
    "section",
    { class: "thread-view", "data-testid": "thread-view", "aria-labelledby": "thread-title", hidden: true },
    threadTitle,
    threadParent,
    threadList,
    threadClose,
  );
  const presence = h("ul", { class: "presence", "data-testid": "presence-list", "aria-label": "Online" });
  const receipts = h("p", { class: "muted", "data-testid": "read-receipts", "aria-live": "polite" });

  root.replaceChildren(
    h("header", {}, h("h1", {}, "Roomcast"), h("span", { class: "muted" }, me.username), inbox.element, pushToggle, status, logout),
    banner,
    h(
      "main",
      {},
      h("nav", { "aria-label": "Rooms and actions" }, h("h2", {}, "Rooms"), roomList, createForm, joinForm, dmForm, navError),
      h("section", { class: "chat", "aria-labelledby": "room-title" }, h("div", {}, title, invite), list, typing, composer),
      h("aside", { "aria-label": "People and thread" }, threadView, h("h2", {}, "Online"), presence, receipts),
    ),
  );
  root.removeAttribute("aria-busy");

  // ---- rendering
  const name = (u: { username: string; display_name?: string }) => u.display_name || u.username;

  function renderRooms(): void {
    roomList.replaceChildren(
      ...[...views.values()].map((v) => {
        const label = v.room.visibility === "direct" ? dmName(v) : v.room.name;
        const badge =
          v.unread > 0
            ? h("span", { class: "badge", "data-testid": "unread-badge", "aria-label": `${v.unread} unread` }, v.unread > 999 ? "999+" : String(v.unread))
            : null;
        const mentioned =
          v.mentions > 0
            ? h("span", { class: "badge mention", "data-testid": "mention-badge", "aria-label": `${v.mentions} unread mentions` }, `@${v.mentions > 999 ? "999+" : v.mentions}`)
            : null;
        const button = h("button", { type: "button", "aria-current": v.room.id === active ? "true" : "false" }, h("span", {}, label), h("span", {}, mentioned, badge));
        button.addEventListener("click", () => void openRoom(v.room.id));
        return h("li", { "data-testid": "room-item", "data-room-id": v.room.id }, button);
      }),
    );
  }

  function dmName(v: RoomView): string {
    const other = v.members.find((m) => m.user_id !== me.id);
    return other ? `@${other.username}` : "Direct message";
  }

  function messageEl(v: RoomView, m: Shown): HTMLLIElement {
    const own = m.sender.id === me.id;
    const privateTo = m.to ? v.members.find((x) => x.user_id === m.to)?.username ?? "someone" : null;
    const li = h(
      "li",
      { "data-testid": "message-item", "data-seq": String(m.seq), class: [m.to ? "private" : "", m.pending ? "pending" : "", m.mentionsMe ? "mention" : ""].join(" ").trim() || undefined },
      m.replyTo !== undefined ? replyRef(v, m) : null,
      h("span", { class: "who" }, name(m.sender)),
      privateTo ? h("span", { class: "muted" }, `(private to ${privateTo}) `) : null,
      m.file ? fileLink(m.file) : null,
      m.file && m.content ? " " : null,
      h("span", { "data-testid": "message-text" }, m.content),
      m.edited ? h("span", { class: "muted" }, " (edited)") : null,
      m.pending ? h("span", { class: "muted" }, " sending…") : null,
    );
    if (m.pending) return li;
    li.append(reactionChips(v, m));
    const reply = h("button", { type: "button", class: "link", "data-testid": "message-reply", "aria-label": `Reply to ${m.content || m.file?.name || "message"}` }, "Reply");
    reply.addEventListener("click", () => startReply(m));
    li.append(" ", reply);
    if (!m.reactions?.get(QUICK_EMOJI)?.me) {
      const quick = h("button", { type: "button", class: "link", "data-testid": "message-react", "aria-label": `React ${QUICK_EMOJI}` }, `+${QUICK_EMOJI}`);
      quick.addEventListener("click", () => void socket.react(v.room.id, m.seq, QUICK_EMOJI).catch(showError));
      li.append(quick);
    }
    if (m.replyCount) {
      const thread = h("button", { type: "button", class: "link", "data-testid": "message-thread" }, `Thread (${m.replyCount})`);
      thread.addEventListener("click", () => void openThread(v, m.seq));
      li.append(thread);
    }
    if (own && !m.file) {
      const edit = h("button", { type: "button", class: "link", "data-testid": "message-edit", "aria-label": `Edit message ${m.content}` }, "Edit");
      const del = h("button", { type: "button", class: "link", "data-testid": "message-delete", "aria-label": `Delete message ${m.content}` }, "Delete");
      edit.addEventListener("click", () => {
        editing = m.seq;
        input.value = m.content;
        send.textContent = "Save";
        input.focus();
      });
      del.addEventListener("click", () => void socket.delete(v.room.id, m.seq).catch(showError));
      li.append(" ", edit, del);
    }
    return li;
  }

  function replyRef(v: RoomView, m: Shown): HTMLElement {
    const parent = v.messages.get(m.replyTo!);
    const what = m.replyToDeleted ? "a deleted message" : parent ? `${name(parent.sender)}: ${parent.content || parent.file?.name || ""}` : `message ${m.replyTo}`;
    const ref = h("button", { type: "button", class: "link reply-ref", "data-testid": "reply-ref" }, `↪ ${what}`);
    ref.addEventListener("click", () => void openThread(v, m.replyTo!));
    return h("div", {}, ref);
  }

  /** A download link: the file is fetched with the bearer token and saved from an object URL. */
  function fileLink(file: FileInfo): HTMLElement {
    const link = h("a", { href: "#", class: "file", "data-testid": "file-link", "data-file-id": file.id }, `📎 ${file.name}`);
    link.addEventListener("click", (event) => {
      event.preventDefault();
      void http
        .downloadFile(file.id)
        .then((blob) => {
          const url = URL.createObjectURL(blob);
          const save = h("a", { href: url, download: file.name });
          document.body.append(save);
          save.click();
          save.remove();
          setTimeout(() => URL.revokeObjectURL(url), OBJECT_URL_TTL_MS);
        })
        .catch(showError);
    });
    return h("span", {}, link, h("span", { class: "muted" }, ` (${sizeText(file.size)})`));
  }

  function reactionChips(v: RoomView, m: Shown): HTMLElement {
    const chips = [...(m.reactions ?? new Map()).entries()].map(([emoji, r]) => {
      const chip = h(
        "button",
        { type: "button", class: "chip", "data-testid": "reaction-chip", "data-emoji": emoji, "aria-pressed": r.me ? "true" : "false", "aria-label": `${emoji} ${r.count}${r.me ? ", yours" : ""}` },
        `${emoji} ${r.count}`,
      );
      chip.addEventListener("click", () => {
        const done = r.me ? socket.unreact(v.room.id, m.seq, emoji) : socket.react(v.room.id, m.seq, emoji);
        void done.catch(showError);
      });
      return chip;
    });
    return h("span", { class: "reactions", "data-testid": "reactions" }, ...chips);
  }

  function startReply(m: Shown): void {
    replying = m.seq;
    editing = null;
    send.textContent = "Send";
    replyText.textContent = `Replying to ${name(m.sender)}: ${m.content || m.file?.name || ""}`;
    replyBanner.hidden = false;
    input.focus();
  }

  function stopReply(): void {
    replying = null;
    replyBanner.hidden = true;
  }
  replyCancel.addEventListener("click", stopReply);

  async function openThread(v: RoomView, seq: number): Promise<void> {
    threadOf = seq;
    threadView.hidden = false;
    threadList.replaceChildren();
    const page = await http.replies(v.room.id, seq, { limit: PAGE }).catch((e: unknown) => {
      showError(e);
      return { items: [] as HistoryItem[] };
    });
    for (const item of page.items) addHistory(v, item);
    renderThread();
  }

  function renderThread(): void {
    const v = active ? views.get(active) : undefined;
    if (!v || threadOf === null) return;
    const parent = v.messages.get(threadOf);
    threadParent.textContent = parent ? `${name(parent.sender)}: ${parent.content || parent.file?.name || ""}` : `Message ${threadOf}`;
    const replies = [...v.messages.values()].filter((m) => m.replyTo === threadOf && !m.pending).sort((a, b) => a.seq - b.seq);
    threadList.replaceChildren(
      ...replies.map((m) => h("li", { "data-testid": "thread-item", "data-seq": String(m.seq) }, h("span", { class: "who" }, name(m.sender)), m.content || m.file?.name || "")),
    );
  }
  threadClose.addEventListener("click", () => {
    threadOf = null;
    threadView.hidden = true;
  });

  function renderMessages(keepBottom = true): void {
    const v = active ? views.get(active) : undefined;
    if (!v) return;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const previousHeight = list.scrollHeight;
    const sorted = [...v.messages.values()].sort((a, b) => a.seq - b.seq);
    list.replaceChildren(...sorted.map((m) => messageEl(v, m)));
    if (keepBottom && (atBottom || sorted.length <= PAGE)) list.scrollTop = list.scrollHeight;
    else if (!keepBottom) list.scrollTop = list.scrollHeight - previousHeight;
    renderThread();
  }

  function renderSide(): void {
    const v = active ? views.get(active) : undefined;
    if (!v) return;
    presence.replaceChildren(...[...v.online.values()].map((u) => h("li", { "data-user-id": u.id }, name(u))));
    const now = Date.now();
    const typers = [...v.typing.values()].filter((t) => t.until > now).map((t) => t.name);
    typing.textContent = typers.length ? `${typers.join(", ")} ${typers.length > 1 ? "are" : "is"} typing…` : "";
    const newest = Math.max(0, ...[...v.messages.keys()]);
    const seen = [...v.reads.values()].filter((r) => r.seq >= newest && r.username !== me.username).map((r) => r.username);
    receipts.textContent = seen.length ? `Seen by ${seen.join(", ")}` : "";
    // The chosen recipient stays while the room does (a message arriving re-renders this).
    const keep = to.dataset.room === v.room.id ? to.value : "";
    to.replaceChildren(
      h("option", { value: "" }, "Everyone"),
      ...v.members.filter((m) => m.user_id !== me.id).map((m) => h("option", { value: m.user_id }, `Only ${m.username}`)),
    );
    if (Array.from(to.options).some((o) => o.value === keep)) to.value = keep;
    to.dataset.room = v.room.id;
  }

  function showError(error: unknown): void {
    navError.textContent = (error as Error).message;
  }

  // ---- rooms
  async function addRoom(room: ListedRoom, unread = 0, mentions = 0): Promise<RoomView> {
    let v = views.get(room.id);
    if (!v) {
      v = { room, messages: new Map(), unread, mentions, oldest: null, loaded: false, members: [], online: new Map(), typing: new Map(), reads: new Map() };
      views.set(room.id, v);
      const page = await http.members(room.id).catch(() => ({ items: [] as ListedMember[] }));
      v.members = page.items;
      renderRooms();
      // Resume from the newest message history knows: whatever history has not written
      // yet (it lags the stream a little) comes in the gateway's replay, so a message is
      // never missed between the history page and the live feed.
      const newest = room.last_message?.seq;
      await socket.subscribe(room.id, { since: typeof newest === "number" ? newest : 0 }).catch(showError);
    }
    return v;
  }

  async function openRoom(id: string): Promise<void> {
    const v = views.get(id);
    if (!v) return;
    active = id;
    editing = null;
    stopReply();
    threadOf = null;
    threadView.hidden = true;
    title.textContent = v.room.visibility === "direct" ? dmName(v) : v.room.name;
    invite.textContent = v.room.invite_code ? `Invite: ${v.room.id}:${v.room.invite_code}` : "";
    input.disabled = false;
    send.disabled = false;
    fileInput.disabled = false;
    if (!v.loaded) {
      const page = await http.messages(id, { limit: PAGE });
      for (const item of page.items) addHistory(v, item);
      v.oldest = page.next_before;
      v.loaded = true;
    }
    v.unread = 0;
    v.mentions = 0;
    renderRooms();
    renderMessages();
    markRead(v);
    socket
      .presence(id)
      .then((p) => {
        v.online = new Map((p.online ?? []).map((u) => [u.id, u]));
        renderSide();
      })
      .catch(() => undefined);
    renderSide();
  }

  function addHistory(v: RoomView, item: HistoryItem): void {
    if (item.deleted || !item.body) return;
    if (!v.messages.has(item.seq)) {
      v.messages.set(item.seq, {
        seq: item.seq,
        sender: item.sender,
        content: textOf(item.body),
        file: fileOf(item.body),
        to: item.to,
        edited: Boolean(item.edited_at),
        mentionsMe: item.mentions?.includes(me.id),
        replyTo: item.reply_to,
        replyToDeleted: item.reply_to_deleted,
        replyCount: item.reply_count,
        reactions: reactionsFrom(item.reactions),
      });
    }
  }

  function markRead(v: RoomView): void {
    const newest = Math.max(0, ...[...v.messages.keys()]);
    if (newest > 0 && document.visibilityState !== "hidden") socket.read(v.room.id, newest);
  }

  // Infinite scroll-back: near the top, load the next older page.
  let loadingOlder = false;
  list.addEventListener("scroll", () => {
    const v = active ? views.get(active) : undefined;
    if (!v || loadingOlder || v.oldest === null || list.scrollTop > 40) return;
    loadingOlder = true;
    void http
      .messages(v.room.id, { limit: PAGE, before: v.oldest })
      .then((page) => {
        for (const item of page.items) addHistory(v, item);
        v.oldest = page.next_before;
        if (active === v.room.id) renderMessages(false);
      })
      .finally(() => (loadingOlder = false));
  });

  // ---- socket events
  const statusText: Record<Status, string> = {
    connecting: "Connecting…",
    online: "Online",
    reconnecting: "Reconnecting…",
    offline: "Offline",
    closed: "Disconnected",
  };
  socket.on("status", (s) => {
    status.textContent = statusText[s];
    status.dataset.status = s;
    banner.hidden = s === "online" || s === "connecting";
    banner.textContent = s === "offline" ? "You are offline. Messages you send will go out when you are back." : "Connection lost. Reconnecting…";
  });
  socket.on("closed", (error) => {
    socket.close();
    inbox.stop();
    showLogin(`Session ended: ${error.message}`);
  });
  socket.on("message", (m: Message) => {
    const v = views.get(m.room);
    if (m.sender.id !== me.id && !m.replayed) inbox.poke();
    if (!v) return;
    const known = v.messages.get(m.seq);
    v.messages.set(m.seq, {
      ...known,
      seq: m.seq,
      sender: m.sender,
      content: textOf(m.body),
      file: fileOf(m.body),
      to: m.to,
      mentionsMe: m.mentions?.includes(me.id),
      replyTo: m.reply_to ?? undefined,
    });
    const parent = !known && m.reply_to ? v.messages.get(m.reply_to) : undefined;
    if (parent) parent.replyCount = (parent.replyCount ?? 0) + 1;
    for (const [seq, shown] of v.messages) {
      if (shown.pending && seq < 0 && m.client_id && pendingIds.get(seq) === m.client_id) v.messages.delete(seq);
    }
    if (m.room === active) {
      renderMessages();
      renderSide();
      markRead(v);
    } else if (m.sender.id !== me.id && !m.replayed) {
      v.unread++;
      if (m.mentions?.includes(me.id)) v.mentions++;
      renderRooms();
    }
  });
  socket.on("edit", (e) => {
    const shown = views.get(e.room)?.messages.get(e.target_seq);
    if (!shown) return;
    shown.content = textOf(e.body);
    shown.edited = true;
    if (e.room === active) renderMessages();
  });
  socket.on("reaction", (r) => {
    const shown = views.get(r.room)?.messages.get(r.target_seq);
    if (!shown) return; // not shown yet: history's counts include it when it loads
    shown.reactions ??= new Map();
    applyReaction(shown.reactions, r, me.id);
    if (r.room === active) renderMessages();
  });
  socket.on("delete", (d) => {
    const v = views.get(d.room);
    const gone = v?.messages.get(d.target_seq);
    v?.messages.delete(d.target_seq);
    // Its replies stay, marked as replies to a deleted message; its parent counts one less.
    for (const m of v?.messages.values() ?? []) if (m.replyTo === d.target_seq) m.replyToDeleted = true;
    const parent = gone?.replyTo !== undefined ? v?.messages.get(gone.replyTo) : undefined;
    if (parent?.replyCount) parent.replyCount--;
    if (d.room === active) renderMessages();
  });
  socket.on("typing", (t) => {
    const v = views.get(t.room);
    if (!v) return;
    v.typing.set(t.user.id, { name: name(t.user), until: Date.now() + TYPING_SHOW_MS });
    if (t.room === active) renderSide();
    setTimeout(() => t.room === active && renderSide(), TYPING_SHOW_MS + 50);
  });
  socket.on("presence", (p) => {
    const v = views.get(p.room);
    if (!v || !p.user) return;
    if (p.status === "online") v.online.set(p.user.id, p.user);
    else v.online.delete(p.user.id);
    if (p.room === active) renderSide();
  });
  socket.on("read", (r) => {
    const v = views.get(r.room);
    if (!v) return;
    v.reads.set(r.user.id, { username: r.user.username, seq: r.seq });
    if (r.room === active) renderSide();
  });
  socket.on("event", (e) => {
    const v = views.get(e.room);
    if (v && (e.event === "member_joined" || e.event === "member_left" || e.event === "member_removed")) {
      void http.members(e.room).then((page) => {
        v.members = page.items;
        if (e.room === active) renderSide();
      });
    }
  });
  socket.on("unsubscribed", ({ room }) => {
    views.delete(room);
    if (active === room) active = null;
    renderRooms();
  });

  // ---- actions
  let localSeq = 0; // pending messages are shown with negative keys until their ack
  const pendingIds = new Map<number, string>();
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const v = active ? views.get(active) : undefined;
    const text = input.value;
    if (!v || !text.trim()) return;
    input.value = "";
    if (editing !== null) {
      const seq = editing;
      editing = null;
      send.textContent = "Send";
      void socket.edit(v.room.id, seq, text).catch(showError);
      return;
    }
    const key = --localSeq;
    const clientId = crypto.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(16).slice(2)}`;
    const replyTo = replying ?? undefined;
    stopReply();
    pendingIds.set(key, clientId);
    v.messages.set(key, { seq: Number.MAX_SAFE_INTEGER + key, sender: me, content: text, to: to.value || null, pending: true });
    renderMessages();
    socket
      .send(v.room.id, text, { to: to.value || undefined, clientId, replyTo })
      .catch(showError)
      .finally(() => {
        v.messages.delete(key);
        pendingIds.delete(key);
        if (active === v.room.id) renderMessages();
      });
  });
  input.addEventListener("input", () => active && socket.typing(active));
  // A chosen file is uploaded into the room, then shared (as a reply when one is being written).
  fileInput.addEventListener("change", () => {
    const v = active ? views.get(active) : undefined;
    const file = fileInput.files?.[0];
    fileInput.value = "";
    if (!v || !file) return;
    const replyTo = replying ?? undefined;
    stopReply();
    void http
      .uploadFile(v.room.id, file)
      .then((info) => socket.sendFile(v.room.id, info.id, { to: to.value || undefined, replyTo }))
      .catch(showError);
  });
  createForm.addEventListener("submit", (event) => {
    event.preventDefault();
    void http
      .createRoom(createName.value.trim())
      .then(async (room) => {
        createName.value = "";
        await addRoom(room);
        await openRoom(room.id);
      })
      .catch(showError);
  });
  joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const [id, code] = joinInput.value.trim().split(":");
    void http
      .joinRoom(id!, code)
      .then(async ({ room }) => {
        joinInput.value = "";
        await addRoom(room);
        await openRoom(room.id);
      })
      .catch(showError);
  });
  dmForm.addEventListener("submit", (event) => {
    event.preventDefault();
    void http
      .findUser(dmInput.value.trim())
      .then((user) => http.openDm(user.id))
      .then(async (room) => {
        dmInput.value = "";
        await addRoom(room);
        await openRoom(room.id);
      })
      .catch(showError);
  });
  logout.addEventListener("click", () => {
    socket.close();
    inbox.stop();
    // The push subscription goes first, while the token still works.
    void disablePush(http)
      .then(() => http.logout())
      .finally(() => showLogin());
  });
  document.addEventListener("visibilitychange", () => {
    const v = active ? views.get(active) : undefined;
    if (v) markRead(v);
  });

  // ---- start
  try {
    await socket.start();
    const page = await http.listRooms("joined");
    for (const room of page.items) await addRoom(room, room.unread ?? 0, room.mentions ?? 0);
    renderRooms();
    const first = page.items[0];
    if (first) await openRoom(first.id);
  } catch (error) {
    showLogin((error as Error).message);
  }
}

if (http.tokens) void startChat();
else showLogin();
