import { z } from "zod";
import { GlanceError } from "./errors.ts";

/**
 * The one MQTT contract. Every topic, payload schema, QoS, retain flag and publisher role is declared here;
 * topic builders, parsers, payload validation on both ends and the broker ACL are all derived from it.
 * MQTT 3.1.1 semantics (aedes): correlation ids live in payloads.
 */

const Id = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, "ids are 1-64 of A-Z a-z 0-9 _ -");
const B64 = z.string().regex(/^[A-Za-z0-9_-]*$/, "base64url");

export const PrivacyMode = z.enum(["count-only", "visitor", "members-only"]);
export type PrivacyMode = z.infer<typeof PrivacyMode>;

/**
 * The authenticated (not encrypted) part of a sealed template: the AES-GCM AAD of the v2 envelope (crypto.ts). v1
 * templates (one signature per message) are no longer accepted; the edge gallery still uses the v1 envelope.
 */
export const TemplateHeader = z.object({
  v: z.literal(2),
  nodeId: Id,
  /** strictly increasing per node; the orchestrator rejects anything it has already accepted */
  seq: z.number().int().nonnegative(),
  ts: z.number().int().positive(),
  /** embedding space id from the embedder manifest */
  space: z.string().min(1).max(128),
  /** id of the orchestrator sealing key the template is encrypted to */
  kid: z.string().min(1).max(64),
  cameraId: Id,
  trackId: z.string().min(1).max(64),
  /** best-shot quality score in [0, 1] */
  quality: z.number().min(0).max(1),
});
export type TemplateHeader = z.infer<typeof TemplateHeader>;

/**
 * The node session a template is sealed under (`SessionProof` in crypto.ts): ephemeral X25519 public key, validity
 * window in epoch ms (notBefore, notAfter) and the node's Ed25519 signature over the session statement.
 */
export const TemplateSession = z
  .object({
    epk: B64.length(43),
    nb: z.number().int().nonnegative(),
    na: z.number().int().positive(),
    sig: B64.length(86),
  })
  .strict();
export type TemplateSession = z.infer<typeof TemplateSession>;

export const SealedTemplate = TemplateHeader.extend({
  session: TemplateSession,
  iv: B64.length(16),
  ct: B64.min(22).max(8192),
}).strict();
export type SealedTemplate = z.infer<typeof SealedTemplate>;

export function templateHeader(t: SealedTemplate): TemplateHeader {
  const { session: _s, iv: _i, ct: _c, ...header } = t;
  return header;
}

export const NodeStatus = z.object({
  nodeId: Id,
  online: z.boolean(),
  ts: z.number().int(),
  agentVersion: z.string().optional(),
  models: z.record(z.string(), z.string()).optional(),
  privacyMode: PrivacyMode.optional(),
  stats: z.record(z.string(), z.number()).optional(),
  /**
   * X25519 key the node receives its edge gallery on (derived from its identity key), with the node's Ed25519
   * signature over it (`attestSealingKey`): the orchestrator checks it against the key it registered for the node.
   */
  sealingKey: z.object({ publicKey: B64.length(43), sig: B64.length(86) }).optional(),
  /** the members-only edge gallery the node holds (version, member count), or why the last one was refused */
  edgeGallery: z
    .object({
      version: z.number().int().nonnegative().optional(),
      members: z.number().int().nonnegative(),
      refused: z.string().max(256).optional(),
    })
    .optional(),
});
export type NodeStatus = z.infer<typeof NodeStatus>;

/**
 * Coarse face attributes a node may attach to an anonymous track-ended event, only when the store's desired state
 * opts in (DesiredState.attributes). Bands and labels, never an age in years, an identity or an embedding.
 */
