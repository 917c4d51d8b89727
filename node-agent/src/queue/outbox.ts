import { EventEmitter } from "node:events";
import { encodeMessage, type MessageName, messageNames, type Payload } from "@glance/shared";
import type { Logger } from "pino";
import { DiskQueue, type DiskQueueOptions } from "./disk-queue.ts";

/** What the outbox needs from the MQTT session (NodeLink). */
export interface Transport {
  readonly connected: boolean;
  /** resolves once the broker has acknowledged the message (PUBACK for QoS 1) */
  sendEncoded(name: MessageName, bytes: Buffer): Promise<number>;
  on(event: "connect", listener: () => void): unknown;
  off(event: "connect", listener: () => void): unknown;
}

export interface OutboxStats {
  /** messages on disk waiting for the broker */
  depth: number;
  bytes: number;
  /** messages dropped, oldest first, because the queue was full */
  dropped: number;
  /** torn records found and dropped after a crash */
  torn: number;
  /** messages the disk refused (full disk, I/O error) */
  failed: number;
}

export type Queued = "template" | "event";

/** Messages acknowledged by the broker but not yet taken off disk; more means faster catch-up on a slow link. */
const WINDOW = 16;
const RETRY_MS = 1000;
const CLOSE_GRACE_MS = 2000;

/**
 * Store-and-forward for what a node must not lose: each message is on disk (fdatasync) before it is sent, sent in
 * queue order with QoS 1 while the broker is reachable, and taken off disk only after its PUBACK. A node offline
 * for a day delivers its backlog in order on reconnect, and after a restart or a power cut. Delivery is at least
 * once: a crash between PUBACK and the head write sends a few messages again, and their sequence numbers (given
 * at seal time) let the orchestrator drop the repeats.
 */
export class Outbox extends EventEmitter<{ delivered: [{ name: Queued; payload: Buffer }] }> {
  readonly #queue: DiskQueue;
  readonly #link: Transport;
  readonly #log: Logger;
  readonly #inflight = new Map<number, Promise<void>>();
  readonly #acked = new Set<number>();
  #failed = 0;
  #closing = false;
  #nudge: (() => void) | undefined;
  /** counts wake-ups, so one that lands while the loop is busy is not missed */
  #pokes = 0;
  readonly #running: Promise<void>;
  readonly #onConnect = () => this.#wake();

  constructor(dir: string, link: Transport, log: Logger, options: Omit<DiskQueueOptions, "log"> = {}) {
    super();
    this.#log = log;
    this.#queue = DiskQueue.open(dir, { ...options, log });
    this.#link = link;
    link.on("connect", this.#onConnect);
    if (this.#queue.depth > 0) log.info({ depth: this.#queue.depth }, "backlog from an earlier run will be delivered");
    this.#running = this.#forward().catch((err: Error) => log.error({ err: err.message }, "outbox stopped"));
  }

  /**
   * Queues a contract message; returns at once (the disk write completes in the background, in call order), so
   * a slow SD card or an absent broker never stalls the camera pipeline. Resolves when it is on disk.
   */
  enqueue<N extends Queued>(name: N, payload: Payload<N>): Promise<void> {
    if (this.#closing) {
      this.#failed++;
      this.#log.warn({ name }, "message after the outbox closed was not queued");
      return Promise.resolve();
    }
    const bytes = encodeMessage(name, payload);
    const written = this.#queue.append(name, bytes).then(
      () => this.#wake(),
      (err: Error) => {
        this.#failed++;
        this.#log.error({ err: err.message, name }, "message not queued: check free space on the data disk");
      },
    );
    return written;
  }

  stats(): OutboxStats {
    const q = this.#queue;
    return { depth: q.depth, bytes: q.bytes, dropped: q.dropped, torn: q.torn, failed: this.#failed };
  }

  /** Stops sending, gives messages in flight a moment for their PUBACK, and saves the queue head. */
  async close(): Promise<void> {
    if (this.#closing) return this.#running;
    this.#closing = true;
    this.#link.off("connect", this.#onConnect);
    this.#wake();
    await this.#running;
    await Promise.race([
      Promise.allSettled(this.#inflight.values()),
      new Promise((r) => setTimeout(r, CLOSE_GRACE_MS).unref()),
    ]);
    await this.#queue.close();
  }

  #wake(): void {
    this.#pokes++;
    const n = this.#nudge;
    this.#nudge = undefined;
    n?.();
  }

  /** Waits for the next wake-up after `seen`. */
  #sleep(seen: number): Promise<void> {
    if (this.#pokes !== seen) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.#nudge = resolve;
    });
  }

  async #forward(): Promise<void> {
    let cursor = this.#queue.head;
    let retry = false;
    while (!this.#closing) {
      const seen = this.#pokes;
      if (!this.#link.connected) {
        await this.#sleep(seen);
        continue;
      }
      if (retry) {
        // a publish failed: let the rest of the window settle, then resend from the oldest unacknowledged
        // (every wait here also ends on close, so stopping never hangs on a broker that is gone)
        if (this.#inflight.size > 0) {
          await Promise.race([...this.#inflight.values(), this.#sleep(seen)]);
          continue;
        }
        await Promise.race([new Promise((r) => setTimeout(r, RETRY_MS).unref()), this.#sleep(seen)]);
        cursor = this.#queue.head;
        retry = false;
        continue;
      }
      if (this.#inflight.size >= WINDOW) {
        await Promise.race([...this.#inflight.values(), this.#sleep(seen)]);
        continue;
      }
      cursor = Math.max(cursor, this.#queue.head);
      while (this.#acked.has(cursor)) cursor++;
      const record = await this.#queue.read(cursor);
      if (!record) {
        await this.#sleep(seen);
        continue;
      }
      cursor = record.id + 1;
      const name = record.name as Queued;
      if (!messageNames.includes(name)) {
        this.#log.warn({ name }, "queue: unknown message kind skipped");
        this.#ack(record.id);
        continue;
      }
      const sent = this.#link.sendEncoded(name, record.payload).then(
        () => {
          this.#ack(record.id);
          this.emit("delivered", { name, payload: record.payload });
        },
        (err: Error) => {
          if (!this.#closing) this.#log.warn({ err: err.message }, "queued message not delivered; will retry");
          retry = true;
          this.#wake();
        },
      );
      this.#inflight.set(
        record.id,
        sent.finally(() => this.#inflight.delete(record.id)),
      );
    }
  }

  /** Acks may come out of order; the queue head moves over the contiguous acknowledged run only. */
  #ack(id: number): void {
    this.#acked.add(id);
    // ackUpTo(h + 1) may jump further (over a gap left by a lost segment)
    while (this.#acked.has(this.#queue.head)) this.#queue.ackUpTo(this.#queue.head + 1);
    for (const a of this.#acked) if (a < this.#queue.head) this.#acked.delete(a);
    this.#wake();
  }
}
