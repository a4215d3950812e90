import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    globalSetup: ["./test/global-setup.ts"],
    include: ["test/**/*.test.ts"],
    // One stack for every file; files run one after another (2-core machines, and the
    // reconnect test kills a gateway the others use).
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    execArgv: ["--experimental-websocket"],
  },
});
