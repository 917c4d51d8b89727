import {
  decodeEmbedding,
  decodeMessage,
  GlanceError,
  type KeyPair,
  openSessionTemplate,
  parseTopic,
  type SealedTemplate,
  SessionKeyCache,
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
  /** node session keys already derived (one Ed25519 verification + X25519 per session); default one per `deps` */
  sessions?: SessionKeyCache;
}

const SESSION_CACHE_SIZE = 8192;
const sessionCaches = new WeakMap<OpenTemplateDeps, SessionKeyCache>();

/** The session key cache of an ingest: `deps.sessions`, or one made for this `deps` object on first use. */
export function sessionKeys(deps: OpenTemplateDeps): SessionKeyCache {
  if (deps.sessions) return deps.sessions;
  let cache = sessionCaches.get(deps);
  if (!cache) {
    cache = new SessionKeyCache(SESSION_CACHE_SIZE);
    sessionCaches.set(deps, cache);
  }
  return cache;
}

/**
 * Everything a template must survive before it is matched, cheapest and least trusting first, in stages so the
 * ingest can run each over a whole batch (one node lookup and one replay statement per batch):
 * contract (size, JSON, schema, topic) → known node → sealing key id → session window and signature (once per
 * session) → decryption → replay → space → embedding codec. Each stage throws GlanceError with the code of the check that fails.
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

/**
 * Stage 2, CPU only: the node is registered and not revoked, the template is for our key, its session is signed by
 * the node and its ciphertext authenticates under the session key. A session's key is derived once and cached
 * (bound to the node's registered key, dropped when the node is seen revoked, never used past notAfter + skew), so
 * most templates cost one AES-GCM decryption here.
 */
export function unsealTemplate(deps: OpenTemplateDeps, t: ReadTemplate, node: KnownNode | undefined): Buffer {
  const { header } = t;
  if (!node)
    throw new GlanceError("NODE_UNKNOWN", `Node ${header.nodeId} is not registered; register it with POST /api/nodes.`);
  if (node.revoked) {
    sessionKeys(deps).forgetNode(node.id);
    throw new GlanceError("NODE_REVOKED", `Node ${header.nodeId} has been revoked.`);
  }
  if (header.kid !== deps.sealingKey.kid) {
    throw new GlanceError(
      "KEY_UNKNOWN",
      `Template is sealed to key ${header.kid}; this orchestrator's key is ${deps.sealingKey.kid}.`,
    );
  }
  // the session signature is checked before anything is decrypted under a key not yet cached
  return openSessionTemplate(t.sealed, header, deps.sealingKey, node.signingPublicKey, sessionKeys(deps));
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
