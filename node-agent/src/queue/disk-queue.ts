import {
  closeSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  unlinkSync,
} from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { GlanceError } from "@glance/shared";
import type { Logger } from "pino";

/**
 * A bounded, crash-safe FIFO on disk for messages waiting for the broker.
 *
 * Layout: `dir/<20-digit id of its first record>.seg` segment files, append-only, each record framed as
 * `u32 length | u32 crc32(body) | body` (big-endian), body = `u8 name length | name | payload`; `dir/head` holds the
 * id of the oldest record not yet acknowledged. Every append is fdatasync'ed before it counts as queued. A record
 * torn by a power cut (short, or a crc that does not match) ends its segment: it and anything after it in that
 * segment are dropped on open and the file is truncated there, so the queue always opens.
 *
 * Ids are consecutive across segments and restarts (a segment's name is its first id), which is what lets the
 * head be a single number. Full means live bytes over `maxBytes`: the oldest records are dropped (and counted).
 */
export interface DiskQueueOptions {
  /** live (undelivered) bytes kept at most; the oldest records go first beyond it. Default 256 MiB. */
  maxBytes?: number;
  /** a segment is closed and a new one started past this size. Default 1 MiB. */
  segmentBytes?: number;
  log?: Logger;
}

export interface QueuedRecord {
  id: number;
  name: string;
  payload: Buffer;
}

interface Segment {
  base: number;
  file: string;
  /** byte offset of each record's frame in the file */
  offsets: number[];
  /** body length of each record */
  lengths: number[];
  size: number;
}

const HEADER = 8;
/** no queued message comes near this; a larger length field is corruption */
const MAX_RECORD = 1 << 20;
const HEAD_FILE = "head";
const SEGMENT = /^(\d{20})\.seg$/;

export class DiskQueue {
  readonly #dir: string;
  readonly #maxBytes: number;
  readonly #segmentBytes: number;
  readonly #log: Logger | undefined;
  readonly #segments: Segment[];
  #head: number;
  #liveBytes = 0;
  #dropped = 0;
  #torn = 0;
  #writer: { segment: Segment; fh: FileHandle } | undefined;
  #reader: { segment: Segment; fh: FileHandle } | undefined;
  /** appends and head writes run one at a time, in call order */
  #chain: Promise<unknown> = Promise.resolve();
  #headDirty = false;
  #closed = false;
  #headTimer: NodeJS.Timeout | undefined;

  private constructor(dir: string, o: DiskQueueOptions, segments: Segment[], head: number, torn: number) {
    this.#dir = dir;
    this.#maxBytes = o.maxBytes ?? 256 * 1024 * 1024;
    this.#segmentBytes = o.segmentBytes ?? 1024 * 1024;
    this.#log = o.log;
    this.#segments = segments;
    this.#head = head;
    this.#torn = torn;
    for (const s of segments) {
      for (let i = 0; i < s.offsets.length; i++)
        if (s.base + i >= head) this.#liveBytes += (s.lengths[i] ?? 0) + HEADER;
    }
  }

