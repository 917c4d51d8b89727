import {
  decodeEmbedding,
  decodeMessage,
  GlanceError,
  type KeyPair,
  open,
  parseTopic,
  type SealedTemplate,
  type TemplateHeader,
  templateHeader,
} from "@glance/shared";
import type { Db } from "../db/client.ts";
import type { Admission, KnownNode } from "./replay-window.ts";

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
 * Everything a template must survive before it is matched, cheapest and least trusting first, in stages so the
 * ingest can run each over a whole batch (one node lookup and one replay statement per batch):
 * contract (size, JSON, schema, topic) → known node → sealing key id → signature → decryption → replay → space →
 * embedding codec. Each stage throws GlanceError with the code of the check that fails.
 */
export interface ReadTemplate {
  sealed: SealedTemplate;
  header: TemplateHeader;
}

/** Stage 1, no I/O: the payload is a template of the contract, on its own node's topic. */
export function readTemplate(topic: string, payload: Uint8Array): ReadTemplate {
  const sealed = decodeMessage("template", topic, payload);
  return { sealed, header: templateHeader(sealed) };
}

/** Stage 2, CPU only: the node is registered and not revoked, the template is for our key and signed by the node. */
export function unsealTemplate(deps: OpenTemplateDeps, t: ReadTemplate, node: KnownNode | undefined): Buffer {
  const { header } = t;
  if (!node)
    throw new GlanceError("NODE_UNKNOWN", `Node ${header.nodeId} is not registered; register it with POST /api/nodes.`);
  if (node.revoked) throw new GlanceError("NODE_REVOKED", `Node ${header.nodeId} has been revoked.`);
  if (header.kid !== deps.sealingKey.kid) {
    throw new GlanceError(
      "KEY_UNKNOWN",
      `Template is sealed to key ${header.kid}; this orchestrator's key is ${deps.sealingKey.kid}.`,
    );
  }
  // open() checks the signature before it decrypts anything
  return open(t.sealed, header, deps.sealingKey, node.signingPublicKey);
}

/** Stage 3 turns the replay window's decision into the error a rejected template carries. */
export function admissionError(admission: Exclude<Admission, "accepted">, header: TemplateHeader): GlanceError {
  switch (admission) {
    case "replayed":
      return new GlanceError(
        "REPLAYED_SEQUENCE",
        `Sequence ${header.seq} from node ${header.nodeId} was already accepted or is older than the replay window.`,
      );
    case "revoked":
      return new GlanceError("NODE_REVOKED", `Node ${header.nodeId} has been revoked.`);
    case "failed":
      return new GlanceError(
        "INTERNAL",
        `The replay window of node ${header.nodeId} could not be updated (database error, logged); this template was dropped.`,
      );
    case "unknown":
      return new GlanceError(
        "NODE_UNKNOWN",
        `Node ${header.nodeId} is not registered; register it with POST /api/nodes.`,
      );
  }
}

/** Stage 4, after the seq is spent: the template is in the gallery's space and its embedding decodes. */
export function finishTemplate(
  deps: OpenTemplateDeps,
  header: TemplateHeader,
  plaintext: Uint8Array,
  node: KnownNode,
): AcceptedTemplate {
  if (header.space !== deps.space) {
    throw new GlanceError(
      "SPACE_UNKNOWN",
      `Template space ${header.space} is not the gallery's space ${deps.space}; run the node and the orchestrator with the same embedder (GLANCE_EMBEDDER, default dlib-resnet-int8).`,
    );
  }
  const embedding = decodeEmbedding(plaintext);
  return { header, embedding, node: { id: node.id, storeId: node.storeId } };
}

/** The node a message claims to come from, for logs and rejection events; only from the topic, never the payload. */
export function topicNodeId(topic: string): string | undefined {
  return parseTopic(topic)?.nodeId;
}
