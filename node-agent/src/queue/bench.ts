/**
 * Store-and-forward throughput on this machine's disk and a local broker:
 *   npx tsx node-agent/src/queue/bench.ts [--count 2000]
 * append: templates queued while offline (each fdatasync'ed); drain: the backlog delivered after reconnect.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { NodeLink } from "../link.ts";
import { Outbox } from "./outbox.ts";
import { sealedTemplate, startBroker } from "./test-helpers.ts";

const { values } = parseArgs({ options: { count: { type: "string", default: "2000" } } });
const count = Number(values.count);
const log = pino({ level: "silent" });
const nodeId = "bench-queue";
const dir = await mkdtemp(join(tmpdir(), "glance-queue-bench-"));
const templates = Array.from({ length: count }, (_, seq) => sealedTemplate(nodeId, seq));

const offline = new Outbox(dir, { connected: false, sendEncoded: () => new Promise(() => {}), on() {}, off() {} }, log);
let start = performance.now();
await Promise.all(templates.map((t) => offline.enqueue("template", t)));
const appendS = (performance.now() - start) / 1000;
const bytes = offline.stats().bytes;
await offline.close();

const received: number[] = [];
const broker = await startBroker(0, received);
const link = new NodeLink(
  { nodeId, mqtt: { url: `mqtt://127.0.0.1:${broker.port}`, username: nodeId, password: "x" }, status: () => ({}) },
  log,
);
start = performance.now();
const outbox = new Outbox(dir, link, log);
while (outbox.stats().depth > 0) await new Promise((r) => setTimeout(r, 10));
const drainS = (performance.now() - start) / 1000;
const inOrder = received.every((seq, i) => seq === i) && received.length === count;
await outbox.close();
await link.close();
await broker.stop();
await rm(dir, { recursive: true, force: true });

console.log(`${count} sealed templates, ${(bytes / count).toFixed(0)} bytes each on disk (frame included)`);
console.log(`append (fdatasync each): ${(count / appendS).toFixed(0)} /s`);
console.log(`drain to a local broker (connect included): ${(count / drainS).toFixed(0)} /s, in order once: ${inOrder}`);
