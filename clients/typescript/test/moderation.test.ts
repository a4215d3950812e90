/**
 * Moderation as the SDK reports it, against the real stack: a muted member's send is
 * refused with `muted`, a send faster than the room's slow mode with `slow_mode` and
 * `retryAfter`, a banned user's join with a 403 `banned`; a room carries its
 * `slow_mode_seconds` and `retention_days`.
 */
import { afterEach, describe, expect, it } from "vitest";
import { ApiError, ModerationCode, RequestRejected } from "../src/errors.js";
import type { RoomcastHttp } from "../src/http.js";
import type { RoomcastSocket } from "../src/socket.js";
import type { Room } from "../src/types.js";
import { newUser, socketFor, stack } from "./helpers.js";

const open: RoomcastSocket[] = [];
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});

/** A moderation call the SDK has no method for yet (docs/moderation.md's routes). */
async function moderate(http: RoomcastHttp, method: string, path: string, body?: unknown): Promise<unknown> {
  const response = await fetch(`${stack.gateways[0]}${path}`, {
    method,
    headers: { authorization: `Bearer ${await http.accessToken()}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  expect(response.ok, `${method} ${path}: ${response.status}`).toBe(true);
  return response.status === 204 ? null : response.json();
}

async function rejection(promise: Promise<unknown>): Promise<RequestRejected> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(RequestRejected);
  return error as RequestRejected;
}

describe("moderation through the SDK", () => {
  it("a room's slow mode refuses the second quick send with slow_mode and retryAfter", async () => {
    const alice = await newUser("slowowner");
    const bob = await newUser("slowmember", 1);
    const created = await alice.createRoom("slow");
    await bob.joinRoom(created.id);
    const patched = (await moderate(alice, "PATCH", `/v1/rooms/${created.id}`, {
      slow_mode_seconds: 60,
      retention_days: 30,
    })) as { room: Room };
    expect(patched.room.slow_mode_seconds).toBe(60);
    expect(patched.room.retention_days).toBe(30);

    const b = socketFor(bob, 1);
    open.push(b);
    await b.start();
    await b.subscribe(created.id);
    await b.send(created.id, "first");
    const refused = await rejection(b.send(created.id, "too soon"));
    expect(refused.code).toBe(ModerationCode.slowMode);
    expect(refused.retryAfter).toBeGreaterThan(0);
    expect(refused.retryAfter).toBeLessThanOrEqual(60);
  });

  it("a muted member's send is refused with muted and no retryAfter", async () => {
    const alice = await newUser("muteowner");
    const bob = await newUser("mutemember");
    const room = await alice.createRoom("muting");
    await bob.joinRoom(room.id);
    const bobId = (await bob.me()).id;
    const until = new Date(Date.now() + 3_600_000).toISOString();
    await moderate(alice, "PUT", `/v1/rooms/${room.id}/mutes/${bobId}`, { until });

    const b = socketFor(bob);
    open.push(b);
    await b.start();
    await b.subscribe(room.id);
    const refused = await rejection(b.send(room.id, "can I speak?"));
    expect(refused.code).toBe(ModerationCode.muted);
    expect(refused.retryAfter).toBeUndefined();
  });

  it("a banned user's join is a 403 banned", async () => {
    const alice = await newUser("banowner");
    const bob = await newUser("banned");
    const room = await alice.createRoom("banning");
    await bob.joinRoom(room.id);
    await moderate(alice, "PUT", `/v1/rooms/${room.id}/bans/${(await bob.me()).id}`);
    const error = await bob.joinRoom(room.id).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).status).toBe(403);
    expect((error as ApiError).code).toBe(ModerationCode.banned);
  });
});
