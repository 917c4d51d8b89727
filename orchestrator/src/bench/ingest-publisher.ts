/**
 * Worker thread for `bench:ingest`: the simulated camera nodes. Each node is its own MQTT client and publishes
 * templates sealed exactly as node-agent does: one `TemplateSealer` (one session) per simulated node. Sealing happens before a phase starts
 * (a real node seals on its own hardware), so the orchestrator's core is measured, not ours.
 */
import { parentPort, workerData } from "node:worker_threads";
import {
  encodeEmbedding,
  encodeMessage,
  type KeyPair,
  type SealedTemplate,
  type TemplateHeader,
  TemplateSealer,
  topicFor,
} from "@glance/shared";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";

// harness.ts is not imported here: it pulls in onnxruntime-node, whose native addon cannot load in a worker thread

function sealTemplate(args: {
  node: { nodeId: string; cameraId: string };
  sealer: TemplateSealer;
  seq: number;
  embedding: Float32Array;
  recipient: { kid: string; publicKey: string };
  space: string;
}): SealedTemplate {
  const header: TemplateHeader = {
    v: 2,
    nodeId: args.node.nodeId,
    seq: args.seq,
    ts: Date.now(),
    space: args.space,
    kid: args.recipient.kid,
    cameraId: args.node.cameraId,
    trackId: `t${args.seq}`,
    quality: 0.9,
  };
  return { ...header, ...args.sealer.seal(encodeEmbedding(args.embedding), header, args.recipient.publicKey) };
}

export interface PublisherData {
  nodes: {
    nodeId: string;
    cameraId: string;
    /**
     * where and how the node connects (the broker URL and mqtt.js connect options): user name and password to the
     * embedded broker, or its certificate, key and `glance-node-<nodeId>` client id over mutual TLS to mosquitto
     */
    mqtt: { url: string } & IClientOptions;
    signingKey: KeyPair;
  }[];
  recipient: { kid: string; publicKey: string };
  space: string;
  /** probe embeddings, cycled through */
  probes: Float32Array[];
  /** epoch ms of each publish, [phase offset + node × perNode + i] */
  published: SharedArrayBuffer;
}

export type PhaseRequest =
  | { kind: "burst"; perNode: number; offset: number }
  | {
      kind: "paced";
      perNode: number;
      offset: number;
      /** templates per second, all nodes together */
      rate: number;
    };

const data = workerData as PublisherData;
const published = new Float64Array(data.published);
const seqs = data.nodes.map(() => 0);
const sealers = data.nodes.map((n) => new TemplateSealer({ nodeId: n.nodeId, signingKey: n.signingKey }));
let probe = 0;
const clients: MqttClient[] = await Promise.all(
  data.nodes.map(({ mqtt: { url, ...options } }) =>
    mqtt.connectAsync(url, {
      ...options,
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
    }),
  ),
);
const now = () => performance.timeOrigin + performance.now();

function sealPhase(perNode: number): Buffer[][] {
  return data.nodes.map((node, n) =>
    Array.from({ length: perNode }, () => {
      seqs[n] = (seqs[n] as number) + 1;
      const embedding = data.probes[probe++ % data.probes.length] as Float32Array;
      const sealed = sealTemplate({
        node,
        sealer: sealers[n] as TemplateSealer,
        seq: seqs[n] as number,
        embedding,
        recipient: data.recipient,
        space: data.space,
      });
      return Buffer.from(encodeMessage("template", sealed));
    }),
  );
}

/** Resolves at the parent's "go": it measures from then on (the profiler and its counters start first). */
const go = () =>
  new Promise<void>((resolve) => {
    const on = (m: { kind: string }) => {
      if (m.kind !== "go") return;
      parentPort?.off("message", on);
      resolve();
    };
    parentPort?.on("message", on);
  });

parentPort?.on("message", async (req: PhaseRequest | { kind: "close" } | { kind: "go" }) => {
  if (req.kind === "go") return;
  if (req.kind === "close") {
    await Promise.all(clients.map((c) => c.endAsync()));
    parentPort?.postMessage({ kind: "closed" });
    return;
  }
  const payloads = sealPhase(req.perNode);
  const started = go();
  parentPort?.postMessage({ kind: "sealed" });
  await started;
  const sends: Promise<unknown>[] = [];
  const send = (n: number, i: number) => {
    const client = clients[n] as MqttClient;
    published[req.offset + n * req.perNode + i] = now();
    sends.push(
      client.publishAsync(topicFor("template", data.nodes[n]?.nodeId as string), payloads[n]?.[i] as Buffer, {
        qos: 1,
      }),
    );
  };
  if (req.kind === "burst") {
    for (let i = 0; i < req.perNode; i++) for (let n = 0; n < clients.length; n++) send(n, i);
  } else {
    // round-robin over nodes at a steady overall rate, in 10 ms ticks
    const total = req.perNode * clients.length;
    const start = now();
    let sent = 0;
    await new Promise<void>((resolve) => {
      const tick = setInterval(() => {
        const due = Math.min(total, Math.floor(((now() - start) / 1000) * req.rate));
        for (; sent < due; sent++) send(sent % clients.length, Math.floor(sent / clients.length));
        if (sent >= total) {
          clearInterval(tick);
          resolve();
        }
      }, 10);
    });
  }
  await Promise.all(sends);
  parentPort?.postMessage({ kind: "published" });
});
parentPort?.postMessage({ kind: "ready" });
