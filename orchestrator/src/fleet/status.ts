import { decodeMessage, filterFor, isGlanceError, parseTopic } from "@glance/shared";
import { and, eq, isNull } from "drizzle-orm";
import type { MqttClient } from "mqtt";
import type { Logger } from "pino";
import { matchesFilter } from "../broker/source.ts";
import type { Db } from "../db/client.ts";
import { nodes } from "../db/schema.ts";

/**
 * Reported state: each node keeps a retained status (and a last will saying offline); the orchestrator records
 * the latest one per registered node so technicians see which nodes are up, on which agent and models.
 */
export async function startStatusTracking(opts: { client: MqttClient; db: Db; logger: Logger }): Promise<() => void> {
  const log = opts.logger;
  const statusFilter = filterFor("status");
  const queues = new Map<string, Promise<void>>();
  const onMessage = (topic: string, payload: Buffer) => {
    if (!matchesFilter(statusFilter, topic)) return;
    let status: ReturnType<typeof decodeMessage<"status">>;
    try {
      status = decodeMessage("status", topic, payload);
    } catch (error) {
      log.warn(
        { code: isGlanceError(error) ? error.code : "INTERNAL", nodeId: parseTopic(topic)?.nodeId },
        "status ignored",
      );
      return;
    }
    // arrival order, not the node's ts, decides: a last will carries the ts of the connect it was registered at
    const write = () =>
      opts.db
        .update(nodes)
        .set({ reported: status, lastSeenAt: new Date() })
        .where(and(eq(nodes.id, status.nodeId), isNull(nodes.revokedAt)))
        .then(
          () => log.debug({ nodeId: status.nodeId, online: status.online }, "node status"),
          (error: unknown) => log.error({ err: error, nodeId: status.nodeId }, "node status not recorded"),
        );
    const next = (queues.get(status.nodeId) ?? Promise.resolve()).then(write);
    queues.set(status.nodeId, next);
    void next.then(() => {
      if (queues.get(status.nodeId) === next) queues.delete(status.nodeId);
    });
  };
  opts.client.on("message", onMessage);
  await opts.client.subscribeAsync(statusFilter, { qos: 1 });
  return () => opts.client.off("message", onMessage);
}
