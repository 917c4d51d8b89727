import { describe, expect, it } from "vitest";
import {
  canonicalJson,
  decodeEdgeGallery,
  decodeEmbedding,
  edgeGalleryBytes,
  encodeEdgeGallery,
  encodeEmbedding,
  generateSealingKeyPair,
  generateSigningKeyPair,
  open,
  openSessionTemplate,
  SESSION_CLOCK_SKEW_MS,
  SESSION_MAX_SPAN_MS,
  type SessionHeader,
  SessionKeyCache,
  type SessionSealedParts,
  seal,
  signBytes,
  TemplateSealer,
} from "./crypto.ts";
import { isGlanceError } from "./errors.ts";

function randomUnit(dim: number, seed = 1): Float32Array {
  let s = seed;
  const v = new Float32Array(dim);
  for (let i = 0; i < dim; i++) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    v[i] = s / 2 ** 31 - 0.5;
  }
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}

const header = { v: 1, nodeId: "node-1", seq: 7, ts: 1_700_000_000_000, space: "test@1" };

describe("sealed templates", () => {
  const orchestrator = generateSealingKeyPair();
  const node = generateSigningKeyPair();

  it("round-trips an embedding only for the orchestrator key and the node's signature", () => {
    const emb = randomUnit(512);
    const sealed = seal(encodeEmbedding(emb), header, orchestrator.publicKey, node);
    const back = decodeEmbedding(open(sealed, header, orchestrator, node.publicKey));
    let dot = 0;
    for (let i = 0; i < 512; i++) dot += (back[i] as number) * (emb[i] as number);
    expect(dot).toBeGreaterThan(0.999);
  });

  it("a wrong recipient key cannot decrypt", () => {
    const sealed = seal(encodeEmbedding(randomUnit(512)), header, orchestrator.publicKey, node);
    expect(() => open(sealed, header, generateSealingKeyPair(), node.publicKey)).toThrowError(
      expect.objectContaining({ code: "DECRYPT_FAILED" }),
    );
  });

  it("a flipped ciphertext byte, another signer or a changed header is rejected before decryption", () => {
    const sealed = seal(encodeEmbedding(randomUnit(512)), header, orchestrator.publicKey, node);
    const ct = Buffer.from(sealed.ct, "base64url");
    ct[10] = (ct[10] as number) ^ 1;
    const cases = [
      () => open({ ...sealed, ct: ct.toString("base64url") }, header, orchestrator, node.publicKey),
      () => open(sealed, header, orchestrator, generateSigningKeyPair().publicKey),
      () => open(sealed, { ...header, seq: 8 }, orchestrator, node.publicKey),
      () => open(sealed, { ...header, nodeId: "node-2" }, orchestrator, node.publicKey),
    ];
    for (const attempt of cases) {
      try {
        attempt();
        expect.unreachable("tampered template opened");
      } catch (e) {
        expect(isGlanceError(e, "SIGNATURE_INVALID")).toBe(true);
      }
    }
  });

  it("a 512-d template seals to well under 1.2 KB of JSON on the wire", () => {
    const sealed = seal(encodeEmbedding(randomUnit(512)), header, orchestrator.publicKey, node);
    const wire = JSON.stringify({ ...header, kid: "k1", cameraId: "cam-1", trackId: "t-1", quality: 0.5, ...sealed });
    expect(wire.length).toBeLessThan(1200);
  });
});

