import {
  encodeEmbedding,
  generateSealingKeyPair,
  generateSigningKeyPair,
  isGlanceError,
  type TemplateHeader,
  TemplateSealer,
  topicFor,
} from "@glance/shared";
import { describe, expect, it } from "vitest";
import type { Db } from "../db/client.ts";
import { randomEmbedding } from "../testing/harness.ts";
import { type OpenTemplateDeps, readTemplate, sessionKeys, unsealTemplate } from "./open-template.ts";
import type { KnownNode } from "./replay-window.ts";

const codeOf = (attempt: () => unknown): string | undefined => {
  try {
    attempt();
    return undefined;
  } catch (e) {
    return isGlanceError(e) ? e.code : "not a GlanceError";
  }
};

describe("unsealing a template (stage 2)", () => {
  const sealing = { ...generateSealingKeyPair(), kid: "k1" };
  // stage 2 does no I/O: it never touches the database
  const deps: OpenTemplateDeps = { db: undefined as unknown as Db, sealingKey: sealing, space: "test@1" };
  const signing = generateSigningKeyPair();
  const sealer = new TemplateSealer({ nodeId: "node-1", signingKey: signing });
  const known = (over: Partial<KnownNode> = {}): KnownNode => ({
    id: "node-1",
    storeId: "s1",
    signingPublicKey: signing.publicKey,
    revoked: false,
    row: { lastSeq: null, replayWindow: null },
    ...over,
  });
  let seq = 0;
  const read = () => {
    const header: TemplateHeader = {
      v: 2,
      nodeId: "node-1",
      seq: ++seq,
      ts: Date.now(),
      space: "test@1",
      kid: "k1",
      cameraId: "cam-1",
      trackId: `t${seq}`,
      quality: 0.9,
    };
    const t = { ...header, ...sealer.seal(encodeEmbedding(randomEmbedding()), header, sealing.publicKey) };
    return readTemplate(topicFor("template", "node-1"), Buffer.from(JSON.stringify(t)));
  };

  it("verifies a node's session once, then opens its templates from the cached key", () => {
    const cache = sessionKeys(deps);
    for (let i = 0; i < 20; i++) expect(unsealTemplate(deps, read(), known()).length).toBe(7 + 512);
    expect(cache.stats).toEqual({ hits: 19, misses: 1 });
    expect(cache.sessionsOf("node-1")).toBe(1);
  });

  it("drops a revoked node's cached sessions, and a re-keyed node's old session no longer opens", () => {
    const cache = sessionKeys(deps);
    unsealTemplate(deps, read(), known());
    expect(cache.sessionsOf("node-1")).toBe(1);
    expect(codeOf(() => unsealTemplate(deps, read(), known({ revoked: true })))).toBe("NODE_REVOKED");
    expect(cache.sessionsOf("node-1")).toBe(0);
    unsealTemplate(deps, read(), known());
    // registered again under a new identity key: the session its old key signed is not the node's any more
    const rekeyed = known({ signingPublicKey: generateSigningKeyPair().publicKey });
    expect(codeOf(() => unsealTemplate(deps, read(), rekeyed))).toBe("SIGNATURE_INVALID");
    expect(cache.sessionsOf("node-1")).toBe(0);
  });

  it("each ingest (deps) has its own cache, so another orchestrator key never finds this one's session keys", () => {
    const elsewhere: OpenTemplateDeps = { ...deps, sealingKey: { ...generateSealingKeyPair(), kid: "k1" } };
    unsealTemplate(deps, read(), known());
    expect(sessionKeys(elsewhere)).not.toBe(sessionKeys(deps));
    expect(codeOf(() => unsealTemplate(elsewhere, read(), known()))).toBe("DECRYPT_FAILED");
  });
});
