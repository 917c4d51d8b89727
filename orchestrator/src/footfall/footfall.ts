import {
  type CoarseAttributes,
  decodeMessage,
  filterFor,
  isGlanceError,
  type NodeEvent,
  parseTopic,
} from "@glance/shared";
import { and, eq, gte, lt, sql } from "drizzle-orm";
import type { MqttClient } from "mqtt";
import type { Logger } from "pino";
import { matchesFilter } from "../broker/source.ts";
import type { Db } from "../db/client.ts";
import { footfall, footfallAttributes, nodes, stores } from "../db/schema.ts";

const HOUR_MS = 3_600_000;
/** QoS 1 may deliver an event twice; a track ended once. Remembered per instance, oldest forgotten first. */
const RECENT_TRACKS = 50_000;
/** an attribute value seen on fewer tracks than this in a report is not shown on its own (small-count suppression) */
export const MIN_ATTRIBUTE_COUNT = 5;

export interface FootfallMetrics {
  tracks: number;
  duplicates: number;
  ignored: Record<string, number>;
}

/**
 * Counts the anonymous track-ended events of every node: one track per person walking past, its dwell, and, where
 * the store opted in (stores.attributes), its coarse attributes. This is all a count-only store sends, and what a
 * visitor or members-only store adds to its recognitions. Nothing identifying is kept: not the track id, not the node's
 * own clock beyond the hour. Camera-down/up and stage restarts are logged for the fleet view.
 */
export async function startFootfall(opts: {
  client: MqttClient;
  db: Db;
  logger: Logger;
  /** default every node's event topic (external brokers: `sharedFilterFor("event")`, so one instance counts each) */
  filter?: string;
}): Promise<{ metrics: FootfallMetrics; idle(): Promise<void>; stop(): Promise<void> }> {
  const log = opts.logger;
  const eventFilter = filterFor("event");
  const metrics: FootfallMetrics = { tracks: 0, duplicates: 0, ignored: {} };
  const recent = new Set<string>();
  let chain = Promise.resolve();

  const ignore = (code: string, nodeId: string | undefined, message: string) => {
    metrics.ignored[code] = (metrics.ignored[code] ?? 0) + 1;
    log.warn({ code, nodeId }, `node event ignored: ${message}`);
  };

  const count = async (event: NodeEvent) => {
    const [node] = await opts.db
      .select({ storeId: nodes.storeId, revokedAt: nodes.revokedAt, attributes: stores.attributes })
      .from(nodes)
      .innerJoin(stores, eq(stores.id, nodes.storeId))
      .where(eq(nodes.id, event.nodeId));
    if (!node) return ignore("NODE_UNKNOWN", event.nodeId, "node is not registered");
    if (node.revokedAt) return ignore("NODE_REVOKED", event.nodeId, "node is revoked");
    const key = `${event.nodeId}/${event.trackId ?? ""}`;
    if (recent.has(key)) {
      metrics.duplicates += 1;
      return;
    }
    const hour = new Date(Math.floor(event.ts / HOUR_MS) * HOUR_MS);
    const dwellMs = event.dwellMs ?? 0;
    // a node that sends attributes its store did not opt into gets them dropped here
    const attributes = node.attributes ? event.attributes : undefined;
    await opts.db.transaction(async (tx) => {
      await tx
        .insert(footfall)
        .values({ storeId: node.storeId, cameraId: event.cameraId, hour, tracks: 1, dwellMs })
        .onConflictDoUpdate({
          target: [footfall.storeId, footfall.cameraId, footfall.hour],
          set: { tracks: sql`${footfall.tracks} + 1`, dwellMs: sql`${footfall.dwellMs} + ${dwellMs}` },
        });
      if (attributes) {
        await tx
          .insert(footfallAttributes)
          .values(attributeRows(attributes).map((a) => ({ storeId: node.storeId, hour, ...a, tracks: 1 })))
          .onConflictDoUpdate({
            target: [
              footfallAttributes.storeId,
              footfallAttributes.hour,
              footfallAttributes.attribute,
              footfallAttributes.value,
            ],
            set: { tracks: sql`${footfallAttributes.tracks} + 1` },
          });
      }
    });
    recent.add(key);
    if (recent.size > RECENT_TRACKS) recent.delete(recent.values().next().value as string);
    metrics.tracks += 1;
  };

  const onMessage = (topic: string, payload: Buffer) => {
    if (!matchesFilter(eventFilter, topic)) return;
    let event: NodeEvent;
    try {
      event = decodeMessage("event", topic, payload);
    } catch (error) {
      const code = isGlanceError(error) ? error.code : "INTERNAL";
      return ignore(code, parseTopic(topic)?.nodeId, isGlanceError(error) ? error.message : "unreadable");
    }
    if (event.kind !== "track-ended") {
      log.info(
        { nodeId: event.nodeId, cameraId: event.cameraId, kind: event.kind, detail: event.detail },
        "node event",
      );
      return;
    }
    chain = chain
      .then(() => count(event))
      .catch((error: unknown) => log.error({ err: error, nodeId: event.nodeId }, "footfall not recorded"));
  };

  opts.client.on("message", onMessage);
  await opts.client.subscribeAsync(opts.filter ?? eventFilter, { qos: 1 });
  return {
    metrics,
    idle: () => chain,
    async stop() {
      opts.client.off("message", onMessage);
      await chain;
    },
  };
}