describe("session-sealed templates (v2)", () => {
  const orchestrator = generateSealingKeyPair();
  const nodeA = generateSigningKeyPair();
  const nodeB = generateSigningKeyPair();
  const t0 = 1_800_000_000_000;
  const headerOf = (nodeId: string, seq: number, ts = t0 + seq): SessionHeader => ({
    v: 2,
    nodeId,
    seq,
    ts,
    space: "test@1",
    kid: "k1",
    cameraId: "cam-1",
    trackId: `t-${seq}`,
    quality: 0.5,
  });
  const sealerFor = (nodeId: string, signingKey = nodeA, now = () => t0) =>
    new TemplateSealer({ nodeId, signingKey, now });
  const codeOf = (attempt: () => unknown): string | undefined => {
    try {
      attempt();
      return undefined;
    } catch (e) {
      return isGlanceError(e) ? e.code : "not a GlanceError";
    }
  };
  const flip = (b64: string, at: number) => {
    const b = Buffer.from(b64, "base64url");
    b[at] = (b[at] as number) ^ 1;
    return b.toString("base64url");
  };

  it("round-trips many templates under one session, and the orchestrator verifies the session once", () => {
    const sealer = sealerFor("node-a");
    const cache = new SessionKeyCache(16, () => t0);
    for (let seq = 1; seq <= 50; seq++) {
      const emb = randomUnit(512, seq);
      const h = headerOf("node-a", seq);
      const sealed = sealer.seal(encodeEmbedding(emb), h, orchestrator.publicKey);
      const back = decodeEmbedding(openSessionTemplate(sealed, h, orchestrator, nodeA.publicKey, cache));
      let dot = 0;
      for (let i = 0; i < 512; i++) dot += (back[i] as number) * (emb[i] as number);
      expect(dot).toBeGreaterThan(0.999);
    }
    expect(sealer.sessions).toBe(1);
    expect(cache.stats).toEqual({ hits: 49, misses: 1 });
    expect(cache.size).toBe(1);
  });

  it("a wrong recipient key cannot decrypt, with or without a cache", () => {
    const h = headerOf("node-a", 1);
    const sealed = sealerFor("node-a").seal(encodeEmbedding(randomUnit(512)), h, orchestrator.publicKey);
    const other = generateSealingKeyPair();
    expect(codeOf(() => openSessionTemplate(sealed, h, other, nodeA.publicKey))).toBe("DECRYPT_FAILED");
    const cache = new SessionKeyCache(16, () => t0);
    expect(codeOf(() => openSessionTemplate(sealed, h, other, nodeA.publicKey, cache))).toBe("DECRYPT_FAILED");
    expect(cache.size).toBe(0);
  });

  it("a forged session signature is refused even while the genuine session is cached", () => {
    const sealer = sealerFor("node-a");
    const cache = new SessionKeyCache(16, () => t0);
    const h1 = headerOf("node-a", 1);
    openSessionTemplate(
      sealer.seal(encodeEmbedding(randomUnit(512)), h1, orchestrator.publicKey),
      h1,
      orchestrator,
      nodeA.publicKey,
      cache,
    );
    const h2 = headerOf("node-a", 2);
    const sealed = sealer.seal(encodeEmbedding(randomUnit(512)), h2, orchestrator.publicKey);
    const forged = { ...sealed, session: { ...sealed.session, sig: flip(sealed.session.sig, 5) } };
    expect(codeOf(() => openSessionTemplate(forged, h2, orchestrator, nodeA.publicKey, cache))).toBe(
      "SIGNATURE_INVALID",
    );
    // a statement signed by another key, or a changed window, does not verify either
    const byB = sealerFor("node-a", nodeB).seal(encodeEmbedding(randomUnit(512)), h2, orchestrator.publicKey);
    expect(codeOf(() => openSessionTemplate(byB, h2, orchestrator, nodeA.publicKey, cache))).toBe("SIGNATURE_INVALID");
    const stretched = { ...sealed, session: { ...sealed.session, na: sealed.session.na + 1 } };
    expect(codeOf(() => openSessionTemplate(stretched, h2, orchestrator, nodeA.publicKey, cache))).toBe(
      "SIGNATURE_INVALID",
    );
    expect(openSessionTemplate(sealed, h2, orchestrator, nodeA.publicKey, cache).length).toBeGreaterThan(0);
  });

  it("node A's session cannot carry a message as node B", () => {
    const cache = new SessionKeyCache(16, () => t0);
    const hA = headerOf("node-a", 1);
    const fromA = sealerFor("node-a").seal(encodeEmbedding(randomUnit(512)), hA, orchestrator.publicKey);
    openSessionTemplate(fromA, hA, orchestrator, nodeA.publicKey, cache);
    const asB = headerOf("node-b", 1);
    // the statement names node A: it does not verify as B's, whoever's key is tried
    expect(codeOf(() => openSessionTemplate(fromA, asB, orchestrator, nodeB.publicKey, cache))).toBe(
      "SIGNATURE_INVALID",
    );
    expect(codeOf(() => openSessionTemplate(fromA, asB, orchestrator, nodeA.publicKey, cache))).toBe(
      "SIGNATURE_INVALID",
    );
    // B re-signs A's ephemeral key as its own session: B's K differs and the AAD names B, so A's ciphertext fails
    const sealerB = sealerFor("node-b", nodeB);
    const ownB = sealerB.seal(encodeEmbedding(randomUnit(512)), asB, orchestrator.publicKey);
    const stolenEpk = { ...ownB.session, epk: fromA.session.epk };
    const { sig: _sig, ...unsigned } = stolenEpk;
    const resigned = {
      ...stolenEpk,
      sig: signBytes(
        Buffer.from(
          canonicalJson({
            use: "glance/v2/template-session",
            nodeId: "node-b",
            kid: "k1",
            epk: unsigned.epk,
            notBefore: unsigned.nb,
            notAfter: unsigned.na,
          }),
        ),
        nodeB,
      ),
    };
    const relabelled: SessionSealedParts = { session: resigned, iv: fromA.iv, ct: fromA.ct };
    expect(codeOf(() => openSessionTemplate(relabelled, asB, orchestrator, nodeB.publicKey, cache))).toBe(
      "DECRYPT_FAILED",
    );
  });

  it("a template stamped outside its session's window, or a window over a day long, is refused", () => {
    const sealer = sealerFor("node-a");
    const h = headerOf("node-a", 1);
    const sealed = sealer.seal(encodeEmbedding(randomUnit(512)), h, orchestrator.publicKey);
    const late = { ...h, ts: sealed.session.na + 1 };
    const early = { ...h, ts: sealed.session.nb - 1 };
    expect(codeOf(() => openSessionTemplate(sealed, late, orchestrator, nodeA.publicKey))).toBe("SIGNATURE_INVALID");
    expect(codeOf(() => openSessionTemplate(sealed, early, orchestrator, nodeA.publicKey))).toBe("SIGNATURE_INVALID");
    // a node that signs itself a week-long session is still refused
    const long = new TemplateSealer({
      nodeId: "node-a",
      signingKey: nodeA,
      now: () => t0,
      lifetimeMs: 7 * SESSION_MAX_SPAN_MS,
    });
    const hl = headerOf("node-a", 2);
    const l = long.seal(encodeEmbedding(randomUnit(512)), hl, orchestrator.publicKey);
    expect(l.session.na - l.session.nb).toBeLessThanOrEqual(SESSION_MAX_SPAN_MS);
    const week = { ...l, session: { ...l.session, na: l.session.nb + 7 * SESSION_MAX_SPAN_MS } };
    expect(codeOf(() => openSessionTemplate(week, hl, orchestrator, nodeA.publicKey))).toBe("SIGNATURE_INVALID");
  });

  it("a tampered ciphertext or header fails decryption under a valid, cached session", () => {
    const sealer = sealerFor("node-a");
    const cache = new SessionKeyCache(16, () => t0);
    const h = headerOf("node-a", 1);
    const sealed = sealer.seal(encodeEmbedding(randomUnit(512)), h, orchestrator.publicKey);
    openSessionTemplate(sealed, h, orchestrator, nodeA.publicKey, cache);
    const cases = [
      () => openSessionTemplate({ ...sealed, ct: flip(sealed.ct, 10) }, h, orchestrator, nodeA.publicKey, cache),
      () => openSessionTemplate({ ...sealed, iv: flip(sealed.iv, 0) }, h, orchestrator, nodeA.publicKey, cache),
      () => openSessionTemplate(sealed, { ...h, seq: 2 }, orchestrator, nodeA.publicKey, cache),
      () => openSessionTemplate(sealed, { ...h, quality: 0.9 }, orchestrator, nodeA.publicKey, cache),
      () => openSessionTemplate(sealed, { ...h, space: "other@1" }, orchestrator, nodeA.publicKey, cache),
    ];
    for (const attempt of cases) expect(codeOf(attempt)).toBe("DECRYPT_FAILED");
    expect(cache.stats.hits).toBe(cases.length);
  });

  it("a cached session is dropped for a revoked node and not used for a re-keyed one", () => {
    const cache = new SessionKeyCache(16, () => t0);
    const h = headerOf("node-a", 1);
    const sealed = sealerFor("node-a").seal(encodeEmbedding(randomUnit(512)), h, orchestrator.publicKey);
    openSessionTemplate(sealed, h, orchestrator, nodeA.publicKey, cache);
    expect(cache.sessionsOf("node-a")).toBe(1);
    cache.forgetNode("node-a");
    expect(cache.sessionsOf("node-a")).toBe(0);
    openSessionTemplate(sealed, h, orchestrator, nodeA.publicKey, cache);
    // the node's registered key changed: the session signed by the old key no longer opens
    const rekeyed = generateSigningKeyPair();
    expect(codeOf(() => openSessionTemplate(sealed, h, orchestrator, rekeyed.publicKey, cache))).toBe(
      "SIGNATURE_INVALID",
    );
    expect(cache.size).toBe(0);
  });

  it("a cached key is never used past notAfter plus the skew; a late backlog still opens", () => {
    let now = t0;
    const cache = new SessionKeyCache(16, () => now);
    const sealer = sealerFor("node-a");
    const h = headerOf("node-a", 1);
    const sealed = sealer.seal(encodeEmbedding(randomUnit(512)), h, orchestrator.publicKey);
    openSessionTemplate(sealed, h, orchestrator, nodeA.publicKey, cache);
    now = sealed.session.na + SESSION_CLOCK_SKEW_MS + 1;
    const forged = { ...sealed, session: { ...sealed.session, sig: flip(sealed.session.sig, 3) } };
    expect(codeOf(() => openSessionTemplate(forged, h, orchestrator, nodeA.publicKey, cache))).toBe(
      "SIGNATURE_INVALID",
    );
    const before = { ...cache.stats };
    expect(openSessionTemplate(sealed, h, orchestrator, nodeA.publicKey, cache).length).toBeGreaterThan(0);
    expect(cache.stats.misses).toBe(before.misses + 1);
  });

  it("a node whose clock is hours off has its session cached all the same, for what remained of it", () => {
    for (const offset of [-3 * 3600_000, 3 * 3600_000]) {
      // the node's clock reads t0 + offset while the orchestrator's reads t0
      let now = t0;
      const cache = new SessionKeyCache(16, () => now);
      const sealer = sealerFor("node-a", nodeA, () => t0 + offset);
      const h = headerOf("node-a", 1, t0 + offset);
      const sealed = sealer.seal(encodeEmbedding(randomUnit(512)), h, orchestrator.publicKey);
      const remaining = sealed.session.na - h.ts;
      openSessionTemplate(sealed, h, orchestrator, nodeA.publicKey, cache);
      expect(cache.sessionsOf("node-a")).toBe(1);
      now = t0 + remaining + SESSION_CLOCK_SKEW_MS;
      openSessionTemplate(sealed, h, orchestrator, nodeA.publicKey, cache);
      expect(cache.stats).toEqual({ hits: 1, misses: 1 });
      now += 1;
      openSessionTemplate(sealed, h, orchestrator, nodeA.publicKey, cache);
      expect(cache.stats).toEqual({ hits: 1, misses: 2 });
    }
  });

  it("the cache holds at most its size, least recently used out first", () => {
    const cache = new SessionKeyCache(2, () => t0);
    const ids = ["n1", "n2", "n3"];
    const sealed = ids.map((id) => {
      const h = headerOf(id, 1);
      return { h, s: sealerFor(id).seal(encodeEmbedding(randomUnit(64)), h, orchestrator.publicKey) };
    });
    for (const { h, s } of sealed) openSessionTemplate(s, h, orchestrator, nodeA.publicKey, cache);
    expect(cache.size).toBe(2);
    expect(cache.sessionsOf("n1")).toBe(0);
    expect(cache.sessionsOf("n3")).toBe(1);
  });

  it("one node starting a session per message evicts only its own sessions", () => {
    const cache = new SessionKeyCache(16, () => t0, 2);
    const seal1 = (id: string, seq: number) => {
      const h = headerOf(id, seq);
      const sealer = sealerFor(id);
      return { h, s: sealer.seal(encodeEmbedding(randomUnit(64)), h, orchestrator.publicKey) };
    };
    const quiet = seal1("quiet", 1);
    openSessionTemplate(quiet.s, quiet.h, orchestrator, nodeA.publicKey, cache);
    for (let seq = 1; seq <= 20; seq++) {
      const noisy = seal1("noisy", seq);
      openSessionTemplate(noisy.s, noisy.h, orchestrator, nodeA.publicKey, cache);
    }
    expect(cache.sessionsOf("noisy")).toBe(2);
    expect(cache.sessionsOf("quiet")).toBe(1);
    expect(cache.size).toBe(3);
    const before = cache.stats.hits;
    openSessionTemplate(quiet.s, quiet.h, orchestrator, nodeA.publicKey, cache);
    expect(cache.stats.hits).toBe(before + 1);
  });

  it("a node rotates its session on time, message count, recipient change and a frame outside the window", () => {
    let now = t0;
    const sealer = new TemplateSealer({
      nodeId: "node-a",
      signingKey: nodeA,
      now: () => now,
      lifetimeMs: 60_000,
      maxMessages: 3,
    });
    const p = encodeEmbedding(randomUnit(64));
    const epkOf = (h: SessionHeader, recipient = orchestrator.publicKey) => sealer.seal(p, h, recipient).session.epk;
    const first = epkOf(headerOf("node-a", 1, now));
    expect(epkOf(headerOf("node-a", 2, now))).toBe(first);
    expect(epkOf(headerOf("node-a", 3, now))).toBe(first);
    const second = epkOf(headerOf("node-a", 4, now));
    expect(second).not.toBe(first);
    now += 60_000;
    const third = epkOf(headerOf("node-a", 5, now));
    expect(third).not.toBe(second);
    const fourth = epkOf(headerOf("node-a", 6, now), generateSealingKeyPair().publicKey);
    expect(fourth).not.toBe(third);
    // a frame stamped before the session began (the node's clock stepped back) gets a session covering it
    const old = headerOf("node-a", 7, now - 3_600_000);
    const s = sealer.seal(p, old, orchestrator.publicKey);
    expect(s.session.nb).toBeLessThanOrEqual(old.ts);
    expect(openSessionTemplate(s, old, orchestrator, nodeA.publicKey).length).toBe(p.length);
    expect(sealer.sessions).toBe(5);
  });

  it("a 512-d template seals to well under 1.2 KB of JSON on the wire", () => {
    const h = headerOf("node-a", 1);
    const sealed = sealerFor("node-a").seal(encodeEmbedding(randomUnit(512)), h, orchestrator.publicKey);
    expect(JSON.stringify({ ...h, ...sealed }).length).toBeLessThan(1200);
  });
});

