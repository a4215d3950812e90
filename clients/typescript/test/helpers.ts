/** Shared helpers for the tests against the real stack. */
import { inject } from "vitest";
import { RoomcastHttp } from "../src/http.js";
import type { Message } from "../src/socket.js";
import { RoomcastSocket, type SocketOptions } from "../src/socket.js";

export const stack = inject("stack");
export const PASSWORD = "correct horse battery";

let counter = 0;
/** A unique username (3-32 of A-Z a-z 0-9 _ . -). */
export function username(prefix: string): string {
  counter++;
  return `${prefix}_${Date.now().toString(36)}_${counter}`;
}

/** Registers and logs in a new user on gateway `gateway` (0 or 1). */
export async function newUser(prefix: string, gateway = 0): Promise<RoomcastHttp> {
  const http = new RoomcastHttp({ baseUrl: stack.gateways[gateway]! });
  const name = username(prefix);
  await http.register(name, PASSWORD);
  await http.login(name, PASSWORD);
  return http;
}

/** A socket over both gateways, starting at `first`, with the http client's tokens. */
export function socketFor(http: RoomcastHttp, first = 0, options: Partial<SocketOptions> = {}): RoomcastSocket {
  const gateways = [...stack.gateways.slice(first), ...stack.gateways.slice(0, first)];
  return new RoomcastSocket({
    urls: gateways,
    token: ({ forceRefresh }) => http.accessToken(forceRefresh),
    http,
    networkEvents: null,
    ...options,
  });
}

/** Poll `check` until it returns true (or fail after `timeoutMs`). */
export async function until(check: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Collects the messages a socket delivers, per room. */
export function collect(socket: RoomcastSocket): Message[] {
  const seen: Message[] = [];
  socket.on("message", (m) => seen.push(m));
  return seen;
}

export async function control(action: "kill" | "restart", part: string): Promise<void> {
  const response = await fetch(`${stack.control}/${action}/${part}`, { method: "POST" });
  if (!response.ok) throw new Error(`${action} ${part}: ${await response.text()}`);
}

/** A platform WebSocket that loses the incoming frames `drop` picks (a lossy link). */
export function lossyWebSocket(drop: (frame: Record<string, unknown>) => boolean): typeof WebSocket {
  return class extends WebSocket {
    override addEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: unknown): void {
      if (type === "message" && typeof listener === "function") {
        const inner = listener;
        listener = (event: Event) => {
          const data = (event as MessageEvent).data;
          if (typeof data === "string" && drop(JSON.parse(data) as Record<string, unknown>)) return;
          inner(event);
        };
      }
      super.addEventListener(type, listener, options as AddEventListenerOptions);
    }
  } as typeof WebSocket;
}
