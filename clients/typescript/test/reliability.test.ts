/**
 * The guarantees, against the real stack: a killed gateway, an offline period, lost
 * frames, a send past the duplicate window, tokens refused and refresh tokens dead.
 */
import { afterEach, describe, expect, it } from "vitest";
import { textOf } from "../src/body.js";
import { SessionEnded } from "../src/errors.js";
import { RoomcastHttp } from "../src/http.js";
import type { RoomcastSocket, Status } from "../src/socket.js";
import { collect, control, lossyWebSocket, newUser, socketFor, stack, until } from "./helpers.js";

const open: RoomcastSocket[] = [];
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});
function track(s: RoomcastSocket): RoomcastSocket {
  open.push(s);
  return s;
}

async function pair() {
  const alice = await newUser("alice", 0);
  const bob = await newUser("bob", 1);
  const room = await alice.createRoom("reliable");
  await bob.joinRoom(room.id);
  return { alice, bob, room };
}

describe("reconnect and resume", () => {
  it("a gateway killed mid-chat: every send is stored once, nothing received is lost or doubled", async () => {
    const { alice, bob, room } = await pair();
    const a = track(socketFor(alice, 0));
    const b = track(socketFor(bob, 1));
    const statuses: Status[] = [];
    a.on("status", (s) => statuses.push(s));
    await Promise.all([a.start(), b.start()]);
    await Promise.all([a.subscribe(room.id), b.subscribe(room.id)]);
    const seenA = collect(a);
    const seenB = collect(b);
    try {
      const acks = [];
      for (let i = 0; i < 20; i++) {
        if (i === 5) await control("kill", "gateway-a");
        acks.push(a.send(room.id, `m${i}`));
        if (i % 4 === 0) await b.send(room.id, `b${i}`);
      }
      const done = await Promise.all(acks);
      const expected = [...Array(20).keys()].map((i) => `m${i}`);
      await until(() => seenB.filter((m) => textOf(m.body).startsWith("m")).length >= 20, "bob to get 20");
      await until(() => seenA.length >= seenB.length, "alice to catch up");
      const fromA = (list: typeof seenA) => list.map((m) => textOf(m.body)).filter((c) => c.startsWith("m"));
      expect(fromA(seenB)).toEqual(expected);
      expect(fromA(seenA)).toEqual(expected);
      expect(seenA.map((m) => m.seq)).toEqual(seenB.map((m) => m.seq));
      expect(new Set(done.map((x) => x.seq)).size).toBe(20);
      expect(statuses).toContain("reconnecting");
      expect(statuses.at(-1)).toBe("online");
      expect(a.stats.reconnects).toBeGreaterThanOrEqual(1);
    } finally {
      await control("restart", "gateway-a");
    }
  });

  it("offline and back: the room resumes with since and the missed messages arrive once", async () => {
    const { alice, bob, room } = await pair();
    const network = new EventTarget();
    const a = track(socketFor(alice, 0, { networkEvents: network }));
    const b = track(socketFor(bob, 1));
    const statuses: Status[] = [];
    a.on("status", (s) => statuses.push(s));
    await Promise.all([a.start(), b.start()]);
    await Promise.all([a.subscribe(room.id), b.subscribe(room.id)]);
    const seenA = collect(a);
    await b.send(room.id, "before");
    await until(() => seenA.length === 1, "the first message");
    network.dispatchEvent(new Event("offline"));
    await until(() => a.status === "offline", "offline");
    for (const text of ["while 1", "while 2", "while 3"]) await b.send(room.id, text);
    const queued = a.send(room.id, "typed while offline");
    network.dispatchEvent(new Event("online"));
    await queued;
    await until(() => seenA.length === 5, "the missed messages");
    expect(seenA.map((m) => textOf(m.body))).toEqual(["before", "while 1", "while 2", "while 3", "typed while offline"]);
    expect(seenA.slice(1, 4).every((m) => m.replayed)).toBe(true);
    expect(statuses).toEqual(["online", "offline", "reconnecting", "online"]);
  });
});

