/**
 * Roomcast's web chat app. Plain DOM and the SDK, no framework (see build.mjs).
 * The session (token pair) lives in sessionStorage, so a reload keeps you logged in;
 * every joined room is subscribed, and the SDK resumes them with `since` after any
 * reconnect, so the user only sees the connection badge change.
 */
import {
  RoomcastHttp,
  RoomcastSocket,
  type HistoryItem,
  type ListedMember,
  type ListedRoom,
  type Message,
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

interface Shown {
  seq: number;
  sender: { id: string; username: string; display_name?: string };
  content: string;
  to?: string | null;
  edited?: boolean;
  pending?: boolean;
}

interface RoomView {
  room: ListedRoom;
  messages: Map<number, Shown>;
  unread: number;
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
  const composer = h("form", { class: "composer", "aria-label": "Write a message" }, to, input, send);
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
      h("aside", { "aria-label": "People" }, h("h2", {}, "Online"), presence, receipts),
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
        const button = h("button", { type: "button", "aria-current": v.room.id === active ? "true" : "false" }, h("span", {}, label), badge);
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
      { "data-testid": "message-item", "data-seq": String(m.seq), class: [m.to ? "private" : "", m.pending ? "pending" : ""].join(" ").trim() || undefined },
      h("span", { class: "who" }, name(m.sender)),
      privateTo ? h("span", { class: "muted" }, `(private to ${privateTo}) `) : null,
      h("span", { "data-testid": "message-text" }, m.content),
      m.edited ? h("span", { class: "muted" }, " (edited)") : null,
      m.pending ? h("span", { class: "muted" }, " sending…") : null,
    );
    if (own && !m.pending) {
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

  function renderMessages(keepBottom = true): void {
    const v = active ? views.get(active) : undefined;
    if (!v) return;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const previousHeight = list.scrollHeight;
    const sorted = [...v.messages.values()].sort((a, b) => a.seq - b.seq);
    list.replaceChildren(...sorted.map((m) => messageEl(v, m)));
    if (keepBottom && (atBottom || sorted.length <= PAGE)) list.scrollTop = list.scrollHeight;
    else if (!keepBottom) list.scrollTop = list.scrollHeight - previousHeight;
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
    to.replaceChildren(
      h("option", { value: "" }, "Everyone"),
      ...v.members.filter((m) => m.user_id !== me.id).map((m) => h("option", { value: m.user_id }, `Only ${m.username}`)),
    );
  }

  function showError(error: unknown): void {
    navError.textContent = (error as Error).message;
  }

  // ---- rooms
  async function addRoom(room: ListedRoom, unread = 0): Promise<RoomView> {
    let v = views.get(room.id);
    if (!v) {
      v = { room, messages: new Map(), unread, oldest: null, loaded: false, members: [], online: new Map(), typing: new Map(), reads: new Map() };
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
    title.textContent = v.room.visibility === "direct" ? dmName(v) : v.room.name;
    invite.textContent = v.room.invite_code ? `Invite: ${v.room.id}:${v.room.invite_code}` : "";
    input.disabled = false;
    send.disabled = false;
    if (!v.loaded) {
      const page = await http.messages(id, { limit: PAGE });
      for (const item of page.items) addHistory(v, item);
      v.oldest = page.next_before;
      v.loaded = true;
    }
    v.unread = 0;
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
      v.messages.set(item.seq, { seq: item.seq, sender: item.sender, content: item.body.content, to: item.to, edited: Boolean(item.edited_at) });
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
    v.messages.set(m.seq, { seq: m.seq, sender: m.sender, content: m.body.content, to: m.to });
    for (const [seq, shown] of v.messages) {
      if (shown.pending && seq < 0 && m.client_id && pendingIds.get(seq) === m.client_id) v.messages.delete(seq);
    }
    if (m.room === active) {
      renderMessages();
      renderSide();
      markRead(v);
    } else if (m.sender.id !== me.id && !m.replayed) {
      v.unread++;
      renderRooms();
    }
  });
  socket.on("edit", (e) => {
    const shown = views.get(e.room)?.messages.get(e.target_seq);
    if (!shown) return;
    shown.content = e.body.content;
    shown.edited = true;
    if (e.room === active) renderMessages();
  });
  socket.on("delete", (d) => {
    views.get(d.room)?.messages.delete(d.target_seq);
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
    pendingIds.set(key, clientId);
    v.messages.set(key, { seq: Number.MAX_SAFE_INTEGER + key, sender: me, content: text, to: to.value || null, pending: true });
    renderMessages();
    socket
      .send(v.room.id, text, { to: to.value || undefined, clientId })
      .catch(showError)
      .finally(() => {
        v.messages.delete(key);
        pendingIds.delete(key);
        if (active === v.room.id) renderMessages();
      });
  });
  input.addEventListener("input", () => active && socket.typing(active));
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
    for (const room of page.items) await addRoom(room, room.unread ?? 0);
    renderRooms();
    const first = page.items[0];
    if (first) await openRoom(first.id);
  } catch (error) {
    showLogin((error as Error).message);
  }
}

if (http.tokens) void startChat();
else showLogin();
