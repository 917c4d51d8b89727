/**
 * Edge bench (not a timed test): the whole node on the demo clip, fp32 and int8 embedder, against
 * @vladmandic/human on the same decoded frames in the same run.
 *
 * Three kinds of row:
 * - "node": the agent end to end (ffmpeg decode → detect → track → best shot → align → embed → seal → publish to
 *   a real in-process broker), every frame, no frame dropped. It embeds best shots only, as a node does.
 * - "detect+embed": the same frames, already decoded, through FacePipeline detecting and embedding EVERY face —
 *   the peer's job, so its per-face ratio to the peer is like for like.
 * - "peer": those frames through Human (BlazeFace + faceres, tfjs wasm), its own pipeline.
 * CPU is the process's own (onnxruntime threads included) plus its reaped children's (ffmpeg), so "per core" is
 * work per CPU-second whatever the load from other jobs on the machine.
 */
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import * as os from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type DetectedFace, defaultModelsDir, FacePipeline, loadManifest, type RawImage } from "@glance/models";
import { encodeMessage, generateSealingKeyPair, generateSigningKeyPair, topicFor } from "@glance/shared";
import { Aedes } from "aedes";
import { connectAsync } from "mqtt";
import { pino } from "pino";
// the peer lives with the model bench (models owns it); the package exports only its runtime API
import { loadHumanPeer } from "../../../models/src/bench/peer-human.ts";
import { type AgentStats, startAgent } from "../agent.ts";
import { IouTracker } from "../pipeline/track.ts";
import { openReplay } from "../sources/replay.ts";

export const benchResultsDir = resolve(fileURLToPath(import.meta.url), "../../../../bench-results");
export const demoClip = resolve(fileURLToPath(import.meta.url), "../../../../demo/people/video/hamilton-clip.mp4");

export interface AgentBenchOptions {
  video: string;
  width: number;
  /** only the first this-many frames of the clip (30 ≈ one second of the demo clip); whole clip when absent */
  frames?: number;
  /** fp32 first: ratios and accuracy loss are taken against it */
  embedders: string[];
  detector?: string;
  peer: boolean;
  /** detect+embed and peer rows run on every n-th decoded frame (the same ones), to keep the run short */
  peerStride: number;
  onProgress?: (what: string) => void;
}

export const defaultAgentBenchOptions: AgentBenchOptions = {
  video: demoClip,
  width: 640,
  embedders: ["dlib-resnet", "dlib-resnet-int8"],
  peer: true,
  peerStride: 3,
};

export interface Throughput {
  frames: number;
  faces: number;
  wallS: number;
  /** process + reaped children CPU seconds */
  cpuS: number;
  /** cpuS / wallS: cores kept busy */
  cores: number;
  framesPerS: number;
  facesPerS: number;
  framesPerCoreS: number;
  facesPerCoreS: number;
  msPerFrame: number;
  msPerFace: number;
}

export interface Accuracy {
  /** the manifest's LFW accuracy (0..1), as built by models:build */
  lfwAccuracy: number;
  /** percentage points below the fp32 embedder on LFW (0 for fp32 itself) */
  lossVsFp32Pt?: number;
  source: string;
}

export interface AgentBenchRow {
  kind: "node" | "detect+embed" | "peer";
  name: string;
  embedder: string;
  backend: string;
  throughput: Throughput;
  /**
   * per-stage wall ms: node rows, the agent's metrics of its last run (plus this run's decode pass);
   * detect+embed rows, detect per frame and align+embed per face over the interleaved frames
   */
  stageMs?: Record<string, { p50: number; p95: number }>;
  /** node rows: the agent's metrics of each run, in run order */
  stageMsPerRun?: Record<string, { p50: number; p95: number }>[];
  /** same-frames rows (detect+embed, peer): wall ms per frame; the p50 is the figure least moved by load spikes */
  frameMs?: { p50: number; p95: number };
  /** node rows: runs summed into throughput */
  runs?: number;
  /** node rows: the position of each of its runs among all node runs (1-based) */
  runOrder?: number[];
  templates?: number;
  tracks?: number;
  accuracy?: Accuracy;
  /** peer ms ÷ this row's ms (how many times faster than the peer); absent on the peer row */
  vsPeer?: { perFrame: number; perFace: number };
}

export interface AgentBenchResult {
  date: string;
  machine: string;
  video: string;
  width: number;
  height: number;
  frames: number;
  /** frames taken by the detect+embed and peer rows (every peerStride-th) */
  sampledFrames: number;
  peerStride: number;
  /** load average (1, 5, 15 min) at start and at end */
  loadAverage: { start: number[]; end: number[] };
  rows: AgentBenchRow[];
}

