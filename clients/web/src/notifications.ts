/**
 * The notifications panel: a bell with the unread count in the header, and a list of
 * the inbox (mentions, replies to my messages, DMs; docs/notifications.md) with "Mark
 * all read". The inbox is written by the notifier a moment after a message is stored,
 * and a DM room someone else just opened is not subscribed yet, so the panel asks the
 * server: on a timer, after a message from someone else, and whenever it is opened.
 */
import type { Notification as InboxItem, NotificationPage, RoomcastHttp } from "../../typescript/src/index.js";

// Poll the inbox this often while the page is visible: new DMs arrive in rooms the
// socket is not subscribed to yet; 6 requests a minute stay far below the inbox's rate
// limit (120 per user per minute).
const POLL_MS = 10_000;
// After a message from someone else, look again this long later: the notifier writes
// the notification a moment after the message is stored (its batch, ~100s of ms).
const AFTER_MESSAGE_MS = [1_000, 4_000];
// The server caps `unread` at 999; the badge says so.
const MAX_SHOWN_UNREAD = 999;

type H = <K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Record<string, string | boolean | undefined>,
  ...children: (Node | string | null | undefined | false)[]
) => HTMLElementTagNameMap[K];

const KIND_LABEL: Record<InboxItem["kind"], string> = { dm: "Direct message", mention: "Mentioned you", reply: "Replied to you" };

export interface NotificationsPanel {
  /** The bell button and the panel, for the header. */
  element: HTMLElement;
  /** Look at the inbox again now and shortly after (a message from someone else came). */
  poke(): void;
  /** Stops the timer (logout). */
  stop(): void;
}

export function notificationsPanel(http: RoomcastHttp, h: H, openRoom: (roomId: string) => void): NotificationsPanel {
  let page: NotificationPage = { items: [], next_cursor: null, unread: 0 };
  const count = h("span", { class: "badge", "data-testid": "notifications-unread", hidden: true });
  const bell = h(
    "button",
    { type: "button", class: "bell", "data-testid": "notifications-bell", "aria-expanded": "false", "aria-controls": "notifications-panel" },
    "🔔 ",
    h("span", { class: "label" }, "Notifications"),
    " ",
    count,
  );
  const list = h("ul", { class: "notifications", "data-testid": "notifications-list", "aria-label": "Notifications" });
  const markAll = h("button", { type: "button", class: "link", "data-testid": "notifications-mark-read" }, "Mark all read");
  const more = h("button", { type: "button", class: "link", "data-testid": "notifications-more", hidden: true }, "Older");
  const error = h("p", { class: "error", role: "alert" });
  const panel = h(
    "div",
    { id: "notifications-panel", class: "notifications-panel", "data-testid": "notifications-panel", role: "region", "aria-label": "Notifications", hidden: true },
    h("div", { class: "row" }, h("h2", {}, "Notifications"), markAll),
    list,
    more,
    error,
  );

  function render(): void {
    bell.setAttribute("aria-label", `Notifications, ${page.unread} unread`);
    count.hidden = page.unread === 0;
    count.textContent = page.unread >= MAX_SHOWN_UNREAD ? `${MAX_SHOWN_UNREAD}+` : String(page.unread);
    markAll.hidden = page.unread === 0;
    more.hidden = page.next_cursor === null;
    if (page.items.length === 0) {
      list.replaceChildren(h("li", { class: "muted" }, "Nothing yet: mentions, replies and direct messages show up here."));
      return;
    }
    list.replaceChildren(...page.items.map(itemEl));
  }

  function itemEl(n: InboxItem): HTMLLIElement {
    const who = n.sender.display_name || n.sender.username;
    const open = h(
      "button",
      { type: "button", class: "link" },
      h("span", { class: "who" }, who),
      h("span", { class: "muted" }, ` ${KIND_LABEL[n.kind]}${n.private ? " (only you)" : ""}: `),
      h("span", { "data-testid": "notification-text" }, n.preview),
    );
    open.addEventListener("click", () => {
      openRoom(n.room);
      close();
    });
    return h(
      "li",
      { "data-testid": "notification-item", "data-seq": String(n.seq), "data-kind": n.kind, "data-read": String(n.read), class: n.read ? "read" : "unread" },
      open,
    );
  }

  let refreshing: Promise<void> | null = null;
  /** The newest page again; older pages already shown are kept below it. */
  function refresh(): Promise<void> {
    refreshing ??= http
      .notifications()
      .then((fresh) => {
        const seen = new Set(fresh.items.map((n) => n.id));
        const older = page.items.filter((n) => !seen.has(n.id) && n.seq < (fresh.items.at(-1)?.seq ?? 0));
        const keepCursor = older.length > 0 ? page.next_cursor : fresh.next_cursor;
        page = { items: [...fresh.items, ...older], next_cursor: keepCursor, unread: fresh.unread };
        error.textContent = "";
        render();
      })
      .catch((e: unknown) => {
        error.textContent = (e as Error).message;
      })
      .finally(() => {
        refreshing = null;
      });
    return refreshing;
  }

  function close(): void {
    panel.hidden = true;
    bell.setAttribute("aria-expanded", "false");
  }

  bell.addEventListener("click", () => {
    if (!panel.hidden) return close();
    panel.hidden = false;
    bell.setAttribute("aria-expanded", "true");
    void refresh();
  });
  markAll.addEventListener("click", () => {
    const newest = page.items[0];
    if (!newest) return;
    void http
      .markNotificationsRead(newest.seq)
      .then((state) => {
        page.unread = state.unread;
        for (const n of page.items) n.read = n.seq <= state.read_up_to;
        render();
      })
      .catch((e: unknown) => {
        error.textContent = (e as Error).message;
      });
  });
  more.addEventListener("click", () => {
    if (!page.next_cursor) return;
    void http.notifications({ cursor: page.next_cursor }).then((older) => {
      page = { items: [...page.items, ...older.items], next_cursor: older.next_cursor, unread: older.unread };
      render();
    });
  });

  const timer = setInterval(() => document.visibilityState === "visible" && void refresh(), POLL_MS);
  render();
  void refresh();
  return {
    element: h("div", { class: "notifications-wrap" }, bell, panel),
    poke() {
      for (const delay of AFTER_MESSAGE_MS) setTimeout(() => void refresh(), delay);
    },
    stop() {
      clearInterval(timer);
    },
  };
}
