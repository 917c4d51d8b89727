import {
  decodeEmbedding,
  decodeMessage,
  GlanceError,
  type KeyPair,
  open,
  parseTopic,
  type TemplateHeader,
  templateHeader,
} from "@glance/shared";
import { and, eq, isNull, lt, or } from "drizzle-orm";
import type { Db } from "../db/client.ts";
import { nodes } from "../db/schema.ts";

export interface AcceptedTemplate {
  header: TemplateHeader;
  /** L2-normalised; lives in memory only for matching, never logged or stored */
  embedding: Float32Array;
  node: { id: string; storeId: string };
}

export interface OpenTemplateDeps {
  db: Db;
  sealingKey: KeyPair & { kid: string };
  /** the gallery's embedding space: templates from any other embedder cannot be compared */
  space: string;
}

/**
 * Everything a template must survive before it is matched, cheapest and least trusting first:
 * contract (size, JSON, schema, topic) → known node → sealing key id → signature → decryption → replay → space →
 * embedding codec. Throws GlanceError with the code of the first check that fails.
 */
export async function openTemplate(
  deps: OpenTemplateDeps,
  topic: string,
  payload: Uint8Array,
): Promise<AcceptedTemplate> {
  const sealed = decodeMessage("template", topic, payload);
  const header = templateHeader(sealed);

  const [node] = await deps.db.select().from(nodes).where(eq(nodes.id, header.nodeId)).limit(1);
  if (!node)
    throw new GlanceError("NODE_UNKNOWN", `Node ${header.nodeId} is not registered; register it with POST /api/nodes.`);
  if (node.revokedAt) throw new GlanceError("NODE_REVOKED", `Node ${header.nodeId} has been revoked.`);
  if (header.kid !== deps.sealingKey.kid) {
    throw new GlanceError(
      "KEY_UNKNOWN",
      `Template is sealed to key ${header.kid}; this orchestrator's key is ${deps.sealingKey.kid}.`,
    );
  }

  // open() checks the signature before it decrypts anything
  const plaintext = open(sealed, header, deps.sealingKey, node.signingPublicKey);

  // Compare-and-set in one statement, so concurrent orchestrators (or a retried delivery) cannot both accept a seq.
  const advanced = await deps.db
    .update(nodes)
    .set({ lastSeq: header.seq })
    .where(and(eq(nodes.id, node.id), or(isNull(nodes.lastSeq), lt(nodes.lastSeq, header.seq))))
    .returning({ id: nodes.id });
  if (advanced.length === 0) {
    throw new GlanceError(
      "REPLAYED_SEQUENCE",
      `Sequence ${header.seq} from node ${node.id} is not newer than the last accepted one.`,
    );
  }

  if (header.space !== deps.space) {
    throw new GlanceError(
      "SPACE_UNKNOWN",
      `Template space ${header.space} is not the gallery's space ${deps.space}; run the node and the orchestrator with the same embedder (GLANCE_EMBEDDER, default dlib-resnet).`,
    );
  }
  const embedding = decodeEmbedding(plaintext);
  return { header, embedding, node: { id: node.id, storeId: node.storeId } };
}

/** The node a message claims to come from, for logs and rejection events; only from the topic, never the payload. */
export function topicNodeId(topic: string): string | undefined {
  return parseTopic(topic)?.nodeId;
}
