/** The inbox and Web Push registration against the real stack (the notifier included). */
import { webcrypto } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ApiError } from "../src/errors.js";
import type { NotificationPage, PushSubscriptionBody } from "../src/types.js";
import type { RoomcastHttp } from "../src/http.js";
import { newUser, socketFor } from "./helpers.js";

// A DM reaches the inbox through JetStream and the notifier's batch; an upper bound for a
// loaded 2-core machine (the inbox is polled, never waited on blindly).
const INBOX_DEADLINE_MS = 30_000;

async function inboxWith(http: RoomcastHttp, count: number): Promise<NotificationPage> {
  const deadline = Date.now() + INBOX_DEADLINE_MS;
  for (;;) {
    const page = await http.notifications({ limit: 100 });
    if (page.items.length >= count || Date.now() > deadline) return page;
    await new Promise((r) => setTimeout(r, 200));
  }
}

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64url");
}

/** What a browser's `PushSubscription.toJSON()` holds: a P-256 point and 16 auth bytes. */
async function browserSubscription(endpoint: string): Promise<PushSubscriptionBody> {
  const pair = await webcrypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"]);
  const point = new Uint8Array(await webcrypto.subtle.exportKey("raw", pair.publicKey));
  const auth = webcrypto.getRandomValues(new Uint8Array(16));
  return { endpoint, expirationTime: null, keys: { p256dh: b64url(point), auth: b64url(auth) } };
}

describe("notifications", () => {
  it("DMs sent on one gateway are in the other member's inbox on the other, paged and marked read", async () => {
    const alice = await newUser("alice", 0);
    const bob = await newUser("bob", 1);
    const bobId = (await bob.me()).id;
    const aliceId = (await alice.me()).id;
    const room = await alice.openDm(bobId);
    const socket = socketFor(alice, 0);
    await socket.start();
    const acks = [];
    try {
      for (const text of ["one", "two", "three"]) acks.push(await socket.send(room.id, text));
    } finally {
      socket.close();
    }

    const page = await inboxWith(bob, 3);
    expect(page.items.map((n) => n.seq)).toEqual(acks.map((a) => a.seq).reverse());
    const newest = page.items[0]!;
    expect(newest).toMatchObject({ kind: "dm", room: room.id, preview: "three", read: false, private: false });
    expect(newest.sender.id).toBe(aliceId);
    expect(typeof newest.sent_at).toBe("string");
    expect(page.unread).toBe(3);
    expect(page.next_cursor).toBeNull();
    expect((await alice.notifications()).items).toEqual([]);

    const first = await bob.notifications({ limit: 2 });
    expect(first.items.map((n) => n.preview)).toEqual(["three", "two"]);
    const rest = await bob.notifications({ cursor: first.next_cursor, limit: 2 });
    expect(rest.items.map((n) => n.preview)).toEqual(["one"]);
    expect(rest.next_cursor).toBeNull();

    expect(await bob.markNotificationsRead(acks[1]!.seq)).toEqual({ read_up_to: acks[1]!.seq, unread: 1 });
    expect((await bob.markNotificationsRead(acks[0]!.seq)).read_up_to).toBe(acks[1]!.seq);
    const after = await bob.notifications();
    expect(after.items.map((n) => n.read)).toEqual([false, true, true]);
    expect(after.unread).toBe(1);
  });

  it("registers, replaces and unregisters push subscriptions, and refuses unknown push services", async () => {
    const carol = await newUser("carol", 0);
    const key = await carol.pushVapidKey();
    expect(Buffer.from(key, "base64url")).toHaveLength(65);

    const endpoint = `https://fcm.googleapis.com/fcm/send/${Date.now().toString(36)}`;
    const first = await carol.registerPush(await browserSubscription(endpoint));
    const again = await carol.registerPush(await browserSubscription(endpoint));
    expect(first.endpoint).toBe(endpoint);
    expect(again.id).toBe(first.id);
    await carol.unregisterPush(endpoint);
    await carol.unregisterPush(endpoint);

    const refused = await carol.registerPush(await browserSubscription("https://internal.example/hook")).catch((e) => e);
    expect(refused).toBeInstanceOf(ApiError);
    expect(refused).toMatchObject({ status: 400, code: "invalid_subscription" });
  });
});
