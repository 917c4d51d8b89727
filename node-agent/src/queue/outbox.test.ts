import { spawn } from "node:child_process";
import { appendFileSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { NodeLink } from "../link.ts";
import { Outbox } from "./outbox.ts";
import { sealedTemplate, startBroker, type TestBroker } from "./test-helpers.ts";

const log = pino({ level: "silent" });
const ROOT = new URL("../../../", import.meta.url).pathname;
const CHILD = new URL("./enqueue-child.fixture.ts", import.meta.url).pathname;

function linkTo(port: number, nodeId: string): NodeLink {
  return new NodeLink(
    { nodeId, mqtt: { url: `mqtt://127.0.0.1:${port}`, username: nodeId, password: "x" }, status: () => ({}) },
    log,
  );
}

async function until(check: () => boolean, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

describe("store-and-forward", () => {
  it("templates made while the broker is down are delivered once and in order when it comes back", async () => {
    const nodeId = "node-offline";
    const received: number[] = [];
    let broker: TestBroker = await startBroker(0, received);
    const link = linkTo(broker.port, nodeId);
    const outbox = new Outbox(await mkdtemp(join(tmpdir(), "glance-outbox-")), link, log);

    for (let seq = 0; seq < 20; seq++) void outbox.enqueue("template", sealedTemplate(nodeId, seq));
    await until(() => received.length === 20, "the first 20 templates");
    await until(() => outbox.stats().depth === 0, "the queue to empty");

    await broker.stop();
    await until(() => !link.connected, "the node to notice");
    for (let seq = 20; seq < 60; seq++) void outbox.enqueue("template", sealedTemplate(nodeId, seq));
    await until(() => outbox.stats().depth === 40, "40 templates on disk");
    await new Promise((r) => setTimeout(r, 500));
    expect(received).toHaveLength(20);

    broker = await startBroker(broker.port, received);
    await until(() => received.length >= 60 && outbox.stats().depth === 0, "the backlog");
    await new Promise((r) => setTimeout(r, 300));
    expect(received).toEqual(range(0, 60));
    expect(outbox.stats()).toMatchObject({ depth: 0, dropped: 0, torn: 0, failed: 0 });

    await outbox.close();
    await link.close();
    await broker.stop();
  }, 40_000);

  it("a restarted node delivers what was queued before it stopped, and nothing it had already delivered", async () => {
    const nodeId = "node-restart";
    const dir = await mkdtemp(join(tmpdir(), "glance-outbox-"));
    const received: number[] = [];
    const broker = await startBroker(0, received);

    const first = linkTo(broker.port, nodeId);
    const before = new Outbox(dir, first, log);
    for (let seq = 0; seq < 10; seq++) void before.enqueue("template", sealedTemplate(nodeId, seq));
    await until(() => received.length === 10 && before.stats().depth === 0, "the first run's templates");
    await before.close();
    await first.close();

    // the second run queues while it cannot reach the broker yet
    const offline = new Outbox(
      dir,
      { connected: false, sendEncoded: () => new Promise(() => {}), on() {}, off() {} },
      log,
    );
    for (let seq = 10; seq < 15; seq++) await offline.enqueue("template", sealedTemplate(nodeId, seq));
    await offline.close();

    const second = linkTo(broker.port, nodeId);
    const after = new Outbox(dir, second, log);
    expect(after.stats().depth).toBe(5);
    await until(() => after.stats().depth === 0, "the backlog");
    await new Promise((r) => setTimeout(r, 300));
    expect(received).toEqual(range(0, 15));
    await after.close();
    await second.close();
    await broker.stop();
  }, 30_000);

  it("a node killed while queueing (SIGKILL) delivers its whole backlog, in order, after restart", async () => {
    const nodeId = "node-killed";
    const dir = await mkdtemp(join(tmpdir(), "glance-outbox-"));
    // one process (no tsx wrapper), so SIGKILL kills the writer itself
    const child = spawn(process.execPath, ["--import", "tsx", CHILD, dir, nodeId], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "inherit"],
    });
    let durable = -1;
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      for (const m of chunk.matchAll(/queued (\d+)/g)) durable = Number(m[1]);
    });
    await until(() => durable >= 150, "the child to queue 150 templates");
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
    expect(() => process.kill(child.pid as number, 0)).toThrow();
    expect(readdirSync(dir).filter((n) => n.endsWith(".seg")).length).toBeGreaterThan(1);

    const received: number[] = [];
    const broker = await startBroker(0, received);
    const link = linkTo(broker.port, nodeId);
    const outbox = new Outbox(dir, link, log);
    const backlog = outbox.stats().depth;
    // every template reported durable is there; at most the ones written after the last report are extra
    expect(backlog).toBeGreaterThanOrEqual(durable + 1);
    await until(() => outbox.stats().depth === 0, "the backlog");
    await new Promise((r) => setTimeout(r, 300));
    expect(received).toEqual(range(0, backlog));
    await outbox.close();
    await link.close();
    await broker.stop();
  }, 60_000);

  it("a record torn by a power cut is dropped and counted; the records before it are delivered", async () => {
    const nodeId = "node-torn";
    const dir = await mkdtemp(join(tmpdir(), "glance-outbox-"));
    const offline = new Outbox(
      dir,
      { connected: false, sendEncoded: () => new Promise(() => {}), on() {}, off() {} },
      log,
    );
    for (let seq = 0; seq < 5; seq++) await offline.enqueue("template", sealedTemplate(nodeId, seq));
    await offline.close();
    const [segment] = readdirSync(dir).filter((n) => n.endsWith(".seg"));
    const file = join(dir, segment as string);
    // the first 300 bytes of a sixth record: its header says 1200 bytes follow
    const whole = readFileSync(file);
    const record = whole.subarray((whole.length / 5) * 4);
    appendFileSync(file, record.subarray(0, 300));

    const received: number[] = [];
    const broker = await startBroker(0, received);
    const link = linkTo(broker.port, nodeId);
    const outbox = new Outbox(dir, link, log);
    expect(outbox.stats()).toMatchObject({ depth: 5, torn: 1 });
    void outbox.enqueue("template", sealedTemplate(nodeId, 5));
    await until(() => received.length === 6 && outbox.stats().depth === 0, "the records and the new one");
    expect(received).toEqual(range(0, 6));
    await outbox.close();
    await link.close();
    await broker.stop();
  }, 30_000);

  it("a record whose checksum does not match is dropped with the rest of its segment, not delivered", async () => {
    const nodeId = "node-bitrot";
    const dir = await mkdtemp(join(tmpdir(), "glance-outbox-"));
    const offline = new Outbox(
      dir,
      { connected: false, sendEncoded: () => new Promise(() => {}), on() {}, off() {} },
      log,
    );
    for (let seq = 0; seq < 4; seq++) await offline.enqueue("template", sealedTemplate(nodeId, seq));
    await offline.close();
    const file = join(dir, readdirSync(dir).find((n) => n.endsWith(".seg")) as string);
    const bytes = readFileSync(file);
    const at = Math.floor((bytes.length / 4) * 3.5); // inside the last record's body
    bytes[at] = (bytes[at] as number) ^ 0xff;
    writeFileSync(file, bytes);

    const reopened = new Outbox(
      dir,
      { connected: false, sendEncoded: () => new Promise(() => {}), on() {}, off() {} },
      log,
    );
    expect(reopened.stats()).toMatchObject({ depth: 3, torn: 1 });
    await reopened.close();
  });

  it("a full queue drops the oldest messages, counts them, and keeps the newest in order", async () => {
    const nodeId = "node-full";
    const dir = await mkdtemp(join(tmpdir(), "glance-outbox-"));
    const size = Buffer.byteLength(JSON.stringify(sealedTemplate(nodeId, 0))) + 20;
    const options = { maxBytes: size * 10, segmentBytes: size * 3 };
    const offline = new Outbox(
      dir,
      { connected: false, sendEncoded: () => new Promise(() => {}), on() {}, off() {} },
      log,
      options,
    );
    for (let seq = 0; seq < 35; seq++) void offline.enqueue("template", sealedTemplate(nodeId, seq));
    await offline.enqueue("template", sealedTemplate(nodeId, 35));
    const { depth, dropped } = offline.stats();
    expect(depth).toBeLessThanOrEqual(10);
    expect(depth).toBeGreaterThanOrEqual(9);
    expect(dropped).toBe(36 - depth);
    await offline.close();
    // delivered segments are deleted, so the disk holds about maxBytes, not everything ever queued
    expect(readdirSync(dir).filter((n) => n.endsWith(".seg")).length).toBeLessThanOrEqual(5);

    const received: number[] = [];
    const broker = await startBroker(0, received);
    const link = linkTo(broker.port, nodeId);
    const outbox = new Outbox(dir, link, log, options);
    await until(() => outbox.stats().depth === 0, "the backlog");
    await new Promise((r) => setTimeout(r, 300));
    expect(received).toEqual(range(36 - depth, 36));
    await outbox.close();
    await link.close();
    await broker.stop();
  }, 30_000);

  it("a segment file lost from the middle of the queue does not stop the rest from being delivered and deleted", async () => {
    const nodeId = "node-gap";
    const dir = await mkdtemp(join(tmpdir(), "glance-outbox-"));
    const size = Buffer.byteLength(JSON.stringify(sealedTemplate(nodeId, 0))) + 20;
    const options = { segmentBytes: Math.floor(size * 2.5) }; // three records a segment
    const offline = new Outbox(
      dir,
      { connected: false, sendEncoded: () => new Promise(() => {}), on() {}, off() {} },
      log,
      options,
    );
    for (let seq = 0; seq < 12; seq++) await offline.enqueue("template", sealedTemplate(nodeId, seq));
    await offline.close();
    const segments = readdirSync(dir)
      .filter((n) => n.endsWith(".seg"))
      .sort();
    expect(segments).toHaveLength(4);
    unlinkSync(join(dir, segments[1] as string)); // seqs 3, 4, 5

    const received: number[] = [];
    const broker = await startBroker(0, received);
    const link = linkTo(broker.port, nodeId);
    const outbox = new Outbox(dir, link, log, options);
    expect(outbox.stats().depth).toBe(9);
    await until(() => outbox.stats().depth === 0, "the backlog");
    await outbox.close();
    expect(received).toEqual([0, 1, 2, 6, 7, 8, 9, 10, 11]);
    // everything delivered is gone from disk, apart from the segment still open for writing
    expect(readdirSync(dir).filter((n) => n.endsWith(".seg")).length).toBeLessThanOrEqual(1);
    await link.close();
    await broker.stop();
  }, 30_000);
});
