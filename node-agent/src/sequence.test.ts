import { readFileSync, statSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isGlanceError } from "@glance/shared";
import { describe, expect, it } from "vitest";
import { SequenceStore } from "./sequence.ts";

describe("template sequence numbers", () => {
  it("carry on after a restart instead of starting again", async () => {
    const dir = await mkdtemp(join(tmpdir(), "glance-seq-"));
    const first = SequenceStore.open(dir);
    const before = [first.next(), first.next(), first.next()];
    expect(before).toEqual([0, 1, 2]);
    const afterRestart = SequenceStore.open(dir);
    expect(afterRestart.next()).toBe(3);
    expect(SequenceStore.open(dir).peek()).toBe(4);
    expect(statSync(join(dir, "sequence.json")).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(join(dir, "sequence.json"), "utf8"))).toEqual({ next: 4 });
  });

  it("refuse a damaged file rather than risk reusing a number", async () => {
    const dir = await mkdtemp(join(tmpdir(), "glance-seq-"));
    writeFileSync(join(dir, "sequence.json"), '{"next":');
    let error: unknown;
    try {
      SequenceStore.open(dir);
    } catch (e) {
      error = e;
    }
    expect(isGlanceError(error, "CONFIG_INVALID")).toBe(true);
  });
});