export const AgeBand = z.enum(["0-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"]);
export type AgeBand = z.infer<typeof AgeBand>;
export const Gender = z.enum(["female", "male"]);
export type Gender = z.infer<typeof Gender>;
/** FER2013's seven classes */
export const Emotion = z.enum(["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]);
export type Emotion = z.infer<typeof Emotion>;
const Confidence = z.number().min(0).max(1);
export const CoarseAttributes = z
  .object({
    ageBand: AgeBand,
    ageBandConfidence: Confidence,
    gender: Gender,
    genderConfidence: Confidence,
    /** the most likely emotion over the faces sampled */
    emotion: Emotion,
    emotionConfidence: Confidence,
    /** how many faces of the track were averaged */
    samples: z.number().int().positive(),
  })
  .strict();
export type CoarseAttributes = z.infer<typeof CoarseAttributes>;

/** Anonymous events: counts and dwell, never biometric. */
export const NodeEvent = z.object({
  nodeId: Id,
  ts: z.number().int(),
  /** stage-restarted: the node's watchdog restarted a pipeline stage that stopped making progress (detail names it) */
  kind: z.enum(["track-ended", "camera-down", "camera-up", "stage-restarted"]),
  cameraId: Id,
  trackId: z.string().max(64).optional(),
  dwellMs: z.number().int().nonnegative().optional(),
  detail: z.string().max(256).optional(),
  /** track-ended only, and only when the store opts in (DesiredState.attributes) */
  attributes: CoarseAttributes.optional(),
});
export type NodeEvent = z.infer<typeof NodeEvent>;

export const DesiredState = z.object({
  version: z.number().int().nonnegative(),
  storeId: Id,
  privacyMode: PrivacyMode,
  sealingKey: z.object({ kid: z.string().min(1).max(64), publicKey: B64.length(43) }),
  /** at most one template per track per interval */
  templateIntervalMs: z.number().int().positive(),
  minFaceSizePx: z.number().int().positive(),
  /**
   * Opt-in (absent = off): estimate coarse attributes (age band, gender, emotion) of each track and attach them to
   * its anonymous track-ended event. Off, the node does not even load the attributes model.
   */
  attributes: z.boolean().optional(),
  /** Ed25519 key (derived from the sealing key) the orchestrator signs this node's edge gallery with */
  gallerySigningKey: B64.length(43).optional(),
});
export type DesiredState = z.infer<typeof DesiredState>;

export const Command = z.object({
  id: z.string().min(1).max(64),
  ts: z.number().int(),
  kind: z.enum(["erase-member", "restart-pipeline"]),
  personId: z.string().max(64).optional(),
});
export type Command = z.infer<typeof Command>;

export const CommandAck = z.object({
  commandId: z.string().min(1).max(64),
  nodeId: Id,
  ts: z.number().int(),
  ok: z.boolean(),
  error: z.string().max(512).optional(),
});
export type CommandAck = z.infer<typeof CommandAck>;

/**
 * The authenticated (not encrypted) part of a members-only edge gallery: which node and store it is for, which node
 * key it is sealed to, its version (the node refuses anything older than what it holds) and the match threshold.
 */
export const EdgeGalleryHeader = z.object({
  v: z.literal(1),
  nodeId: Id,
  storeId: Id,
  /** increases with every change; a node never goes back to an older gallery (an erased member stays erased) */
  version: z.number().int().nonnegative(),
  ts: z.number().int().positive(),
  space: z.string().min(1).max(128),
  /** cosine threshold a probe must reach to count as a member */
  threshold: z.number().min(-1).max(1),
  members: z.number().int().nonnegative(),
  /** the node sealing key (NodeStatus.sealingKey.publicKey) it is sealed to */
  recipient: B64.length(43),
});
export type EdgeGalleryHeader = z.infer<typeof EdgeGalleryHeader>;

/**
 * 4 MiB: about 18,000 templates at 128-d (dlib-resnet) or 5,000 at 512-d with uuid person ids. The orchestrator
 * publishes galleries into its embedded broker directly (the 64 KiB packet limit guards what clients send); through an
 * external broker a gallery must also fit that broker's packet limit (see orchestrator/src/edge).
 */
export const EDGE_GALLERY_MAX_BYTES = 4 * 1024 * 1024;

export const EdgeGallery = EdgeGalleryHeader.extend({
  epk: B64.length(43),
  iv: B64.length(16),
  ct: B64.min(22).max(EDGE_GALLERY_MAX_BYTES),
  sig: B64.length(86),
}).strict();
export type EdgeGallery = z.infer<typeof EdgeGallery>;

export function edgeGalleryHeader(g: EdgeGallery): EdgeGalleryHeader {
  const { epk: _e, iv: _i, ct: _c, sig: _s, ...header } = g;
  return header;
}

export type Role = "node" | "orchestrator";

interface Entry {
  topic: string;
  schema: z.ZodType;
  qos: 0 | 1;
  retain: boolean;
  from: Role;
  maxBytes: number;
}

export const contract = {
  template: {
    topic: "glance/v1/node/{nodeId}/template",
    schema: SealedTemplate,
    qos: 1,
    retain: false,
    from: "node",
    maxBytes: 4096,
  },
  status: {
    topic: "glance/v1/node/{nodeId}/status",
    schema: NodeStatus,
    qos: 1,
    retain: true,
    from: "node",
    maxBytes: 8192,
  },
  event: {
    topic: "glance/v1/node/{nodeId}/event",
    schema: NodeEvent,
    qos: 1,
    retain: false,
    from: "node",
    maxBytes: 2048,
  },
  ack: {
    topic: "glance/v1/node/{nodeId}/ack",
    schema: CommandAck,
    qos: 1,
    retain: false,
    from: "node",
    maxBytes: 2048,
  },
  desired: {
    topic: "glance/v1/node/{nodeId}/desired",
    schema: DesiredState,
    qos: 1,
    retain: true,
    from: "orchestrator",
    maxBytes: 8192,
  },
  command: {
    topic: "glance/v1/node/{nodeId}/command",
    schema: Command,
    qos: 1,
    retain: false,
    from: "orchestrator",
    maxBytes: 4096,
  },
  gallery: {
    topic: "glance/v1/node/{nodeId}/gallery",
    schema: EdgeGallery,
    qos: 1,
    retain: true,
    from: "orchestrator",
    maxBytes: EDGE_GALLERY_MAX_BYTES,
  },
} as const satisfies Record<string, Entry>;

export type MessageName = keyof typeof contract;
export type Payload<N extends MessageName> = z.infer<(typeof contract)[N]["schema"]>;
export const messageNames = Object.keys(contract) as MessageName[];

/** Topic for one node. */
export function topicFor(name: MessageName, nodeId: string): string {
  Id.parse(nodeId);
  return contract[name].topic.replace("{nodeId}", nodeId);
}

/** Subscription filter for one message across all nodes (`+` for the node id). */
export function filterFor(name: MessageName, nodeId = "+"): string {
  return contract[name].topic.replace("{nodeId}", nodeId);
}

/** Shared-subscription filter, so N orchestrator instances each receive every message once. */
export function sharedFilterFor(name: MessageName, group = "orchestrators"): string {
  return `$share/${group}/${filterFor(name)}`;
}

export function parseTopic(topic: string): { name: MessageName; nodeId: string } | undefined {
  const parts = topic.split("/");
  if (parts.length !== 5 || parts[0] !== "glance" || parts[1] !== "v1" || parts[2] !== "node") return undefined;
  const nodeId = parts[3] as string;
  const name = messageNames.find((n) => contract[n].topic.endsWith(`/${parts[4]}`));
  if (!name || !Id.safeParse(nodeId).success) return undefined;
  return { name, nodeId };
}

/**
 * Validate an incoming payload against the contract. Throws GlanceError with PAYLOAD_TOO_LARGE,
 * PAYLOAD_NOT_JSON, PAYLOAD_INVALID, TOPIC_UNKNOWN or TOPIC_MISMATCH.
 */
export function decodeMessage<N extends MessageName>(name: N, topic: string, payload: Uint8Array): Payload<N> {
  const entry = contract[name];
  if (payload.byteLength > entry.maxBytes) {
    throw new GlanceError(
      "PAYLOAD_TOO_LARGE",
      `${name} payload is ${payload.byteLength} bytes; the limit is ${entry.maxBytes}.`,
    );
  }
  const parsedTopic = parseTopic(topic);
  if (!parsedTopic || parsedTopic.name !== name)
    throw new GlanceError("TOPIC_UNKNOWN", `Topic is not a ${name} topic.`);
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(payload).toString("utf8"));
  } catch {
    throw new GlanceError("PAYLOAD_NOT_JSON", `${name} payload is not JSON.`);
  }
  const result = entry.schema.safeParse(json);
  if (!result.success) {
    throw new GlanceError("PAYLOAD_INVALID", `${name} payload does not match the contract.`, {
      issues: result.error.issues.slice(0, 5).map((i) => `${i.path.join(".")}: ${i.message}`),
    });
  }
  const data = result.data as Payload<N>;
  const claimed = (data as { nodeId?: string }).nodeId;
  if (claimed !== undefined && claimed !== parsedTopic.nodeId) {
    throw new GlanceError(
      "TOPIC_MISMATCH",
      `${name} payload names node ${claimed} but was published on ${parsedTopic.nodeId}'s topic.`,
    );
  }
  return data;
}

export function encodeMessage<N extends MessageName>(name: N, payload: Payload<N>): Buffer {
  return Buffer.from(JSON.stringify(contract[name].schema.parse(payload)));
}

export type Identity = { role: "orchestrator" } | { role: "node"; nodeId: string };

/** ACL derived from the contract: a node publishes only its own node-originated topics. */
export function mayPublish(who: Identity, topic: string): boolean {
  const t = parseTopic(topic);
  if (!t) return false;
  const entry = contract[t.name];
  if (who.role === "orchestrator") return entry.from === "orchestrator";
  return entry.from === "node" && t.nodeId === who.nodeId;
}

/** ACL derived from the contract: a node reads only what the orchestrator sends to it. */
export function maySubscribe(who: Identity, filter: string): boolean {
  if (who.role === "orchestrator") return filter.startsWith("glance/v1/") || filter.startsWith("$share/");
  const t = parseTopic(filter);
  return !!t && t.nodeId === who.nodeId && contract[t.name].from === "orchestrator";
}
