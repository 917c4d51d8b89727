/**
 * Recognizer microbench (match → visit → promotion, no MQTT): 16 simulated nodes in parallel, 150 templates each,
 * 80 % near-duplicates of 600 of 2000 members (so several cameras see the same person), 20 % of 200 strangers; one
 * member and one unknown rule, one screen; PGlite. Prints recognitions/s and SQL statements per recognition.
 *
 *   npx tsx orchestrator/src/recognition/bench.ts "$PWD" new [visitor|members-only|count-only]
 *
 * The baseline (before in-memory dedupe, batched visits, key cache, rule cache) is the tree of 0d516c4^:
 *   mkdir /tmp/base && git archive 0d516c4^ orchestrator package.json tsconfig.json | tar -x -C /tmp/base \
 *     && ln -s "$PWD/node_modules" /tmp/base/node_modules
 *   npx tsx orchestrator/src/recognition/bench.ts /tmp/base old
 */
import { randomBytes, randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { pino } from "pino";

const ROOT = process.argv[2] as string;
const MODE = process.argv[3] as "old" | "new";
const src = `${ROOT}/orchestrator/src`;
const { openDatabase } = await import(`${src}/db/client.ts`);
const schema = await import(`${src}/db/schema.ts`);
const { Gallery } = await import(`${src}/gallery/gallery.ts`);
const { ScreenHub } = await import(`${src}/signage/hub.ts`);
const { createRecognizer } = await import(`${src}/recognition/recognize.ts`);

// count statements sent to PGlite
let statements = 0;
const proto = PGlite.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
for (const m of ["query", "exec"]) {
  const orig = proto[m] as (...a: unknown[]) => unknown;
  proto[m] = function (this: unknown, ...a: unknown[]) {
    statements++;
    return orig.apply(this, a);
  };
}

const dim = 128,
  members = 2000,
  nodes = 16,
  perNode = 150;
const rnd = () => {
  const v = new Float32Array(dim);
  let n = 0;
  for (let i = 0; i < dim; i++) {
    v[i] = Math.random() - 0.5;
    n += (v[i] as number) ** 2;
  }
  for (let i = 0; i < dim; i++) v[i] = (v[i] as number) / Math.sqrt(n);
  return v;
};
const near = (e: Float32Array) => {
  const v = new Float32Array(dim);
  let n = 0;
  for (let i = 0; i < dim; i++) {
    v[i] = (e[i] as number) + (Math.random() - 0.5) * 0.02;
    n += (v[i] as number) ** 2;
  }
  for (let i = 0; i < dim; i++) v[i] = (v[i] as number) / Math.sqrt(n);
  return v;
};

const dataDir = await mkdtemp(join(tmpdir(), "h2-rb-"));
const { db, close } = await openDatabase({ dataDir });
await db.insert(schema.stores).values({ id: "soho", name: "Soho" });
await db.insert(schema.screens).values({ id: "scr", storeId: "soho", name: "s" });
for (const [audience, cooldownMs] of [
  ["member", 3600_000],
  ["unknown", 60_000],
] as const)
  await db.insert(schema.promotions).values({
    id: randomUUID(),
    storeId: null,
    audience,
    title: "t",
    messageTemplate: "m",
    durationMs: 5000,
    cooldownMs,
  });
const gallery = new Gallery("s@1", 0.6);
const embs: Float32Array[] = [];
const people = Array.from({ length: members }, (_, i) => ({ id: `p${i}`, displayName: `P ${i}` }));
for (let i = 0; i < members; i += 500) {
  const chunk = people.slice(i, i + 500);
  await db.insert(schema.people).values(chunk);
  await db
    .insert(schema.personKeys)
    .values(chunk.map((p) => ({ personId: p.id, wrappedKey: randomBytes(48), iv: randomBytes(12), masterKeyId: "x" })));
}
for (const p of people) {
  const e = rnd();
  embs.push(e);
  gallery.add({ personId: p.id, displayName: p.displayName, consents: [{ scope: "all-stores", expiresAt: null }] }, [
    e,
  ]);
}
const strangers = Array.from({ length: 200 }, rnd);
const logger = pino({ level: "silent" });
let deps: Record<string, unknown> = {
  db,
  gallery,
  hub: new ScreenHub(),
  events: new EventEmitter(),
  logger,
  promotionMaxAgeMs: 60_000,
};
if (MODE === "old") deps = { ...deps, visitDedupeMs: 600_000 };
else {
  const { VisitLog } = await import(`${src}/recognition/visit-log.ts`);
  const { PersonKeyCache } = await import(`${src}/recognition/key-cache.ts`);
  const { Visitors } = await import(`${src}/visitors/visitors.ts`);
  const { Cooldowns, RuleCache } = await import(`${src}/promotions/trigger.ts`);
  const { MasterKey } = await import(`${src}/privacy/keyring.ts`);
  const mode = process.argv[4] ?? "visitor";
  await db.update(schema.stores).set({ privacyMode: mode });
  deps = {
    ...deps,
    visitLog: await VisitLog.load(db, 600_000, logger),
    keys: (await PersonKeyCache.start({ db, logger })).cache,
    visitors: await Visitors.load(db, new MasterKey(new Uint8Array(randomBytes(32))), "s@1", 0.6),
    cooldowns: new Cooldowns(),
    rules: new RuleCache(db),
  };
}
const recognize = createRecognizer(deps as never);
// each node: 80 % members (each member seen by several nodes, so dedupe matters), 20 % strangers
const work = Array.from({ length: nodes }, (_, n) =>
  Array.from({ length: perNode }, (_, i) => {
    const member = Math.random() < 0.8;
    const e = member
      ? near(embs[(n * 37 + i * 7) % 600] as Float32Array)
      : near(strangers[(n * 13 + i) % 200] as Float32Array);
    return {
      header: {
        v: 1,
        nodeId: `n${n}`,
        seq: i + 1,
        ts: Date.now(),
        space: "s@1",
        kid: "k",
        cameraId: `c${n}`,
        trackId: `t${n}-${i % 40}`,
        quality: 0.9,
      },
      embedding: e,
      node: { id: `n${n}`, storeId: "soho" },
    };
  }),
);
const before = statements;
const t0 = performance.now();
await Promise.all(
  work.map(async (list) => {
    for (const t of list) await recognize(t as never);
  }),
);
const ms = performance.now() - t0;
const total = nodes * perNode;
if (MODE === "new") await (deps.visitLog as { drain(): Promise<void> }).drain();
const visits = (await db.select().from(schema.visits)).length;
console.log(
  JSON.stringify({
    mode: MODE,
    store: process.argv[4] ?? (MODE === "old" ? "n/a" : "visitor"),
    recognitions: total,
    seconds: +(ms / 1000).toFixed(2),
    perSecond: Math.round(total / (ms / 1000)),
    statementsPerRecognition: +((statements - before) / total).toFixed(2),
    visits,
  }),
);
await close();
