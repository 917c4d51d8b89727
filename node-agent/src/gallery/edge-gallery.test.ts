import {
  attestSealingKey,
  type DesiredState,
  decodeMessage,
  type EdgeGalleryEntry,
  encodeEmbedding,
  encodeMessage,
  gallerySigningKeyPair,
  generateSealingKeyPair,
  generateSigningKeyPair,
  type KeyPair,
  nodeSealingKeyPair,
  sealEdgeGallery,
  topicFor,
  verifySealingKey,
} from "@glance/shared";
import { describe, expect, it } from "vitest";
import { EdgeGallery } from "./edge-gallery.ts";

const SPACE = "test-space@1";

function unit(dim: number, seed: number): Float32Array {
  const v = new Float32Array(dim);
  let x = seed * 2654435761;
  for (let i = 0; i < dim; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    v[i] = x / 2147483648 - 0.5;
  }
  const n = Math.hypot(...v);
  return v.map((e) => e / n);
}

function setup() {
  const orchestrator = generateSealingKeyPair();
  const signer = gallerySigningKeyPair(orchestrator);
  const identity = generateSigningKeyPair();
  const sealing = nodeSealingKeyPair(identity);
  const desired: DesiredState = {
    version: 1,
    storeId: "store-1",
    privacyMode: "members-only",
    sealingKey: { kid: "orch-1", publicKey: orchestrator.publicKey },
    templateIntervalMs: 2000,
    minFaceSizePx: 40,
    gallerySigningKey: signer.publicKey,
  };
  const people = ["ana", "ben", "cy"].map((personId, i) => ({ personId, vector: unit(128, i + 1) }));
  const entries: EdgeGalleryEntry[] = people.map((p) => ({
    personId: p.personId,
    embedding: encodeEmbedding(p.vector),
  }));
  /** a gallery message of `entries` (default: the three people, or those `only` names) */
  const make = (o: {
    version: number;
    ts?: number;
    to?: string;
    nodeId?: string;
    by?: KeyPair;
    only?: string[];
    entries?: EdgeGalleryEntry[];
  }) => {
    const message = sealEdgeGallery(
      {
        v: 1,
        nodeId: o.nodeId ?? "node-1",
        storeId: "store-1",
        version: o.version,
        ts: o.ts ?? 1000 + o.version,
        space: SPACE,
        threshold: 0.6,
        recipient: o.to ?? sealing.publicKey,
      },
      o.entries ?? entries.filter((e) => !o.only || o.only.includes(e.personId)),
      o.by ?? signer,
    );
    // what the node receives has been through the contract
    return decodeMessage("gallery", topicFor("gallery", o.nodeId ?? "node-1"), encodeMessage("gallery", message));
  };
  return { identity, sealing, desired, people, make, ctx: { desired, space: SPACE, signer } };
}

const code = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return "accepted";
};

