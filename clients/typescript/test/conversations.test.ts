/**
 * Replies and threads, reactions, mentions and file messages against the real stack, two
 * users on two gateways; every frame and history item is checked against src/types.ts.
 */
import { createHash, randomBytes } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { fileOf, textOf } from "../src/body.js";
import { ApiError, FileTooLarge, RequestRejected } from "../src/errors.js";
import { RoomcastHttp } from "../src/http.js";
import type { Reaction, RoomcastSocket } from "../src/socket.js";
import type { HistoryItem } from "../src/types.js";
import { collect, lossyWebSocket, newUser, socketFor, until } from "./helpers.js";
import { shapeProblems } from "./shapes.js";

// History stores what the live path delivered within one batch window (~0.2 s); on a
// loaded 2-core machine a page can trail by seconds. Pages are polled up to this long.
const HISTORY_DEADLINE_MS = 20_000;

const open: RoomcastSocket[] = [];
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});
function track(s: RoomcastSocket): RoomcastSocket {
  open.push(s);
  return s;
}

async function pair(name: string) {
  const alice = await newUser("alice", 0);
  const bob = await newUser("bob", 1);
  const room = await alice.createRoom(name);
  await bob.joinRoom(room.id);
  return { alice, bob, room };
}

/** Polls `read` until `ok` holds for its answer; returns that answer. */
async function eventually<T>(read: () => Promise<T>, ok: (value: T) => boolean, what: string): Promise<T> {
  const deadline = Date.now() + HISTORY_DEADLINE_MS;
  for (;;) {
    const value = await read();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function historyItem(http: RoomcastHttp, room: string, seq: number, ok: (item: HistoryItem) => boolean) {
  const page = await eventually(
    () => http.messages(room),
    (p) => p.items.some((i) => i.seq === seq && ok(i)),
    `history item ${seq}`,
  );
  return page.items.find((i) => i.seq === seq)!;
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

describe("wire shapes", () => {
  it("the shape check reports an undeclared, a missing and a retyped field", () => {
    const frame = {
      type: "reaction",
      seq: 5,
      prev: 4,
      room: "r",
      target_seq: 4,
      sender: { id: "u", username: "a", display_name: "A" },
      emoji: "👍",
      op: "add",
      sent_at: "2026-01-01T00:00:00.000Z",
      client_id: "c",
      kind: "reaction",
    };
    expect(shapeProblems("ReactionFrame", frame)).toEqual([]);
    const { emoji: _dropped, ...missing } = frame;
    expect(shapeProblems("ReactionFrame", { ...missing, op: "toggle", extra: 1 })).toEqual([
      "ReactionFrame.extra: sent by the server, not declared",
      "ReactionFrame.emoji: declared required, not sent",
      'ReactionFrame.op: "toggle" is not "add"',
    ]);
  });
});

describe("replies and mentions", () => {
  it("a reply crosses gateways with reply_to, the parent counts it and the thread page lists it", async () => {
    const { alice, bob, room } = await pair("threads");
    const a = track(socketFor(alice, 0));
    const b = track(socketFor(bob, 1));
    await Promise.all([a.start(), b.start()]);
    await Promise.all([a.subscribe(room.id), b.subscribe(room.id)]);
    const seenA = collect(a);

    const parent = await a.send(room.id, "lunch at noon?");
    const reply = await b.send(room.id, `yes @${alice.user!.username}`, { replyTo: parent.seq });
    const second = await a.send(room.id, "great", { replyTo: parent.seq });
    await until(() => seenA.length === 3, "alice to see the parent and both replies");
    const live = seenA.find((m) => m.seq === reply.seq)!;
    expect(live.reply_to).toBe(parent.seq);
    expect(live.mentions).toEqual([alice.user!.id]);
    expect(textOf(live.body)).toBe(`yes @${alice.user!.username}`);
    expect(seenA[0]!.reply_to).toBeUndefined();
    for (const m of seenA) {
      const { replayed: _r, ...frame } = m;
      expect(shapeProblems("MessageFrame", frame)).toEqual([]);
    }

    const item = await historyItem(bob, room.id, parent.seq, (i) => i.reply_count === 2);
    expect(item.last_reply_at).toBe(seenA[2]!.sent_at);
    expect(shapeProblems("HistoryItem", item)).toEqual([]);

    // Pages read below history's watermark, which may trail the stored counts a little.
    const thread = await eventually(
      () => bob.replies(room.id, parent.seq),
      (p) => p.items.length >= 2,
      "the thread page",
    );
    expect(thread.items.map((i) => [i.seq, i.reply_to])).toEqual([
      [second.seq, parent.seq],
      [reply.seq, parent.seq],
    ]);
    expect(thread.items[1]!.mentions).toEqual([alice.user!.id]);
    for (const i of thread.items) expect(shapeProblems("HistoryItem", i)).toEqual([]);
    const older = await bob.replies(room.id, parent.seq, { limit: 1 });
    expect(older.items.map((i) => i.seq)).toEqual([second.seq]);
    const rest = await bob.replies(room.id, parent.seq, { before: older.next_before!, limit: 1 });
    expect(rest.items.map((i) => i.seq)).toEqual([reply.seq]);

    // The mention shows in alice's joined list until she reads the room.
    const rooms = await eventually(
      () => alice.listRooms("joined"),
      (p) => p.items.some((r) => r.id === room.id && r.mentions === 1),
      "alice's unread mention",
    );
    expect(rooms.items.find((r) => r.id === room.id)!.mentions).toBe(1);

    const refused = await b.send(room.id, "into nowhere", { replyTo: second.seq + 1000 }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(RequestRejected);
    expect(refused).toMatchObject({ code: "invalid_reply_to" });
  });
});

describe("reactions", () => {
  it("react and unreact reach the other gateway live and history aggregates them with me", async () => {
    const { alice, bob, room } = await pair("reactions");
    const a = track(socketFor(alice, 0));
    const b = track(socketFor(bob, 1));
    await Promise.all([a.start(), b.start()]);
    await Promise.all([a.subscribe(room.id), b.subscribe(room.id)]);
    const reactionsA: Reaction[] = [];
    a.on("reaction", (r) => reactionsA.push(r));

    const message = await a.send(room.id, "ship it?");
    const added = await b.react(room.id, message.seq, "👍");
    expect(added.seq).toBeGreaterThan(message.seq);
    await until(() => reactionsA.length === 1, "alice to see bob's reaction");
    expect(reactionsA[0]).toMatchObject({
      room: room.id,
      seq: added.seq,
      target_seq: message.seq,
      emoji: "👍",
      op: "add",
      replayed: false,
    });
    expect(reactionsA[0]!.sender.id).toBe(bob.user!.id);
    const { replayed: _r, ...frame } = reactionsA[0]!;
    expect(shapeProblems("ReactionFrame", frame)).toEqual([]);

    const forBob = await historyItem(bob, room.id, message.seq, (i) => (i.reactions ?? []).length > 0);
    expect(forBob.reactions).toEqual([{ emoji: "👍", count: 1, me: true }]);
    expect(shapeProblems("HistoryItem", forBob)).toEqual([]);
    const forAlice = await historyItem(alice, room.id, message.seq, (i) => (i.reactions ?? []).length > 0);
    expect(forAlice.reactions).toEqual([{ emoji: "👍", count: 1, me: false }]);

    const removed = await b.unreact(room.id, message.seq, "👍");
    await until(() => reactionsA.length === 2, "alice to see the removal");
    expect(reactionsA[1]).toMatchObject({ seq: removed.seq, target_seq: message.seq, op: "remove" });
    await historyItem(bob, room.id, message.seq, (i) => i.reactions === undefined);

    const bad = await b.react(room.id, message.seq, " ").catch((e: unknown) => e);
    expect(bad).toMatchObject({ code: "invalid_emoji" });
  });

  it("a react whose ack was lost is re-sent with its client_id after a reconnect, or found in the resume, and applied once", async () => {
    const { alice, bob, room } = await pair("retried reactions");
    const network = new EventTarget();
    let lose: (frame: Record<string, unknown>) => boolean = () => false;
    const b = track(socketFor(bob, 1, { networkEvents: network, WebSocket: lossyWebSocket((f) => lose(f)) }));
    const a = track(socketFor(alice, 0));
    await Promise.all([a.start(), b.start()]);
    await Promise.all([a.subscribe(room.id), b.subscribe(room.id)]);
    const message = await a.send(room.id, "vote here");
    const reactionsA: Reaction[] = [];
    const reactionsB: Reaction[] = [];
    a.on("reaction", (r) => reactionsA.push(r));
    b.on("reaction", (r) => reactionsB.push(r));
    const reconnect = () => {
      network.dispatchEvent(new Event("offline"));
      lose = () => false;
      network.dispatchEvent(new Event("online"));
    };

    // The ack and bob's copy of the reaction lost: re-sent with the same client_id.
    lose = (f) => f.type === "ack" || f.type === "reaction";
    const first = b.react(room.id, message.seq, "🎉");
    await until(() => reactionsA.length === 1, "the reaction to be stored");
    expect(b.pendingCount).toBe(1); // its ack never arrived
    reconnect();
    const resent = await first;
    expect(resent).toMatchObject({ duplicate: true, seq: reactionsA[0]!.seq });
    expect(b.stats.resent).toBe(1);

    // Only the ack lost: bob saw his own reaction, so the resume confirms it unsent.
    lose = (f) => f.type === "ack";
    const second = b.react(room.id, message.seq, "🚀");
    await until(() => reactionsB.some((r) => r.emoji === "🚀"), "bob to see his reaction");
    reconnect();
    const confirmed = await second;
    expect(confirmed).toMatchObject({ duplicate: true, seq: reactionsB.find((r) => r.emoji === "🚀")!.seq });
    expect(b.stats.resent).toBe(1);
    expect(b.stats.confirmedByResume).toBe(1);

    const marker = await b.send(room.id, "marker");
    await until(() => a.lastSeq(room.id) === marker.seq && b.lastSeq(room.id) === marker.seq, "both to see the marker");
    const seen = (list: Reaction[]) => list.map((r) => [r.seq, r.emoji, r.op]);
    const expected = [
      [resent.seq, "🎉", "add"],
      [confirmed.seq, "🚀", "add"],
    ];
    expect(seen(reactionsA)).toEqual(expected);
    expect(seen(reactionsB)).toEqual(expected);
    const item = await historyItem(alice, room.id, message.seq, (i) => (i.reactions ?? []).length === 2);
    expect(item.reactions!.map((r) => [r.emoji, r.count, r.me]).sort()).toEqual([
      ["🎉", 1, false],
      ["🚀", 1, false],
    ]);
  });
});

describe("file messages", () => {
  it("a member uploads and shares a file; another member downloads it on the other gateway; others get 404", async () => {
    const { alice, bob, room } = await pair("files");
    const carol = await newUser("carol", 1);
    const a = track(socketFor(alice, 0));
    const b = track(socketFor(bob, 1));
    await Promise.all([a.start(), b.start()]);
    await Promise.all([a.subscribe(room.id), b.subscribe(room.id)]);
    const seenB = collect(b);

    const bytes = new Uint8Array(randomBytes(300_000));
    const info = await alice.uploadFile(room.id, new File([bytes], "report.bin", { type: "application/octet-stream" }));
    expect(info).toMatchObject({ name: "report.bin", size: bytes.length, sha256: sha256(bytes) });
    expect(info.id).toMatch(/^[0-9a-f]{24}$/);
    expect(shapeProblems("FileInfo", info)).toEqual([]);
    const note = await alice.uploadFile(room.id, new Blob(["hello, roomcast\n"], { type: "text/plain" }), {
      name: "note.txt",
    });
    expect(note).toMatchObject({ name: "note.txt", size: 16, content_type: "text/plain" });

    const shared = await a.sendFile(room.id, info.id, { caption: "the numbers" });
    await until(() => seenB.length === 1, "bob to see the file message");
    const message = seenB[0]!;
    expect(message.seq).toBe(shared.seq);
    expect(message.body).toEqual({ type: "file", file: info, caption: "the numbers" });
    expect(fileOf(message.body)).toEqual(info);
    expect(textOf(message.body)).toBe("the numbers");
    const { replayed: _r, ...frame } = message;
    expect(shapeProblems("MessageFrame", frame)).toEqual([]);

    // The share is checked against history's stored messages, which trail the live path.
    const blob = await eventually(
      () => bob.downloadFile(info.id).catch((e: unknown) => e),
      (v) => v instanceof Blob,
      "bob's download",
    );
    expect(blob).toBeInstanceOf(Blob);
    const downloaded = new Uint8Array(await (blob as Blob).arrayBuffer());
    expect(downloaded.length).toBe(bytes.length);
    expect(sha256(downloaded)).toBe(info.sha256);
    const range = await bob.downloadFile(info.id, { start: 10, end: 19 });
    expect(new Uint8Array(await range.arrayBuffer())).toEqual(bytes.slice(10, 20));
    const item = await historyItem(bob, room.id, shared.seq, () => true);
    expect(item.body).toEqual({ type: "file", file: info, caption: "the numbers" });

    const carolTry = await carol.downloadFile(info.id).catch((e: unknown) => e);
    expect(carolTry).toBeInstanceOf(ApiError);
    expect(carolTry).toMatchObject({ status: 404, code: "file_not_found" });
    const unshared = await bob.downloadFile(note.id).catch((e: unknown) => e);
    expect(unshared).toMatchObject({ status: 404, code: "file_not_found" });
    const notMine = await b.sendFile(room.id, note.id).catch((e: unknown) => e);
    expect(notMine).toMatchObject({ code: "file_not_found" });
    const outsider = await carol.uploadFile(room.id, new Blob(["x"]), { name: "x.txt" }).catch((e: unknown) => e);
    expect(outsider).toMatchObject({ status: 403, code: "not_a_member" });

    const { url, headers } = await bob.fileRequest(info.id);
    expect(url).toBe(bob.fileUrl(info.id));
    const response = await fetch(url, { headers: { ...headers, connection: "close" } });
    expect(response.status).toBe(200);
    expect(response.headers.get("x-content-type-options")).toBe("nosniff");
    await response.arrayBuffer();
  });

  it("a file over the limit is refused with FileTooLarge before a byte is sent", async () => {
    const alice = await newUser("alice", 0);
    const room = await alice.createRoom("big files");
    let requests = 0;
    const counted = new RoomcastHttp({
      baseUrl: alice.baseUrl,
      tokens: alice.tokens!,
      fetch: (input, init) => {
        requests++;
        return fetch(input, init);
      },
    });
    // The servers' default limit is 25 MiB: one byte more is refused locally.
    const big = new Blob([new Uint8Array(25 * 1024 * 1024 + 1)]);
    const refused = await counted.uploadFile(room.id, big, { name: "big.bin" }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(FileTooLarge);
    expect(refused).toMatchObject({ status: 413, code: "file_too_large" });
    expect(requests).toBe(0);
    // A gateway configured lower: the option says so; at the limit it uploads.
    const small = new RoomcastHttp({ baseUrl: alice.baseUrl, tokens: alice.tokens!, fileMaxBytes: 4 });
    await expect(small.uploadFile(room.id, new Blob(["12345"]), { name: "five" })).rejects.toBeInstanceOf(FileTooLarge);
    expect((await small.uploadFile(room.id, new Blob(["1234"]), { name: "four" })).size).toBe(4);
  });
});
