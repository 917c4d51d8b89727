import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { Worker, type WorkerOptions } from "node:worker_threads";

const require = createRequire(import.meta.url);

/** tsx's ESM API (`register`), as its package exports it to `import` (its CommonJS build cannot register hooks). */
function tsxEsmApi(): string {
  const manifest = require.resolve("tsx/package.json");
  const { exports } = require(manifest) as { exports: Record<string, { import: { default: string } }> };
  const entry = exports["./esm/api"]?.import.default;
  if (!entry) throw new Error("tsx does not export ./esm/api to import");
  return pathToFileURL(join(dirname(manifest), entry)).href;
}

/**
 * A worker thread running one of this package's TypeScript modules. A worker inherits neither tsx's loader nor
 * vitest's, so it registers tsx's ESM hooks before importing `entry`; a failure to load surfaces as the worker's
 * "error" event.
 */
export function tsWorker(entry: URL, opts: Omit<WorkerOptions, "eval"> = {}): Worker {
  const boot = `import(${JSON.stringify(tsxEsmApi())}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); })`;
  return new Worker(boot, { ...opts, eval: true });
}
