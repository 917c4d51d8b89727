import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defaultAgentBenchOptions, formatAgentBench, runAgentBench, writeAgentBench } from "./agent-bench.ts";

const Throughput = z.object({
  frames: z.number().int().positive(),
  faces: z.number().int().nonnegative(),
  wallS: z.number().positive(),
  cpuS: z.number().positive(),
  cores: z.number().positive(),
  framesPerS: z.number().positive(),
  facesPerS: z.number().nonnegative(),
  framesPerCoreS: z.number().positive(),
  facesPerCoreS: z.number().nonnegative(),
  msPerFrame: z.number().positive(),
  msPerFace: z.number().positive(),
});
const Percentiles = z.object({ p50: z.number().nonnegative(), p95: z.number().nonnegative() });
const Row = z.object({
  kind: z.enum(["node", "detect+embed", "peer"]),
  name: z.string().min(1),
  embedder: z.string().min(1),
  backend: z.string().min(1),
  throughput: Throughput,
  stageMs: z.record(z.string(), Percentiles).optional(),
  accuracy: z.object({ lfwAccuracy: z.number().min(0.5).max(1), lossVsFp32Pt: z.number().optional() }).optional(),
  frameMs: Percentiles.optional(),
  vsPeer: z.object({ perFrame: z.number().positive(), perFace: z.number().positive() }).optional(),
});
const Result = z.object({
  date: z.string(),
  machine: z.string(),
  width: z.literal(640),
  height: z.literal(360),
  frames: z.number().int(),
  sampledFrames: z.number().int(),
  loadAverage: z.object({ start: z.array(z.number()).length(3), end: z.array(z.number()).length(3) }),
  rows: z.array(Row),
});

describe("bench:agent", () => {
  it("writes one JSON with the node, the like-for-like rows and the peer, each compared with the peer, for a 1-second slice", async () => {
    const dir = await mkdtemp(join(tmpdir(), "glance-agent-bench-"));
    try {
      const result = await runAgentBench({ ...defaultAgentBenchOptions, frames: 30, peerStride: 10 });
      const file = await writeAgentBench(result, dir);
      const json = Result.parse(JSON.parse(await readFile(file, "utf8")));

      expect(json.frames).toBe(30);
      expect(json.sampledFrames).toBe(3);
      expect(json.rows.map((r) => `${r.kind} ${r.kind === "peer" ? "" : r.name.split(" ").pop()}`)).toEqual([
        "node dlib-resnet",
        "node dlib-resnet-int8",
        "detect+embed dlib-resnet",
        "detect+embed dlib-resnet-int8",
        "peer ",
      ]);
      const [fp32, int8] = json.rows;
      // the stages the agent's metrics time, and the decode pass
      expect(Object.keys(fp32?.stageMs ?? {})).toEqual(expect.arrayContaining(["decode", "detect", "quality"]));
      // accuracy is the built manifests' LFW figure: int8 reports its loss against fp32
      expect(fp32?.accuracy?.lossVsFp32Pt).toBe(0);
      expect(int8?.accuracy?.lossVsFp32Pt).toBeGreaterThanOrEqual(0);
      for (const r of json.rows) expect(r.vsPeer === undefined).toBe(r.kind === "peer");
      // the same frames through ours and the peer: per-frame times, and ours timed stage by stage
      for (const r of json.rows.slice(2)) expect(r.frameMs?.p50).toBeGreaterThan(0);
      expect(Object.keys(json.rows[2]?.stageMs ?? {})).toEqual(["detect", "track", "embed"]);
      expect(formatAgentBench(result)).toContain("× peer per face");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