  /** Opens (or creates) the queue in `dir`, repairing a torn tail. */
  static open(dir: string, o: DiskQueueOptions = {}): DiskQueue {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    let head = 0;
    try {
      const parsed = Number(readFileSync(join(dir, HEAD_FILE), "utf8").trim());
      if (Number.isSafeInteger(parsed) && parsed >= 0) head = parsed;
      else
        o.log?.warn("queue head file is damaged: delivering everything still on disk (the orchestrator drops repeats)");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
    const names = readdirSync(dir)
      .filter((n) => SEGMENT.test(n))
      .sort();
    const segments: Segment[] = [];
    let torn = 0;
    for (const name of names) {
      const file = join(dir, name);
      const base = Number(SEGMENT.exec(name)?.[1]);
      const { segment, tornAt } = scan(file, base);
      if (tornAt !== undefined) {
        torn++;
        o.log?.warn({ segment: name, at: tornAt }, "queue: torn record after a crash dropped");
        truncate(file, tornAt);
      }
      const previous = segments.at(-1);
      if (previous && previous.base + previous.offsets.length !== base) {
        // a gap means a segment went missing (deleted by hand?): ids stay as they are, nothing is renumbered
        o.log?.warn({ segment: name }, "queue: segments are not contiguous");
      }
      if (segment.offsets.length === 0 || base + segment.offsets.length <= head) {
        // empty after repair, or fully delivered before the crash: nothing to keep
        unlinkSync(file);
        continue;
      }
      segments.push(segment);
    }
    if (segments.length > 0) head = Math.max(head, (segments[0] as Segment).base);
    return new DiskQueue(dir, o, segments, head, torn);
  }

  /** records waiting for delivery */
  get depth(): number {
    let n = 0;
    for (const s of this.#segments) n += Math.max(0, s.base + s.offsets.length - Math.max(s.base, this.#head));
    return n;
  }

  get bytes(): number {
    return this.#liveBytes;
  }

  /** records dropped because the queue was full, since open */
  get dropped(): number {
    return this.#dropped;
  }

  /** torn records found (and dropped) on open */
  get torn(): number {
    return this.#torn;
  }

  /** id of the oldest undelivered record */
  get head(): number {
    return this.#head;
  }

  /** id the next appended record will get */
  #end(): number {
    const last = this.#segments.at(-1);
    return last ? last.base + last.offsets.length : this.#head;
  }

  /**
   * Appends a message; resolves once it is on disk (fdatasync). Appends keep their call order without the caller
   * awaiting, so a publisher may fire and forget.
   */
  append(name: string, payload: Uint8Array): Promise<number> {
    const nameBytes = Buffer.from(name, "utf8");
    if (nameBytes.length > 255) throw new GlanceError("INTERNAL", "queue record names are at most 255 bytes");
    const body = Buffer.concat([Buffer.from([nameBytes.length]), nameBytes, payload]);
    if (body.length > MAX_RECORD) throw new GlanceError("PAYLOAD_TOO_LARGE", `queue record is ${body.length} bytes`);
    return this.#serial(async () => {
      if (this.#closed) throw new GlanceError("INTERNAL", "queue is closed");
      const frame = Buffer.alloc(HEADER + body.length);
      frame.writeUInt32BE(body.length, 0);
      frame.writeUInt32BE(crc32(body), 4);
      body.copy(frame, HEADER);
      this.#makeRoom(frame.length);
      const writer = await this.#writable();
      const { segment, fh } = writer;
      await fh.write(frame, 0, frame.length, segment.size);
      await fh.datasync();
      const id = segment.base + segment.offsets.length;
      segment.offsets.push(segment.size);
      segment.lengths.push(body.length);
      segment.size += frame.length;
      this.#liveBytes += frame.length;
      return id;
    });
  }

