import { createRequire } from "node:module";
import type usearchModule from "usearch";

/**
 * usearch, through its CommonJS build. Its ES module build never finishes loading in a worker thread (it finds its
 * native binary by walking up from a file name read off a stack trace), and the gallery runs on one
 * (gallery-thread.ts).
 */
export const usearch = createRequire(import.meta.url)("usearch") as typeof usearchModule;
