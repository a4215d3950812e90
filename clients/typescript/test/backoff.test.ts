/** Reconnect delays: no wait while a round has untried gateways, then full jitter. */
import { describe, expect, it } from "vitest";
import { backoffCap, reconnectDelay } from "../src/backoff.js";

const options = { initialMs: 250, maxMs: 10_000 };

describe("reconnect backoff", () => {
  it("tries the other gateways at once, then waits per failed round", () => {
    expect(reconnectDelay(1, 3, options, () => 1)).toBe(0);
    expect(reconnectDelay(2, 3, options, () => 1)).toBe(0);
    expect(reconnectDelay(3, 3, options, () => 1)).toBe(250);
    expect(reconnectDelay(6, 3, options, () => 1)).toBe(500);
  });

  it("doubles the cap per round up to the maximum", () => {
    expect([0, 1, 2, 3, 10, 100].map((round) => backoffCap(round, options))).toEqual([
      250, 500, 1000, 2000, 10_000, 10_000,
    ]);
  });

  it("draws uniformly from zero to the cap (full jitter)", () => {
    expect(reconnectDelay(4, 1, options, () => 0)).toBe(0);
    expect(reconnectDelay(4, 1, options, () => 0.5)).toBe(1000);
    const draws = Array.from({ length: 2000 }, () => reconnectDelay(4, 1, options));
    expect(Math.min(...draws)).toBeLessThan(200);
    expect(Math.max(...draws)).toBeGreaterThan(1800);
    expect(draws.every((d) => d >= 0 && d <= 2000)).toBe(true);
  });
});
