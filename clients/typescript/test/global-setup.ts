/**
 * Starts the real stack (nats-server, SecantusDB, auth, rooms, history, two gateways)
 * on free ports through tests/browser/stack_server.py, and stops it after the run.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import type { TestProject } from "vitest/node";

const ROOT = resolve(import.meta.dirname, "../../..");
// Starting NATS, SecantusDB and five services takes ~5-15 s on a busy 2-core machine.
const START_TIMEOUT_MS = 120_000;

let child: ChildProcess | undefined;

export interface StackInfo {
  gateways: string[];
  control: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    stack: StackInfo;
  }
}

export default async function setup(project: TestProject): Promise<() => void> {
  const venv = resolve(ROOT, ".venv/bin/python");
  const python = process.env.ROOMCAST_PYTHON ?? (existsSync(venv) ? venv : "python3");
  const proc = spawn(python, [resolve(ROOT, "tests/browser/stack_server.py")], {
    cwd: ROOT,
    stdio: ["pipe", "pipe", "inherit"],
  });
  child = proc;
  const info = await new Promise<StackInfo>((resolveInfo, reject) => {
    const timer = setTimeout(() => reject(new Error("the stack did not start in time")), START_TIMEOUT_MS);
    let out = "";
    proc.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const line = out.split("\n").find((l) => l.startsWith("{"));
      if (line) {
        clearTimeout(timer);
        resolveInfo(JSON.parse(line) as StackInfo);
      }
    });
    proc.on("exit", (code) => reject(new Error(`the stack exited (${code}) before it was ready`)));
  });
  project.provide("stack", info);
  return () => {
    child?.stdin?.end();
    child?.kill("SIGTERM");
  };
}
