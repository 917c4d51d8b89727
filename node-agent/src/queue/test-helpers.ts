import { createServer, type Server } from "node:net";
import {
  encodeEmbedding,
  generateSealingKeyPair,
  generateSigningKeyPair,
  type NodeEvent,
  parseTopic,
  type SealedTemplate,
  type TemplateHeader,
  TemplateSealer,
} from "@glance/shared";
import { Aedes } from "aedes";

/** A real aedes broker on 127.0.0.1 that records every template it receives from a client, in arrival order. */
export interface TestBroker {
  port: number;
  /** template seqs as the broker received them (duplicates included) */
  received: number[];
  /** events as the broker received them */
  events: NodeEvent[];
  stop(): Promise<void>;
}

export async function startBroker(port = 0, received: number[] = []): Promise<TestBroker> {
  const broker = await Aedes.createBroker();
  const events: NodeEvent[] = [];
  broker.on("publish", (packet, client) => {
    const name = client ? parseTopic(packet.topic)?.name : undefined;
    if (name === "template") received.push((JSON.parse(packet.payload.toString()) as SealedTemplate).seq);
    if (name === "event") events.push(JSON.parse(packet.payload.toString()) as NodeEvent);
  });
  const server: Server = createServer(broker.handle);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  return {
    port: (server.address() as { port: number }).port,
    received,
    events,
    async stop() {
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const sealing = generateSealingKeyPair();
const signing = generateSigningKeyPair();
const sealers = new Map<string, TemplateSealer>();
const sealerFor = (nodeId: string): TemplateSealer => {
  const sealer = sealers.get(nodeId) ?? new TemplateSealer({ nodeId, signingKey: signing });
  sealers.set(nodeId, sealer);
  return sealer;
};

/** A genuinely sealed template (random 512-d embedding) with the given sequence number. */
export function sealedTemplate(nodeId: string, seq: number): SealedTemplate {
  const header: TemplateHeader = {
    v: 2,
    nodeId,
    seq,
    ts: Date.now(),
    space: "test-space@1",
    kid: "k1",
    cameraId: "cam-1",
    trackId: `t-${seq}`,
    quality: 0.9,
  };
  const v = new Float32Array(512).map(() => Math.random() - 0.5);
  const norm = Math.hypot(...v);
  return { ...header, ...sealerFor(nodeId).seal(encodeEmbedding(v.map((x) => x / norm)), header, sealing.publicKey) };
}