  /** The record with this id, or the next one still queued after it; undefined when there is none (yet). */
  async read(from: number): Promise<QueuedRecord | undefined> {
    let id = Math.max(from, this.#head);
    // skips a gap left by a missing segment file
    const segment = this.#segments.find((s) => id < s.base + s.offsets.length);
    if (!segment) return undefined;
    id = Math.max(id, segment.base);
    const i = id - segment.base;
    const offset = segment.offsets[i] as number;
    const length = segment.lengths[i] as number;
    if (this.#reader?.segment !== segment) {
      await this.#reader?.fh.close();
      this.#reader = { segment, fh: await open(segment.file, "r") };
    }
    const body = Buffer.alloc(length);
    await this.#reader.fh.read(body, 0, length, offset + HEADER);
    const nameLength = body[0] as number;
    return {
      id,
      name: body.subarray(1, 1 + nameLength).toString("utf8"),
      payload: body.subarray(1 + nameLength),
    };
  }

  /**
   * Every record below `id` has been delivered: the head moves there and fully delivered segments are deleted.
   * The head is written to disk lazily (`flush`); after a crash a few delivered records may be sent again, and
   * their sequence numbers let the orchestrator drop them.
   */
  ackUpTo(id: number): void {
    if (id <= this.#head) return;
    this.#advance(Math.min(id, this.#end()));
    this.#scheduleHeadWrite();
  }

  /** Writes the head now. */
  flush(): Promise<void> {
    return this.#serial(async () => this.#writeHead());
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await this.flush();
    this.#closed = true;
    clearTimeout(this.#headTimer);
    await this.#writer?.fh.close();
    await this.#reader?.fh.close();
    this.#writer = undefined;
    this.#reader = undefined;
  }

  #serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(work, work);
    this.#chain = run.catch(() => {});
    return run;
  }

  #segmentOf(id: number): Segment | undefined {
    for (const s of this.#segments) if (id >= s.base && id < s.base + s.offsets.length) return s;
    return undefined;
  }

  /** Drops the oldest records until `incoming` more bytes fit. */
  #makeRoom(incoming: number): void {
    let to = this.#head;
    let bytes = this.#liveBytes;
    const end = this.#end();
    while (bytes + incoming > this.#maxBytes && to < end) {
      const s = this.#segmentOf(to);
      if (s) bytes -= (s.lengths[to - s.base] ?? 0) + HEADER;
      to++;
    }
    if (to === this.#head) return;
    const n = to - this.#head;
    this.#dropped += n;
    this.#log?.warn({ dropped: n, totalDropped: this.#dropped }, "queue full: oldest messages dropped");
    this.#advance(to);
    this.#scheduleHeadWrite();
  }

  #advance(to: number): void {
    for (const seg of this.#segments) {
      for (let id = Math.max(this.#head, seg.base); id < Math.min(to, seg.base + seg.offsets.length); id++) {
        this.#liveBytes -= (seg.lengths[id - seg.base] ?? 0) + HEADER;
      }
    }
    // a gap between segments (one lost or deleted by hand) holds no records: the head skips it
    const next = this.#segments.find((seg) => to < seg.base + seg.offsets.length);
    this.#head = next ? Math.max(to, next.base) : to;
    this.#headDirty = true;
    // fully delivered segments go, except the one being written
    while (this.#segments.length > 0) {
      const s = this.#segments[0] as Segment;
      if (s.base + s.offsets.length > to || s === this.#writer?.segment) break;
      this.#segments.shift();
      if (this.#reader?.segment === s) {
        const fh = this.#reader.fh;
        this.#reader = undefined;
        void fh.close().catch(() => {});
      }
      // the head is written before the file goes, so a crash in between cannot resurrect it with an old head
      void this.#serial(async () => {
        await this.#writeHead();
        unlinkSync(s.file);
      }).catch((err: Error) => this.#log?.warn({ err: err.message }, "queue: cannot delete a delivered segment"));
    }
  }

  #scheduleHeadWrite(): void {
    if (this.#headTimer || this.#closed) return;
    this.#headTimer = setTimeout(() => {
      this.#headTimer = undefined;
      void this.flush().catch((err: Error) => this.#log?.warn({ err: err.message }, "queue: head not saved"));
    }, 200);
    this.#headTimer.unref();
  }

  async #writeHead(): Promise<void> {
    if (!this.#headDirty) return;
    this.#headDirty = false;
    const tmp = join(this.#dir, `${HEAD_FILE}.tmp`);
    const fh = await open(tmp, "w", 0o600);
    try {
      await fh.writeFile(String(this.#head));
      await fh.datasync();
    } finally {
      await fh.close();
    }
    renameSync(tmp, join(this.#dir, HEAD_FILE));
  }

  async #writable(): Promise<{ segment: Segment; fh: FileHandle }> {
    const current = this.#writer;
    if (current && current.segment.size < this.#segmentBytes) return current;
    if (current) await current.fh.close();
    const last = this.#segments.at(-1);
    // reopen the tail segment after a restart while it has room; otherwise start a new one
    let segment: Segment;
    if (!current && last && last.size < this.#segmentBytes) {
      segment = last;
    } else {
      const base = this.#end();
      segment = {
        base,
        file: join(this.#dir, `${String(base).padStart(20, "0")}.seg`),
        offsets: [],
        lengths: [],
        size: 0,
      };
      this.#segments.push(segment);
    }
    const fh = await open(segment.file, segment.size === 0 ? "w" : "r+", 0o600);
    if (segment.size === 0) syncDir(this.#dir);
    this.#writer = { segment, fh };
    return this.#writer;
  }
}

/** Reads a segment's records; `tornAt` is the offset of the first bad frame, if any. */
function scan(file: string, base: number): { segment: Segment; tornAt: number | undefined } {
  const data = readFileSync(file);
  const segment: Segment = { base, file, offsets: [], lengths: [], size: 0 };
  let at = 0;
  while (at < data.length) {
    if (data.length - at < HEADER) break;
    const length = data.readUInt32BE(at);
    if (length === 0 || length > MAX_RECORD || data.length - at - HEADER < length) break;
    const body = data.subarray(at + HEADER, at + HEADER + length);
    if (crc32(body) !== data.readUInt32BE(at + 4) || 1 + (body[0] as number) > length) break;
    segment.offsets.push(at);
    segment.lengths.push(length);
    at += HEADER + length;
  }
  segment.size = at;
  return { segment, tornAt: at < data.length ? at : undefined };
}

function truncate(file: string, at: number): void {
  const fd = openSync(file, "r+");
  try {
    // ftruncate + fsync: the repaired length must be durable before new records are appended after it
    ftruncateSync(fd, at);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // some filesystems refuse fsync on a directory; the file's own fsync still holds its data
  }
}