function attributeRows(a: CoarseAttributes) {
  return [
    { attribute: "ageBand" as const, value: a.ageBand },
    { attribute: "gender" as const, value: a.gender },
    { attribute: "emotion" as const, value: a.emotion },
  ];
}

export interface FootfallReport {
  storeId: string;
  days: { day: string; tracks: number; avgDwellMs: number; byCamera: Record<string, number> }[];
  /** per attribute, tracks per value over the whole range; values under MIN_ATTRIBUTE_COUNT are only in `suppressed` */
  attributes: Record<"ageBand" | "gender" | "emotion", { counts: Record<string, number>; suppressed: number }>;
}

/** Footfall of one store per UTC day within [since, until), with its coarse attributes where the store opted in. */
export async function footfallReport(db: Db, storeId: string, since: Date, until: Date): Promise<FootfallReport> {
  const rows = await db
    .select()
    .from(footfall)
    .where(and(eq(footfall.storeId, storeId), gte(footfall.hour, since), lt(footfall.hour, until)))
    .orderBy(footfall.hour);
  const days = new Map<string, { tracks: number; dwellMs: number; byCamera: Record<string, number> }>();
  for (const r of rows) {
    const day = r.hour.toISOString().slice(0, 10);
    const d = days.get(day) ?? { tracks: 0, dwellMs: 0, byCamera: {} };
    d.tracks += r.tracks;
    d.dwellMs += r.dwellMs;
    d.byCamera[r.cameraId] = (d.byCamera[r.cameraId] ?? 0) + r.tracks;
    days.set(day, d);
  }
  const totals = await db
    .select({
      attribute: footfallAttributes.attribute,
      value: footfallAttributes.value,
      tracks: sql<number>`sum(${footfallAttributes.tracks})::int`,
    })
    .from(footfallAttributes)
    .where(
      and(
        eq(footfallAttributes.storeId, storeId),
        gte(footfallAttributes.hour, since),
        lt(footfallAttributes.hour, until),
      ),
    )
    .groupBy(footfallAttributes.attribute, footfallAttributes.value);
  const attributes: FootfallReport["attributes"] = {
    ageBand: { counts: {}, suppressed: 0 },
    gender: { counts: {}, suppressed: 0 },
    emotion: { counts: {}, suppressed: 0 },
  };
  for (const t of totals) {
    const a = attributes[t.attribute];
    if (t.tracks < MIN_ATTRIBUTE_COUNT) a.suppressed += t.tracks;
    else a.counts[t.value] = t.tracks;
  }
  return {
    storeId,
    days: [...days].map(([day, d]) => ({
      day,
      tracks: d.tracks,
      avgDwellMs: Math.round(d.dwellMs / d.tracks),
      byCamera: d.byCamera,
    })),
    attributes,
  };
}