describe("canonical JSON", () => {
  it("does not depend on key order and drops undefined", () => {
    expect(canonicalJson({ b: 1, a: [{ d: 2, c: undefined }] })).toBe(canonicalJson({ a: [{ d: 2 }], b: 1 }));
  });
});

describe("edge gallery plaintext", () => {
  const ana = { personId: "ana", embedding: encodeEmbedding(randomUnit(128, 1)) };
  const ben = { personId: "ben", embedding: encodeEmbedding(randomUnit(128, 2)) };
  const invalid = (bytes: Uint8Array) => {
    try {
      decodeEdgeGallery(bytes);
    } catch (e) {
      return isGlanceError(e) ? e.code : "other";
    }
    return "decoded";
  };

  it("stays version 1 while no consent ends, so older agents still take it", () => {
    const bytes = encodeEdgeGallery([ana, ben]);
    expect(bytes[0]).toBe(1);
    expect(edgeGalleryBytes([ana, ben])).toBe(bytes.length);
    expect(decodeEdgeGallery(bytes)).toEqual([ana, ben]);
  });

  it("carries each member's consent end in version 2, and refuses a damaged one", () => {
    const entries = [{ ...ana, until: 1_800_000_000_123 }, ben];
    const bytes = encodeEdgeGallery(entries);
    expect(bytes[0]).toBe(2);
    expect(edgeGalleryBytes(entries)).toBe(bytes.length);
    expect(decodeEdgeGallery(bytes)).toEqual(entries);
    expect(invalid(bytes.subarray(0, bytes.length - 3))).toBe("PAYLOAD_INVALID");
    const negative = Buffer.from(bytes);
    negative.writeDoubleLE(-1, negative.length - 8);
    expect(invalid(negative)).toBe("PAYLOAD_INVALID");
    const nan = Buffer.from(bytes);
    nan.writeDoubleLE(Number.NaN, nan.length - 8);
    expect(invalid(nan)).toBe("PAYLOAD_INVALID");
    const v3 = Buffer.from(bytes);
    v3[0] = 3;
    expect(invalid(v3)).toBe("PAYLOAD_INVALID");
  });
});
