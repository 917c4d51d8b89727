import { describe, expect, it } from "vitest";
import {
  canonicalJson,
  decodeEmbedding,
  encodeEmbedding,
  generateSealingKeyPair,
  generateSigningKeyPair,
  open,
  seal,
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

describe("canonical JSON", () => {
  it("does not depend on key order and drops undefined", () => {
    expect(canonicalJson({ b: 1, a: [{ d: 2, c: undefined }] })).toBe(canonicalJson({ a: [{ d: 2 }], b: 1 }));
  });
});
