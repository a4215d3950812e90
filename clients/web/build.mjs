// Bundles the app (and the SDK it imports from source) into dist/, which the gateway
// serves at /app/. No framework: a dozen DOM views do not need one, and the page stays
// one ~30 KB script with zero runtime dependencies, like the SDK.
import { build } from "esbuild";
import { cpSync, mkdirSync, rmSync } from "node:fs";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist");
await build({
  entryPoints: ["src/app.ts"],
  bundle: true,
  format: "esm",
  target: ["es2022"],
  minify: true,
  sourcemap: true,
  outfile: "dist/app.js",
  logLevel: "warning",
});
// The service worker (Web Push): its own classic script, served next to app.js so its
// scope is the app's directory.
await build({
  entryPoints: ["src/sw.ts"],
  bundle: true,
  format: "iife",
  target: ["es2022"],
  minify: true,
  sourcemap: true,
  outfile: "dist/sw.js",
  logLevel: "warning",
});
cpSync("src/index.html", "dist/index.html");
cpSync("src/style.css", "dist/style.css");
