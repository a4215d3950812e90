/// <reference lib="webworker" />
/**
 * The service worker: shows the notifier's pushes (one per coalesced batch: the count
 * and the newest notification, docs/notifications.md) and opens the app on a click.
 * The Topic header already makes the push service replace an undelivered push; the
 * `tag` does the same for a notification still on screen.
 */
export {};
declare const self: ServiceWorkerGlobalScope;

interface PushBody {
  type?: string;
  count?: number;
  latest?: { room?: string; preview?: string; kind?: string; sender?: { username?: string; display_name?: string | null } };
}

const TITLES: Record<string, string> = { dm: "Direct message", mention: "Mentioned you", reply: "Replied to you" };

self.addEventListener("push", (event: PushEvent) => {
  let body: PushBody = {};
  try {
    body = (event.data?.json() ?? {}) as PushBody;
  } catch {
    body = {};
  }
  const latest = body.latest ?? {};
  const who = latest.sender?.display_name || latest.sender?.username || "Roomcast";
  const more = (body.count ?? 1) > 1 ? ` (+${(body.count ?? 1) - 1} more)` : "";
  event.waitUntil(
    self.registration.showNotification(`${who}: ${TITLES[latest.kind ?? ""] ?? "New notification"}${more}`, {
      body: latest.preview ?? "",
      tag: "roomcast-inbox",
      data: { room: latest.room ?? null },
    }),
  );
});

self.addEventListener("notificationclick", (event: NotificationEvent) => {
  event.notification.close();
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const open = windows.find((w) => new URL(w.url).pathname.startsWith(new URL(self.registration.scope).pathname));
      if (open) {
        await open.focus();
        return;
      }
      await self.clients.openWindow(self.registration.scope);
    })(),
  );
});