describe("members-only edge gallery on the node", () => {
  it("derives the same sealing key from the identity key every time, and the orchestrator can check the node made it", () => {
    const { identity, sealing } = setup();
    expect(nodeSealingKeyPair(identity)).toEqual(sealing);
    expect(nodeSealingKeyPair(generateSigningKeyPair()).publicKey).not.toBe(sealing.publicKey);
    const sig = attestSealingKey("node-1", sealing.publicKey, identity);
    expect(verifySealingKey("node-1", sealing.publicKey, sig, identity.publicKey)).toBe(true);
    expect(verifySealingKey("node-2", sealing.publicKey, sig, identity.publicKey)).toBe(false);
    expect(verifySealingKey("node-1", sealing.publicKey, sig, generateSigningKeyPair().publicKey)).toBe(false);
  });

  it("matches a member's face and nobody else's once a gallery sealed to this node is applied", () => {
    const { sealing, people, make, ctx } = setup();
    const g = new EdgeGallery("node-1", sealing);
    const [ana, ben] = people;
    expect(g.match(ana?.vector as Float32Array)).toBeUndefined();
    expect(g.accept(make({ version: 1 }), ctx)).toEqual({ version: 1, members: 3 });
    expect(g.match(ana?.vector as Float32Array)).toMatchObject({ personId: "ana" });
    expect(g.match(ben?.vector as Float32Array)?.score).toBeGreaterThan(0.99);
    expect(g.match(unit(128, 99))).toBeUndefined();
    expect(g.match(unit(64, 1))).toBeUndefined();
  });

  it("refuses a gallery sealed to another node, signed by someone else, for another node or older, and keeps the one it holds", () => {
    const { sealing, people, make, ctx } = setup();
    const g = new EdgeGallery("node-1", sealing);
    g.accept(make({ version: 5 }), ctx);
    const other = nodeSealingKeyPair(generateSigningKeyPair());
    expect(code(() => g.accept(make({ version: 6, to: other.publicKey }), ctx))).toBe("KEY_UNKNOWN");
    expect(g.info().refused).toMatch(/^KEY_UNKNOWN: .*sealed to another node key/);
    // sealed to this node, but not by the orchestrator's key: the signature is checked before decryption
    expect(code(() => g.accept(make({ version: 6, by: generateSigningKeyPair() }), ctx))).toBe("SIGNATURE_INVALID");
    expect(code(() => g.accept(make({ version: 6, nodeId: "node-2" }), ctx))).toBe("TOPIC_MISMATCH");
    expect(code(() => g.accept(make({ version: 4, only: ["ana"] }), ctx))).toBe("REPLAYED_SEQUENCE");
    expect(code(() => g.accept(make({ version: 6 }), { ...ctx, space: "other@1" }))).toBe("SPACE_UNKNOWN");
    expect(code(() => g.accept(make({ version: 6 }), { desired: undefined, space: SPACE }))).toBe("KEY_UNKNOWN");
    // a tampered ciphertext under a valid header
    const tampered = make({ version: 6 });
    tampered.ct = `${tampered.ct.slice(0, -4)}AAAA`;
    expect(code(() => g.accept(tampered, ctx))).toBe("SIGNATURE_INVALID");
    expect(g.info()).toMatchObject({ version: 5, members: 3 });
    expect(g.match(people[2]?.vector as Float32Array)).toMatchObject({ personId: "cy" });
    g.accept(make({ version: 6 }), ctx);
    expect(g.info()).toEqual({ version: 6, members: 3 });
  });

  it("erases every template of a member who has several", () => {
    const { sealing, make, ctx } = setup();
    const a1 = unit(128, 11);
    const a2 = unit(128, 12);
    const b = unit(128, 13);
    const message = make({
      version: 1,
      ts: 1000,
      entries: [
        { personId: "ana", embedding: encodeEmbedding(a1) },
        { personId: "ben", embedding: encodeEmbedding(b) },
        { personId: "ana", embedding: encodeEmbedding(a2) },
      ],
    });
    const g = new EdgeGallery("node-1", sealing);
    expect(g.accept(message, ctx)).toEqual({ version: 1, members: 2 });
    expect(g.match(a2)).toMatchObject({ personId: "ana" });
    expect(g.erase("ana", 2000)).toBe(true);
    expect(g.match(a1)).toBeUndefined();
    expect(g.match(a2)).toBeUndefined();
    expect(g.match(b)).toMatchObject({ personId: "ben" });
    expect(g.info()).toEqual({ version: 1, members: 1 });
  });

  it("erases a member at once, and a gallery built before the erasure does not bring them back", () => {
    const { sealing, people, make, ctx } = setup();
    const g = new EdgeGallery("node-1", sealing);
    g.accept(make({ version: 1, ts: 1000 }), ctx);
    const ben = people[1]?.vector as Float32Array;
    expect(g.erase("ben", 2000)).toBe(true);
    expect(g.match(ben)).toBeUndefined();
    expect(g.match(people[0]?.vector as Float32Array)).toMatchObject({ personId: "ana" });
    expect(g.match(people[2]?.vector as Float32Array)).toMatchObject({ personId: "cy" });
    expect(g.erase("ben", 2000)).toBe(false);
    // built (ts) before the erase command, delivered after it
    g.accept(make({ version: 2, ts: 1500 }), ctx);
    expect(g.info()).toEqual({ version: 2, members: 2 });
    expect(g.match(ben)).toBeUndefined();
    // a gallery built after the erasure is the orchestrator's word (e.g. consent given again)
    g.accept(make({ version: 3, ts: 2500 }), ctx);
    expect(g.match(ben)).toMatchObject({ personId: "ben" });
    g.clear();
    expect(g.match(ben)).toBeUndefined();
    expect(code(() => g.accept(make({ version: 2, ts: 3000 }), ctx))).toBe("REPLAYED_SEQUENCE");
  });

  it("drops a member when their consent for the store ends, by the node's own clock, with no new gallery", () => {
    const { sealing, people, make, ctx } = setup();
    let now = 10_000;
    const [ana, ben, cy] = people.map((p) => p.vector) as [Float32Array, Float32Array, Float32Array];
    const message = make({
      version: 1,
      ts: 1000,
      entries: [
        { personId: "ana", embedding: encodeEmbedding(ana), until: 20_000 },
        { personId: "ben", embedding: encodeEmbedding(ben) },
        { personId: "cy", embedding: encodeEmbedding(cy), until: 30_000 },
      ],
    });
    const g = new EdgeGallery("node-1", sealing, () => now);
    expect(g.accept(message, ctx)).toEqual({ version: 1, members: 3 });
    now = 19_999;
    expect(g.match(ana)).toMatchObject({ personId: "ana" });
    now = 20_000;
    expect(g.match(ana)).toBeUndefined();
    expect(g.info()).toEqual({ version: 1, members: 2 });
    expect(g.match(cy)).toMatchObject({ personId: "cy" });
    now = 30_000;
    expect(g.match(cy)).toBeUndefined();
    // no end: until withdrawn (the orchestrator sends a new gallery, or erase-member)
    now = Number.MAX_SAFE_INTEGER;
    expect(g.match(ben)).toMatchObject({ personId: "ben" });
    expect(g.info()).toEqual({ version: 1, members: 1 });
  });
});