const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const loads = () => os.loadavg().map((x) => round(x));

/** CPU seconds of this process and of its children that have been waited for (ffmpeg), from /proc. */
function cpuSeconds(): number {
  try {
    // fields after the parenthesised command: state is [0]; utime, stime, cutime, cstime are [11..14]
    const stat = readFileSync("/proc/self/stat", "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(f[i] ?? 0), 0);
    return ticks / 100; // USER_HZ is 100 on Linux
  } catch {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  }
}

function throughput(frames: number, faces: number, wallS: number, cpuS: number): Throughput {
  const cpu = Math.max(cpuS, 0.01);
  return {
    frames,
    faces,
    wallS: round(wallS),
    cpuS: round(cpu),
    cores: round(cpu / wallS),
    framesPerS: round(frames / wallS, 1),
    facesPerS: round(faces / wallS, 1),
    framesPerCoreS: round(frames / cpu, 1),
    facesPerCoreS: round(faces / cpu, 1),
    msPerFrame: round((wallS * 1000) / Math.max(1, frames)),
    msPerFace: round((wallS * 1000) / Math.max(1, faces)),
  };
}

/** Decodes the clip once (ffmpeg, as the node does); the wait for each frame is the decode stage. */
async function decodeFrames(o: AgentBenchOptions): Promise<{ frames: RawImage[]; decodeMs: number[] }> {
  const source = openReplay({ path: o.video, width: o.width, pace: "every-frame" }, pino({ level: "silent" }));
  const frames: RawImage[] = [];
  const decodeMs: number[] = [];
  let last = performance.now();
  for await (const f of source) {
    const now = performance.now();
    decodeMs.push(now - last);
    frames.push(f.image);
    if (o.frames !== undefined && frames.length >= o.frames) break;
    last = performance.now();
  }
  await source.close();
  // the first wait includes starting ffmpeg
  return { frames, decodeMs: decodeMs.slice(1) };
}

function percentiles(ms: number[], digits = 2): { p50: number; p95: number } {
  const s = [...ms].sort((a, b) => a - b);
  const at = (q: number) => round(s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? 0, digits);
  return { p50: at(0.5), p95: at(0.95) };
}

/** The agent end to end on the clip (its own ffmpeg decode), against a real broker. */
async function runNode(o: AgentBenchOptions, embedder: string): Promise<{ stats: AgentStats; throughput: Throughput }> {
  const broker = await Aedes.createBroker();
  const server = createServer(broker.handle);
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const url = `mqtt://127.0.0.1:${(server.address() as { port: number }).port}`;
  const nodeId = "bench-node";
  const orchestrator = await connectAsync(url);
  await orchestrator.publishAsync(
    topicFor("desired", nodeId),
    encodeMessage("desired", {
      version: 1,
      storeId: "bench",
      privacyMode: "visitor",
      sealingKey: { kid: "bench", publicKey: generateSealingKeyPair().publicKey },
      templateIntervalMs: 5000,
      minFaceSizePx: 40,
    }),
    { qos: 1, retain: true },
  );
  const dataDir = await mkdtemp(join(os.tmpdir(), "glance-bench-"));
  try {
    const agent = await startAgent({
      nodeId,
      cameraId: "bench-cam",
      mqtt: { url, username: nodeId, password: "bench" },
      signingKey: generateSigningKeyPair(),
      source: { kind: "replay", path: o.video, width: o.width, pace: "every-frame" },
      models: { detector: o.detector, embedder },
      dataDir,
      logger: pino({ level: "warn" }),
    });
    // timed from here: models are loaded and warmed, ffmpeg and the broker are up
    const cpu0 = cpuSeconds();
    const t0 = performance.now();
    const limit = o.frames ?? Number.POSITIVE_INFINITY;
    const ended = once(agent.events, "source-ended");
    if (Number.isFinite(limit)) {
      // a slice: stop once the agent has taken that many frames
      await new Promise<void>((ok) => {
        const timer = setInterval(() => {
          if (agent.stats().frames >= limit) {
            clearInterval(timer);
            ok();
          }
        }, 5);
        void ended.then(() => {
          clearInterval(timer);
          ok();
        });
      });
    } else await ended;
    const wallS = (performance.now() - t0) / 1000;
    const stats = agent.stats();
    // ffmpeg's CPU counts once it is reaped, which stop() ensures
    await agent.stop();
    return { stats, throughput: throughput(stats.frames, stats.faces, wallS, cpuSeconds() - cpu0) };
  } finally {
    await orchestrator.endAsync();
    await new Promise<void>((ok) => broker.close(() => ok()));
    server.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** LFW accuracy from the built manifest; an int8 model's loss is its manifest's own, or against its fp32 source's. */
async function accuracyOf(name: string): Promise<(Accuracy & { precision: string }) | undefined> {
  try {
    const { manifest } = await loadManifest(defaultModelsDir(), name);
    const lfw = manifest.metrics.lfw as
      | { lfwAccuracy?: number; lossVsFp32Pt?: number; fp32?: { lfwAccuracy?: number } }
      | undefined;
    if (lfw?.lfwAccuracy === undefined) return undefined;
    const fp32 = lfw.fp32?.lfwAccuracy;
    const loss =
      manifest.precision === "fp32"
        ? 0
        : (lfw.lossVsFp32Pt ?? (fp32 !== undefined ? round((fp32 - lfw.lfwAccuracy) * 100) : undefined));
    return {
      lfwAccuracy: lfw.lfwAccuracy,
      lossVsFp32Pt: loss,
      precision: manifest.precision,
      source: `${manifest.name}@${manifest.version} manifest metrics.lfw`,
    };
  } catch {
    return undefined;
  }
}

export async function runAgentBench(o: AgentBenchOptions = defaultAgentBenchOptions): Promise<AgentBenchResult> {
  const loadStart = loads();
  o.onProgress?.("decoding the clip");
  const { frames, decodeMs } = await decodeFrames(o);
  const first = frames[0];
  if (!first) throw new Error(`no frames decoded from ${o.video}`);
  // the peer is ~20× slower: it and the like-for-like rows take every n-th frame, the same frames for both
  const sample = frames.filter((_, i) => i % Math.max(1, o.peerStride) === 0);
  const rows: AgentBenchRow[] = [];
  let fp32Accuracy: number | undefined;

  // node runs in ABBA order (fp32, int8, int8, fp32): a load change from other jobs during the run falls on both
  const order = [...o.embedders, ...[...o.embedders].reverse()];
  const runs = new Map<string, { stats: AgentStats; throughput: Throughput }[]>();
  for (const [i, embedder] of order.entries()) {
    o.onProgress?.(`node end to end, ${embedder} (run ${i + 1} of ${order.length})`);
    const list = runs.get(embedder) ?? [];
    list.push(await runNode(o, embedder));
    runs.set(embedder, list);
  }
  for (const embedder of o.embedders) {
    const list = runs.get(embedder) ?? [];
    const sum = (f: (t: Throughput) => number) => list.reduce((acc, r) => acc + f(r.throughput), 0);
    const found = await accuracyOf(embedder);
    if (found?.precision === "fp32") fp32Accuracy ??= found.lfwAccuracy;
    const accuracy = found && {
      lfwAccuracy: found.lfwAccuracy,
      lossVsFp32Pt: found.lossVsFp32Pt,
      source: found.source,
    };
    const last = list[list.length - 1]?.stats;
    rows.push({
      kind: "node",
      name: `glance node ${embedder}`,
      embedder,
      backend: "onnxruntime-node, 1 thread per model",
      throughput: throughput(
        sum((t) => t.frames),
        sum((t) => t.faces),
        sum((t) => t.wallS),
        sum((t) => t.cpuS),
      ),
      stageMs: { decode: percentiles(decodeMs), ...last?.stageMs },
      stageMsPerRun: list.map((r) => r.stats.stageMs),
      runs: list.length,
      runOrder: order.flatMap((e, i) => (e === embedder ? [i + 1] : [])),
      templates: last?.templates,
      tracks: last?.tracks,
      accuracy,
    });
  }

  // the same frames through ours (every face detected and embedded) and the peer, interleaved frame by frame
  type Contender = {
    row: Omit<AgentBenchRow, "throughput">;
    run: (f: RawImage) => Promise<number>;
    close: () => Promise<void> | void;
    wallMs: number;
    cpuUs: number;
    faces: number;
    frameMs: number[];
    detectMs?: number[];
    trackMs?: number[];
    embedMs?: number[];
  };
  const contenders: Contender[] = [];
  try {
    for (const embedder of o.embedders) {
      o.onProgress?.(`loading detect+embed, ${embedder}`);
      const p = await FacePipeline.load({ detector: o.detector, embedder, threads: 1 });
      const detectMs: number[] = [];
      const trackMs: number[] = [];
      const embedMs: number[] = [];
      // the node's tracker on the detections (it costs microseconds; timed because the agent's metrics do not)
      const tracker = new IouTracker<DetectedFace>();
      let ts = 0;
      contenders.push({
        row: {
          kind: "detect+embed",
          name: `glance detect+embed ${embedder}`,
          embedder: `${p.embedder.name}@${p.embedder.version} (${p.embedder.precision})`,
          backend: "onnxruntime-node, 1 thread",
          accuracy: rows.find((r) => r.kind === "node" && r.embedder === embedder)?.accuracy,
        },
        run: async (f) => {
          let t = performance.now();
          const found = await p.detect(f);
          detectMs.push(performance.now() - t);
          t = performance.now();
          ts += 100;
          tracker.update(found, ts);
          trackMs.push(performance.now() - t);
          for (const face of found) {
            t = performance.now();
            await p.embed(f, face);
            embedMs.push(performance.now() - t);
          }
          return found.length;
        },
        close: () => p.close(),
        wallMs: 0,
        cpuUs: 0,
        faces: 0,
        frameMs: [],
        detectMs,
        trackMs,
        embedMs,
      });
    }
    if (o.peer) {
      o.onProgress?.("loading the peer, @vladmandic/human");
      const peer = await loadHumanPeer();
      const acc = await accuracyOf("faceres");
      contenders.push({
        row: {
          kind: "peer",
          name: peer.name,
          embedder: "faceres (Human's own)",
          backend: peer.backend,
          accuracy: acc && {
            lfwAccuracy: acc.lfwAccuracy,
            lossVsFp32Pt: fp32Accuracy !== undefined ? round((fp32Accuracy - acc.lfwAccuracy) * 100) : undefined,
            source: `${acc.source} (faceres converted to ONNX, same LFW protocol)`,
          },
        },
        run: (f) => peer.run(f),
        close: () => peer.close(),
        wallMs: 0,
        cpuUs: 0,
        faces: 0,
        frameMs: [],
      });
    }
    for (const c of contenders) for (let i = 0; i < 3; i++) await c.run(first); // warm-up
    for (const c of contenders) {
      c.detectMs?.splice(0);
      c.trackMs?.splice(0);
      c.embedMs?.splice(0);
    }
    for (const [i, f] of sample.entries()) {
      if (i % 10 === 0) o.onProgress?.(`same frames, interleaved: ${i} of ${sample.length}`);
      // rotate who goes first, so none always runs right after the peer's long frame
      for (let k = 0; k < contenders.length; k++) {
        const c = contenders[(i + k) % contenders.length] as Contender;
        const cpu0 = process.cpuUsage();
        const t0 = performance.now();
        c.faces += await c.run(f);
        const ms = performance.now() - t0;
        c.wallMs += ms;
        c.frameMs.push(ms);
        const cpu = process.cpuUsage(cpu0);
        c.cpuUs += cpu.user + cpu.system;
      }
    }
  } finally {
    for (const c of contenders) await c.close();
  }
  for (const c of contenders)
    rows.push({
      ...c.row,
      throughput: throughput(sample.length, c.faces, c.wallMs / 1000, c.cpuUs / 1e6),
      frameMs: percentiles(c.frameMs),
      stageMs:
        c.detectMs && c.trackMs && c.embedMs
          ? { detect: percentiles(c.detectMs), track: percentiles(c.trackMs, 3), embed: percentiles(c.embedMs) }
          : undefined,
    });

  const pr = rows.find((r) => r.kind === "peer")?.throughput;
  if (pr)
    for (const r of rows)
      if (r.kind !== "peer")
        r.vsPeer = {
          perFrame: round(pr.msPerFrame / r.throughput.msPerFrame, 1),
          perFace: round(pr.msPerFace / r.throughput.msPerFace, 1),
        };

  return {
    date: new Date().toISOString(),
    machine: `${os.cpus()[0]?.model ?? "cpu"} × ${os.cpus().length}, ${os.platform()}/${os.arch()}, node ${process.version}`,
    video: o.video,
    width: first.width,
    height: first.height,
    frames: frames.length,
    sampledFrames: sample.length,
    peerStride: Math.max(1, o.peerStride),
    loadAverage: { start: loadStart, end: loads() },
    rows,
  };
}

export function formatAgentBench(r: AgentBenchResult): string {
  const l: string[] = [];
  l.push(
    `Edge bench ${r.date} — ${r.machine}`,
    `${r.video.split("/").pop()} at ${r.width}×${r.height}, ${r.frames} frames (node rows), every ${r.peerStride} → ${r.sampledFrames} frames (detect+embed and peer rows); load average at start ${r.loadAverage.start.join(" ")}, at end ${r.loadAverage.end.join(" ")}`,
    "",
    "| pipeline | frames | faces | wall s | cores | frames/s | faces/s | frames/core·s | faces/core·s | ms/frame | ms/face | × peer per frame | × peer per face | LFW acc | pt below glance fp32 |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  );
  for (const row of r.rows) {
    const t = row.throughput;
    const a = row.accuracy;
    l.push(
      `| ${row.name} | ${t.frames} | ${t.faces} | ${t.wallS} | ${t.cores} | ${t.framesPerS} | ${t.facesPerS} | ${t.framesPerCoreS} | ${t.facesPerCoreS} | ${t.msPerFrame} | ${t.msPerFace} | ${row.vsPeer ? `${row.vsPeer.perFrame}×` : ""} | ${row.vsPeer ? `${row.vsPeer.perFace}×` : ""} | ${a ? `${round(a.lfwAccuracy * 100)}%` : "?"} | ${a?.lossVsFp32Pt ?? "?"} |`,
    );
  }
  const same = r.rows.filter((x) => x.frameMs);
  const peerP50 = r.rows.find((x) => x.kind === "peer")?.frameMs?.p50;
  if (same.length > 0)
    l.push(
      "",
      `Same frames, wall ms per frame p50 / p95 (less moved by load spikes than the totals): ${same
        .map(
          (x) =>
            `${x.kind === "peer" ? "peer" : x.embedder} ${x.frameMs?.p50} / ${x.frameMs?.p95}${
              peerP50 && x.kind !== "peer" && x.frameMs
                ? ` (peer ÷ this at p50 ${round(peerP50 / x.frameMs.p50, 1)}×)`
                : ""
            }`,
        )
        .join("; ")}`,
    );
  // stage columns: each node run (the agent's own metrics), then the interleaved same-frames rows
  const short = (e: string) => (e.includes("int8") ? "int8" : "fp32");
  const cols: { label: string; ms: Record<string, { p50: number; p95: number }> }[] = [];
  for (const x of r.rows.filter((y) => y.kind === "node"))
    for (const [i, ms] of (x.stageMsPerRun ?? [x.stageMs ?? {}]).entries())
      cols.push({ label: `node ${short(x.embedder)} run #${x.runOrder?.[i] ?? i + 1}`, ms });
  for (const x of r.rows.filter((y) => y.kind === "detect+embed"))
    cols.push({ label: `same frames ${short(x.embedder)}`, ms: x.stageMs ?? {} });
  const decode = r.rows.find((x) => x.kind === "node")?.stageMs?.decode;
  const stages = [...new Set(cols.flatMap((c) => Object.keys(c.ms)))];
  if (cols.length > 0) {
    l.push(
      "",
      "Stages, wall ms p50 / p95 (node runs: the agent's metrics, embed = best shots only; same frames: detect and track per frame, align+embed per face)",
      decode ? `decode (ffmpeg, 640 px, one pass): ${decode.p50} / ${decode.p95}` : "",
      "",
      `| stage | ${cols.map((c) => c.label).join(" | ")} |`,
      `|---|${cols.map(() => "---|").join("")}`,
    );
    for (const st of stages)
      l.push(`| ${st} | ${cols.map((c) => (c.ms[st] ? `${c.ms[st].p50} / ${c.ms[st].p95}` : "")).join(" | ")} |`);
    const nodes = r.rows.filter((x) => x.kind === "node");
    l.push(
      "",
      `node rows sum ${nodes[0]?.runs ?? 1} runs each (order ${r.rows
        .filter((x) => x.kind === "node")
        .map((x) => short(x.embedder))
        .join(
          ", ",
        )}, then reversed); per run: ${nodes.map((x) => `${short(x.embedder)} ${x.tracks} tracks, ${x.templates} templates`).join("; ")}`,
    );
  }
  return l.join("\n");
}

export async function writeAgentBench(r: AgentBenchResult, dir = benchResultsDir): Promise<string> {
  await mkdir(dir, { recursive: true });
  const file = join(dir, `agent-${r.date.replace(/[:.]/g, "-")}.json`);
  await writeFile(file, `${JSON.stringify(r, null, 2)}\n`);
  return file;
}
