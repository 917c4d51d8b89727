/**
 * Micro-bench of the template envelopes, per template, on this machine (not a test):
 *   npx tsx shared/src/envelope-bench.ts [--count 2000]
 * v1: ephemeral X25519 + HKDF + AES-GCM + Ed25519 signature per message. v2: a session per node (keygen, X25519,
 * HKDF, one signature), then AES-GCM per message; the orchestrator verifies a session once (miss) and opens the
 * rest from its cache (hit).
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import {
  encodeEmbedding,
  generateSealingKeyPair,
  generateSigningKeyPair,
  open,
  openSessionTemplate,
  type SessionHeader,
  SessionKeyCache,
  type SessionSealedParts,
  seal,
  TemplateSealer,
} from "./crypto.ts";

const arg = process.argv.indexOf("--count");
const count = arg > 0 ? Number(process.argv[arg + 1]) : 2000;
const rounds = 5;

const orchestrator = generateSealingKeyPair();
const node = generateSigningKeyPair();
const v = new Float32Array(512).map((_, i) => Math.sin(i * 0.37));
const plaintext = encodeEmbedding(v);
const headerOf = (seq: number, version: 1 | 2): SessionHeader => ({
  v: version,
  nodeId: "node-1",
  seq,
  ts: Date.now(),
  space: "dlib-resnet-int8@1",
  kid: "k1",
  cameraId: "cam-1",
  trackId: `t-${seq}`,
  quality: 0.9,
});

/** median over rounds of the mean µs per call */
function measure(setup: () => () => void): number {
  const perCall: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const run = setup();
    const t = performance.now();
    run();
    perCall.push(((performance.now() - t) * 1000) / count);
  }
  perCall.sort((a, b) => a - b);
  return perCall[Math.floor(rounds / 2)] as number;
}

const v1Headers = Array.from({ length: count }, (_, i) => headerOf(i, 1));
const v2Headers = Array.from({ length: count }, (_, i) => headerOf(i, 2));

const rows: [string, number][] = [];
rows.push([
  "v1 seal (node)",
  measure(() => () => {
    for (const h of v1Headers) seal(plaintext, h, orchestrator.publicKey, node);
  }),
]);
const v1Sealed = v1Headers.map((h) => seal(plaintext, h, orchestrator.publicKey, node));
rows.push([
  "v1 open (orchestrator)",
  measure(() => () => {
    for (const [i, h] of v1Headers.entries())
      open(v1Sealed[i] as ReturnType<typeof seal>, h, orchestrator, node.publicKey);
  }),
]);
rows.push([
  "v2 seal, in a session (node)",
  measure(() => {
    const sealer = new TemplateSealer({ nodeId: "node-1", signingKey: node });
    sealer.seal(plaintext, v2Headers[0] as SessionHeader, orchestrator.publicKey);
    return () => {
      for (const h of v2Headers) sealer.seal(plaintext, h, orchestrator.publicKey);
    };
  }),
]);
rows.push([
  "v2 seal, new session each (node, rotation)",
  measure(() => {
    const sealer = new TemplateSealer({ nodeId: "node-1", signingKey: node });
    return () => {
      for (const h of v2Headers) {
        sealer.end();
        sealer.seal(plaintext, h, orchestrator.publicKey);
      }
    };
  }),
]);
const oneSession = new TemplateSealer({ nodeId: "node-1", signingKey: node });
const v2Sealed = v2Headers.map((h) => oneSession.seal(plaintext, h, orchestrator.publicKey));
rows.push([
  "v2 open, cache hit (orchestrator)",
  measure(() => {
    const cache = new SessionKeyCache();
    openSessionTemplate(
      v2Sealed[0] as SessionSealedParts,
      v2Headers[0] as SessionHeader,
      orchestrator,
      node.publicKey,
      cache,
    );
    return () => {
      for (const [i, h] of v2Headers.entries())
        openSessionTemplate(v2Sealed[i] as SessionSealedParts, h, orchestrator, node.publicKey, cache);
    };
  }),
]);
const rotating = new TemplateSealer({ nodeId: "node-1", signingKey: node });
const v2Fresh = v2Headers.map((h) => {
  rotating.end();
  return rotating.seal(plaintext, h, orchestrator.publicKey);
});
rows.push([
  "v2 open, cache miss (orchestrator, new session)",
  measure(() => {
    const cache = new SessionKeyCache(count * 2);
    return () => {
      for (const [i, h] of v2Headers.entries())
        openSessionTemplate(v2Fresh[i] as SessionSealedParts, h, orchestrator, node.publicKey, cache);
    };
  }),
]);

const width = Math.max(...rows.map(([name]) => name.length));
console.log(`template envelope, 512-d int8 template, ${count} per round, median of ${rounds} rounds, one thread`);
console.log(`${"".padEnd(width)}  µs/template  templates/s/core`);
for (const [name, us] of rows)
  console.log(
    `${name.padEnd(width)}  ${us.toFixed(1).padStart(11)}  ${Math.round(1e6 / us)
      .toLocaleString("en")
      .padStart(16)}`,
  );
const wire = (x: unknown) => JSON.stringify(x).length;
console.log(
  `wire size: v1 ${wire({ ...v1Headers[0], ...v1Sealed[0] })} B, v2 ${wire({ ...v2Headers[0], ...v2Sealed[0] })} B (JSON)`,
);
console.log(`uptime: ${execFileSync("uptime").toString().trim()}`);

// v1 open is the peer the session envelope is compared with, in the same run
const v1Open = rows.find(([name]) => name.startsWith("v1 open"))?.[1];
const hit = rows.find(([name]) => name.includes("cache hit"))?.[1];
if (v1Open && hit) console.log(`v2 cache-hit open is ${(v1Open / hit).toFixed(1)}x cheaper than v1 open`);
const dir = join(import.meta.dirname, "..", "..", "bench-results");
mkdirSync(dir, { recursive: true });
const file = join(dir, `envelope-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
writeFileSync(
  file,
  JSON.stringify(
    {
      count,
      rounds,
      loadavg1m: loadavg()[0],
      node: process.version,
      rows: rows.map(([name, us]) => ({ name, usPerTemplate: us, perSecondPerCore: 1e6 / us })),
    },
    null,
    2,
  ),
);
console.log(`results: ${file}`);
