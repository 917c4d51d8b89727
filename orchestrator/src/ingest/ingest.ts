import type { EventEmitter } from "node:events";
import { type ErrorCode, filterFor, isGlanceError } from "@glance/shared";
import type { MqttClient } from "mqtt";
import type { Logger } from "pino";
import { type AcceptedTemplate, type OpenTemplateDeps, openTemplate, topicNodeId } from "./open-template.ts";

export interface IngestMetrics {
  accepted: number;
  rejected: Partial<Record<ErrorCode, number>>;
}

export interface Rejection {
  code: ErrorCode;
  nodeId?: string;
}

export interface IngestOptions {
  client: MqttClient;
  deps: OpenTemplateDeps;
  events: EventEmitter;
  logger: Logger;
  /** subscription filter; default every node's template topic (external brokers: `sharedFilterFor("template")`) */
  filter?: string;
  /** runs after a template is accepted; its failures are logged, never fatal */
  onAccepted(template: AcceptedTemplate): Promise<void>;
}

export interface Ingest {
  metrics: IngestMetrics;
  /** resolves when everything received so far has been processed */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Subscribes to every node's template topic and runs each message through `openTemplate`. Messages of one node are
 * processed in arrival order (sequence numbers must only go up); different nodes proceed in parallel. A bad message
 * is counted, logged without its payload and emitted as "rejection"; it never stops the loop.
 */
/** MQTT single-level wildcard match (`+`), enough for the contract's filters. */
export function matchesFilter(filter: string, topic: string): boolean {
  const f = filter.split("/");
  const t = topic.split("/");
  return f.length === t.length && f.every((part, i) => part === "+" || part === t[i]);
}

export async function startIngest(opts: IngestOptions): Promise<Ingest> {
  const templateFilter = filterFor("template");
  const log = opts.logger;
  const metrics: IngestMetrics = { accepted: 0, rejected: {} };
  const queues = new Map<string, Promise<void>>();

  const reject = (code: ErrorCode, nodeId: string | undefined, message: string) => {
    metrics.rejected[code] = (metrics.rejected[code] ?? 0) + 1;
    log.warn({ code, nodeId }, `template rejected: ${message}`);
    const event: Rejection = nodeId === undefined ? { code } : { code, nodeId };
    opts.events.emit("rejection", event);
  };

  const handle = async (topic: string, payload: Buffer) => {
    const nodeId = topicNodeId(topic);
    let accepted: AcceptedTemplate;
    try {
      accepted = await openTemplate(opts.deps, topic, payload);
    } catch (error) {
      if (isGlanceError(error)) reject(error.code, nodeId, error.message);
      else {
        log.error({ err: error, nodeId }, "template check failed unexpectedly");
        reject("INTERNAL", nodeId, "unexpected error");
      }
      return;
    }
    metrics.accepted += 1;
    try {
      await opts.onAccepted(accepted);
    } catch (error) {
      log.error({ err: error, nodeId }, "recognition failed for an accepted template");
    }
  };

  const onMessage = (topic: string, payload: Buffer) => {
    // the orchestrator's client carries other subscriptions too (status)
    if (!matchesFilter(templateFilter, topic)) return;
    const key = topicNodeId(topic) ?? "";
    const next = (queues.get(key) ?? Promise.resolve()).then(() => handle(topic, payload));
    queues.set(key, next);
    void next.finally(() => {
      if (queues.get(key) === next) queues.delete(key);
    });
  };

  opts.client.on("message", onMessage);
  await opts.client.subscribeAsync(opts.filter ?? templateFilter, { qos: 1 });
  log.info("ingest subscribed to node templates");

  const idle = async () => {
    while (queues.size > 0) await Promise.allSettled([...queues.values()]);
  };

  return {
    metrics,
    idle,
    async stop() {
      opts.client.off("message", onMessage);
      await idle();
    },
  };
}
