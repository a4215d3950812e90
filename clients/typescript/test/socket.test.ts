/** The socket against the real stack: chat across gateways, typing/presence/read, edit and delete. */
import { afterEach, describe, expect, it } from "vitest";
import { textOf } from "../src/body.js";
import { RequestRejected } from "../src/errors.js";
import type { PresenceFrame, ReadFrame, TypingFrame } from "../src/types.js";
import type { RoomcastSocket } from "../src/socket.js";
import { collect, newUser, socketFor, until } from "./helpers.js";

const open: RoomcastSocket[] = [];
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});

function track(s: RoomcastSocket): RoomcastSocket {
  open.push(s);
  return s;
}

describe("RoomcastSocket", () => {
  it("two users on different gateways chat both ways, each message once and in order", async () => {
    const alice = await newUser("alice", 0);
    const bob = await newUser("bob", 1);
    const room = await alice.createRoom("general");
    await bob.joinRoom(room.id);
    const a = track(socketFor(alice, 0));
    const b = track(socketFor(bob, 1));
    await Promise.all([a.start(), b.start()]);
    expect(a.urls[0]).not.toEqual(b.urls[0]);
    const seenA = collect(a);
    const seenB = collect(b);
    await Promise.all([a.subscribe(room.id), b.subscribe(room.id)]);

    const ack1 = await a.send(room.id, "hi bob");
    const ack2 = await b.send(room.id, "hi alice");
    const ack3 = await a.send(room.id, "how are you?");
    expect(ack1.duplicate).toBe(false);
    expect(ack2.seq).toBeGreaterThan(ack1.seq);

    const texts = (list: typeof seenA) => list.map((m) => textOf(m.body));
    await until(() => seenA.length >= 3 && seenB.length >= 3, "both sides to see 3 messages");
    expect(texts(seenA)).toEqual(["hi bob", "hi alice", "how are you?"]);
    expect(texts(seenB)).toEqual(["hi bob", "hi alice", "how are you?"]);
    expect(seenB.map((m) => m.seq)).toEqual([ack1.seq, ack2.seq, ack3.seq]);
    expect(seenB[0]!.sender.username).toEqual(alice.user!.username);
  });

  it("relays typing, presence and read receipts, and applies edits and deletes", async () => {
    const alice = await newUser("alice", 0);
    const bob = await newUser("bob", 1);
    const room = await alice.createRoom("lounge");
    await bob.joinRoom(room.id);
    const a = track(socketFor(alice, 0));
    const b = track(socketFor(bob, 1));
    await Promise.all([a.start(), b.start()]);
    await Promise.all([a.subscribe(room.id), b.subscribe(room.id)]);

    // alice's subscription reaches bob's gateway within moments: ask until she is listed.
    const expected = [alice.user!.username, bob.user!.username].sort();
    let online: PresenceFrame = await b.presence(room.id);
    const names = () => (online.online ?? []).map((u) => u.username).sort();
    const deadline = Date.now() + 10_000;
    while (names().length < 2 && Date.now() < deadline) online = await b.presence(room.id);
    expect(names()).toEqual(expected);

    const typing: TypingFrame[] = [];
    b.on("typing", (t) => typing.push(t));
    a.typing(room.id);
    await until(() => typing.length > 0, "bob to see alice typing");
    expect(typing[0]!.user.username).toEqual(alice.user!.username);

    const edits: string[] = [];
    const deletes: number[] = [];
    b.on("edit", (e) => edits.push(e.body.content));
    b.on("delete", (d) => deletes.push(d.target_seq));
    const sent = await a.send(room.id, "teh typo");
    await a.edit(room.id, sent.seq, "the typo");
    await until(() => edits.length === 1, "bob to see the edit");
    expect(edits).toEqual(["the typo"]);
    await a.delete(room.id, sent.seq);
    await until(() => deletes.length === 1, "bob to see the delete");
    expect(deletes).toEqual([sent.seq]);
    // Only the sender may edit.
    await expect(b.edit(room.id, sent.seq, "mine now")).rejects.toBeInstanceOf(RequestRejected);

    const reads: ReadFrame[] = [];
    a.on("read", (r) => reads.push(r));
    b.read(room.id, sent.seq);
    await until(() => reads.some((r) => r.user.username === bob.user!.username), "alice to see bob's read receipt");
    const page = await bob.listRooms("joined");
    expect(page.items.find((r) => r.id === room.id)?.unread).toBe(0);
  });

  it("a private message reaches only its recipient; others keep an unbroken chain", async () => {
    const alice = await newUser("alice", 0);
    const bob = await newUser("bob", 1);
    const carol = await newUser("carol", 0);
    const room = await alice.createRoom("team");
    await bob.joinRoom(room.id);
    await carol.joinRoom(room.id);
    const [a, b, c] = [track(socketFor(alice, 0)), track(socketFor(bob, 1)), track(socketFor(carol, 0))];
    await Promise.all([a.start(), b.start(), c.start()]);
    await Promise.all([a.subscribe(room.id), b.subscribe(room.id), c.subscribe(room.id)]);
    const seenB = collect(b);
    const seenC = collect(c);
    const gaps: unknown[] = [];
    c.on("gap", (g) => gaps.push(g));
    await a.send(room.id, "for bob only", { to: bob.user!.id });
    const after = await a.send(room.id, "for everyone");
    await until(() => seenB.length === 2 && seenC.length === 1, "the messages");
    expect(seenB.map((m) => textOf(m.body))).toEqual(["for bob only", "for everyone"]);
    expect(seenC.map((m) => textOf(m.body))).toEqual(["for everyone"]);
    expect(c.lastSeq(room.id)).toEqual(after.seq);
    expect(gaps).toEqual([]);
  });
});
