/**
 * Web Push registration (docs/notifications.md): the service worker (sw.js, next to
 * app.js) shows the notifier's pushes while the page is closed; this module registers
 * it, subscribes with the notifier's VAPID key through the SDK, and unsubscribes on
 * logout so the next person on this browser does not get the previous user's pushes.
 *
 * Asking for permission needs a user gesture, so subscribing is a button ("Enable push
 * notifications"), never automatic.
 */
import type { RoomcastHttp } from "../../typescript/src/index.js";

// The service worker's file and scope: the app's own directory (/app/), so it controls
// nothing else the gateway serves.
const WORKER_URL = "sw.js";
const WORKER_SCOPE = "./";

export type PushState = "unsupported" | "denied" | "off" | "on";

/** Whether this browser can do Web Push at all (secure context, service workers, Push API). */
export function pushSupported(): boolean {
  return window.isSecureContext && "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

/** The VAPID key (base64url) as the bytes `applicationServerKey` takes. */
export function vapidKeyBytes(key: string): Uint8Array<ArrayBuffer> {
  const base64 = key.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (key.length % 4)) % 4);
  const raw = atob(base64);
  const bytes = new Uint8Array(new ArrayBuffer(raw.length));
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

async function registration(): Promise<ServiceWorkerRegistration> {
  // A classic script (build.mjs bundles it as one IIFE): module workers are not in
  // every browser that has Web Push.
  await navigator.serviceWorker.register(WORKER_URL, { scope: WORKER_SCOPE });
  return navigator.serviceWorker.ready;
}

/** This browser's state for the current page: no support, permission refused, or subscribed or not. */
export async function pushState(): Promise<PushState> {
  if (!pushSupported()) return "unsupported";
  if (Notification.permission === "denied") return "denied";
  const reg = await navigator.serviceWorker.getRegistration(WORKER_SCOPE);
  const sub = reg ? await reg.pushManager.getSubscription() : null;
  return sub ? "on" : "off";
}

/**
 * Subscribe (from a click): permission, the worker, `pushManager.subscribe` with the
 * notifier's key, then the subscription registered with the server. A subscription made
 * with another key (the notifier's key was rotated) is replaced.
 */
export async function enablePush(http: RoomcastHttp): Promise<PushState> {
  if (!pushSupported()) return "unsupported";
  if ((await Notification.requestPermission()) !== "granted") return "denied";
  const key = vapidKeyBytes(await http.pushVapidKey());
  const reg = await registration();
  let sub = await reg.pushManager.getSubscription();
  const current = sub?.options.applicationServerKey;
  if (sub && current && !sameBytes(new Uint8Array(current), key)) {
    await sub.unsubscribe();
    sub = null;
  }
  sub ??= await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  await http.registerPush(sub);
  return "on";
}

/**
 * Unsubscribe (logout, or the button again): the server forgets the endpoint first,
 * while the token is still valid, then the browser drops the subscription. Failures are
 * swallowed: logging out must not be blocked by a push service.
 */
export async function disablePush(http: RoomcastHttp): Promise<void> {
  if (!pushSupported()) return;
  const reg = await navigator.serviceWorker.getRegistration(WORKER_SCOPE);
  const sub = reg ? await reg.pushManager.getSubscription() : null;
  if (!sub) return;
  try {
    await http.unregisterPush(sub.endpoint);
  } catch {
    // The server may be unreachable; the browser's side is still dropped below, and
    // the notifier removes the endpoint when its push service answers 404/410.
  }
  await sub.unsubscribe().catch(() => false);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
