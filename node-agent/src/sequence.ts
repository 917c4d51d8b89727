import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { join } from "node:path";
import { GlanceError } from "@glance/shared";

/**
 * Template sequence numbers, strictly increasing for the life of the node. The orchestrator rejects a sequence
 * number it has already accepted, so the next value is written to disk (atomically: temp file, fsync, rename)
 * before a number is handed out: a crash can skip numbers but never reuse one.
 */
export class SequenceStore {
  readonly #file: string;
  #next: number;

  private constructor(file: string, next: number) {
    this.#file = file;
    this.#next = next;
  }

  static open(dataDir: string): SequenceStore {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const file = join(dataDir, "sequence.json");
    let text: string | undefined;
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
    if (text === undefined) return new SequenceStore(file, 0);
    let next: unknown;
    try {
      next = (JSON.parse(text) as { next?: unknown } | null)?.next;
    } catch {
      next = undefined;
    }
    if (typeof next !== "number" || !Number.isSafeInteger(next) || next < 0) {
      throw new GlanceError(
        "CONFIG_INVALID",
        `${file} is damaged. Restore it from a backup, or write {"next": N} with N above any sequence number this node has sent.`,
      );
    }
    return new SequenceStore(file, next);
  }

  /** The number the next template will carry. */
  peek(): number {
    return this.#next;
  }

  next(): number {
    const n = this.#next;
    this.#persist(n + 1);
    this.#next = n + 1;
    return n;
  }

  #persist(next: number): void {
    const tmp = `${this.#file}.tmp`;
    const fd = openSync(tmp, "w", 0o600);
    try {
      writeSync(fd, JSON.stringify({ next }));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.#file);
  }
}