describe("exactly-once sends", () => {
  it("a lost ack within the duplicate window: the resend is acked as a duplicate, stored once", async () => {
    const { alice, bob, room } = await pair();
    const network = new EventTarget();
    let loseAcks = true;
    const a = track(
      socketFor(alice, 0, { networkEvents: network, WebSocket: lossyWebSocket((f) => loseAcks && f.type === "ack") }),
    );
    const b = track(socketFor(bob, 1));
    await Promise.all([a.start(), b.start()]);
    await Promise.all([a.subscribe(room.id), b.subscribe(room.id)]);
    const seenB = collect(b);
    const seenA = collect(a);
    const ack = a.send(room.id, "once");
    await until(() => seenB.length === 1 && seenA.length === 1, "the message to be stored");
    network.dispatchEvent(new Event("offline"));
    loseAcks = false;
    network.dispatchEvent(new Event("online"));
    const result = await ack;
    expect(result.duplicate).toBe(true);
    expect(result.seq).toBe(seenB[0]!.seq);
    await b.send(room.id, "marker");
    await until(() => seenB.length === 2, "the marker");
    expect(seenB.map((m) => textOf(m.body))).toEqual(["once", "marker"]);
  });

  it("past the resend window: the send is found in the room's resume, not sent again", async () => {
    const { alice, bob, room } = await pair();
    const network = new EventTarget();
    let loseAcks = true;
    const resendWindowMs = 500;
    const a = track(
      socketFor(alice, 0, {
        networkEvents: network,
        resendWindowMs,
        WebSocket: lossyWebSocket((f) => loseAcks && f.type === "ack"),
      }),
    );
    const b = track(socketFor(bob, 1));
    await Promise.all([a.start(), b.start()]);
    await Promise.all([a.subscribe(room.id), b.subscribe(room.id)]);
    const seenB = collect(b);
    const sentAt = Date.now();
    const ack = a.send(room.id, "old send");
    await until(() => seenB.length === 1, "the message to be stored");
    network.dispatchEvent(new Event("offline"));
    await b.send(room.id, "meanwhile");
    // The condition is the passage of time itself: the window must be over.
    await until(() => Date.now() - sentAt > resendWindowMs + 100, "the resend window to pass");
    loseAcks = false;
    network.dispatchEvent(new Event("online"));
    const result = await ack;
    expect(result).toMatchObject({ duplicate: true, seq: seenB[0]!.seq });
    expect(a.stats.confirmedByResume).toBe(1);
    await until(() => seenB.length === 2, "meanwhile");
    await a.send(room.id, "marker");
    await until(() => seenB.length === 3, "the marker");
    expect(seenB.map((m) => textOf(m.body))).toEqual(["old send", "meanwhile", "marker"]);
  });
});

describe("gaps", () => {
  it("frames lost on the way are repaired before the next one is delivered", async () => {
    const { alice, bob, room } = await pair();
    // Each of these is lost once, live; a replay of it gets through.
    const lost = new Set(["lost 1", "lost 2"]);
    const isLost = (f: Record<string, unknown>) =>
      f.type === "message" && lost.delete((f.body as { content?: string } | undefined)?.content ?? "");
    const a = track(socketFor(alice, 0, { WebSocket: lossyWebSocket(isLost) }));
    const b = track(socketFor(bob, 1));
    await Promise.all([a.start(), b.start()]);
    await Promise.all([a.subscribe(room.id), b.subscribe(room.id)]);
    const seenA = collect(a);
    const gaps: unknown[] = [];
    a.on("gap", (g) => gaps.push(g));
    await b.send(room.id, "first");
    await until(() => seenA.length === 1, "first");
    await b.send(room.id, "lost 1");
    await b.send(room.id, "lost 2");
    await b.send(room.id, "after");
    await until(() => seenA.length === 4, "the repaired messages");
    expect(seenA.map((m) => textOf(m.body))).toEqual(["first", "lost 1", "lost 2", "after"]);
    expect(gaps).toHaveLength(1);
  });
});

describe("tokens", () => {
  it("4001 asks the callback for a forced refresh once, then connects", async () => {
    const alice = await newUser("alice", 0);
    const calls: boolean[] = [];
    const a = track(
      socketFor(alice, 0, {
        token: async ({ forceRefresh }) => {
          calls.push(forceRefresh);
          return forceRefresh ? alice.accessToken(true) : "not-a-token";
        },
      }),
    );
    const user = await a.start();
    expect(user.id).toBe(alice.user!.id);
    expect(calls).toEqual([false, true]);
  });

  it("a dead refresh token ends the session without a retry loop", async () => {
    const alice = await newUser("alice", 0);
    const stale = { ...alice.tokens!, access_token: "expired-and-unusable" };
    await alice.logout(); // revokes the refresh token's family
    const http = new RoomcastHttp({ baseUrl: stack.gateways[0]!, tokens: stale });
    let calls = 0;
    const a = track(
      socketFor(http, 0, {
        token: ({ forceRefresh }) => {
          calls++;
          return http.accessToken(forceRefresh);
        },
      }),
    );
    const closed: Error[] = [];
    a.on("closed", (e) => closed.push(e));
    await expect(a.start()).rejects.toBeInstanceOf(SessionEnded);
    expect(calls).toBe(2);
    expect(a.status).toBe("closed");
    expect(closed).toHaveLength(1);
    expect(http.tokens).toBeNull();
  });

  it("a token the gateway refuses even fresh ends the session after two tries", async () => {
    let calls = 0;
    const alice = await newUser("alice", 0);
    const a = track(
      socketFor(alice, 0, {
        token: () => {
          calls++;
          return "never-valid";
        },
      }),
    );
    await expect(a.start()).rejects.toBeInstanceOf(SessionEnded);
    expect(calls).toBe(2);
  });
});
