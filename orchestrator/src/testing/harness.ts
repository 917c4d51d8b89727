import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  encodeEmbedding,
  generateSigningKeyPair,
  type KeyPair,
  type SealedTemplate,
  type TemplateHeader,
  TemplateSealer,
} from "@glance/shared";
import mqtt, { type MqttClient } from "mqtt";
import { pino } from "pino";
import postgres from "postgres";
import { type Orchestrator, type OrchestratorOptions, startOrchestrator } from "../index.ts";
import { signingKeyPem } from "../pki/fleet-ca.ts";

/**
 * Test support: a real orchestrator (PGlite in a temp dir or a fresh database on DATABASE_URL, broker and HTTP on
 * port 0) and small clients that talk to it the way nodes and browsers do. Nothing here stands in for our code.
 */

export const demoDir = join(import.meta.dirname, "..", "..", "..", "demo", "people");

export interface Harness {
  orch: Orchestrator;
  dataDir: string;
  /** the fresh Postgres database this harness runs on; undefined on PGlite */
  databaseUrl: string | undefined;
  /** fetch against the orchestrator's HTTP API, with the admin token unless `token` is given */
  api(path: string, init?: RequestInit & { token?: string | null; json?: unknown }): Promise<Response>;
  restart(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The Postgres suites run when DATABASE_URL is set, and must run when GLANCE_REQUIRE_POSTGRES is (CI): then a
 * missing URL fails them instead of skipping them quietly.
 */
export const postgresUrl = process.env.DATABASE_URL;
export const runPostgres = !!(postgresUrl || process.env.GLANCE_REQUIRE_POSTGRES);

export function requiredPostgresUrl(): string {
  if (!postgresUrl) throw new Error("GLANCE_REQUIRE_POSTGRES is set but DATABASE_URL is not: start PostgreSQL first.");
  return postgresUrl;
}

/**
 * The databases a suite runs on: `for (const backend of databaseBackends) describe(...)`, starting its harness with
 * `startHarness({ databaseUrl: backend.url() })`. PGlite always; Postgres when `runPostgres` (a suite for a server
 * that is not there is not defined, rather than defined and skipped).
 */
export const databaseBackends: readonly { name: string; url(): string | undefined }[] = [
  { name: "PGlite", url: () => undefined },
  ...(runPostgres ? [{ name: "Postgres", url: () => postgresUrl ?? requiredPostgresUrl() }] : []),
];

/** A throwaway database on the Postgres server at `url`, dropped by `drop()`. */
export async function freshPostgres(url: string): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `glance_test_${randomBytes(6).toString("hex")}`;
  const admin = postgres(url, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  await admin.end();
  const dbUrl = new URL(url);
  dbUrl.pathname = `/${name}`;
  return {
    url: dbUrl.toString(),
    async drop() {
      const a = postgres(url, { max: 1, onnotice: () => {} });
      await a.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await a.end();
    },
  };
}

export async function startHarness(
  opts: { databaseUrl?: string | undefined } & Partial<OrchestratorOptions> = {},
): Promise<Harness> {
  const dataDir = await mkdtemp(join(tmpdir(), "glance-orch-test-"));
  const pg = opts.databaseUrl ? await freshPostgres(opts.databaseUrl) : undefined;
  const options: OrchestratorOptions = {
    logger: pino({ level: process.env.LOG_LEVEL ?? "silent" }),
    mqttPort: 0,
    httpPort: 0,
    ...opts,
    dataDir,
    ...(pg ? { databaseUrl: pg.url } : {}),
  };
  let orch = await startOrchestrator(options);
  const harness: Harness = {
    get orch() {
      return orch;
    },
    dataDir,
    databaseUrl: pg?.url,
    api(path, init = {}) {
      const { token = orch.adminToken, json, ...rest } = init;
      const headers = new Headers(rest.headers);
      if (token) headers.set("authorization", `Bearer ${token}`);
      if (json !== undefined) headers.set("content-type", "application/json");
      return fetch(new URL(path, orch.httpUrl), {
        ...rest,
        headers,
        ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
      });
    },
    async restart() {
      await orch.stop();
      orch = await startOrchestrator(options);
    },
    async close() {
      await orch.stop();
      await pg?.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return harness;
}

export async function expectJson<T = Record<string, unknown>>(res: Response, status: number): Promise<T> {
  const body = (await res.json()) as T;
  if (res.status !== status) throw new Error(`expected HTTP ${status}, got ${res.status}: ${JSON.stringify(body)}`);
  return body;
}

/**
 * Enrols a person through the API from demo photos (`photos`: paths under demo/people), with consent source
 * "store-counter" unless `fields` (any enrolment form field) says otherwise.
 */
export async function enrolDemoPerson(
  h: Harness,
  displayName: string,
  photos: readonly string[],
  fields: Record<string, string> = {},
): Promise<{ personId: string; templates: { id: string; space: string }[] }> {
  const form = new FormData();
  form.set("displayName", displayName);
  form.set("consentSource", "store-counter");
  for (const [k, v] of Object.entries(fields)) form.set(k, v);
  for (const p of photos)
    form.append("photos", new File([await readFile(join(demoDir, p))], p.split("/").pop() as string));
  return expectJson(await h.api("/api/people", { method: "POST", body: form }), 201);
}

export interface TestNode {
  nodeId: string;
  cameraId: string;
  signingKey: KeyPair;
  mqtt: { url: string; username: string; password: string };
  /** the node's mutual-TLS files as a claimed node holds them (an external broker such as mosquitto wants them) */
  tls: { ca: string; cert: string; key: string };
}

export async function createStore(
  h: Harness,
  id = `store-${randomUUID().slice(0, 8)}`,
  name = "Glance Soho",
): Promise<string> {
  await expectJson(await h.api("/api/stores", { method: "POST", json: { id, name } }), 201);
  return id;
}

export async function createScreen(h: Harness, storeId: string): Promise<{ screenId: string; token: string }> {
  const body = await expectJson<{ screen: { id: string }; token: string }>(
    await h.api("/api/screens", { method: "POST", json: { storeId, name: "Entrance screen" } }),
    201,
  );
  return { screenId: body.screen.id, token: body.token };
}

export async function registerNode(
  h: Harness,
  storeId: string,
  nodeId = `node-${randomUUID().slice(0, 8)}`,
): Promise<TestNode> {
  const signingKey = generateSigningKeyPair();
  const cameraId = "entrance";
  const body = await expectJson<{ mqtt: TestNode["mqtt"]; tls: { ca: string; cert: string } }>(
    await h.api("/api/nodes", {
      method: "POST",
      json: { nodeId, storeId, cameraId, signingPublicKey: signingKey.publicKey },
    }),
    201,
  );
  return { nodeId, cameraId, signingKey, mqtt: body.mqtt, tls: { ...body.tls, key: signingKeyPem(signingKey) } };
}

export function connectNode(node: Pick<TestNode, "mqtt">, password = node.mqtt.password): Promise<MqttClient> {
  return mqtt.connectAsync(node.mqtt.url, {
    username: node.mqtt.username,
    password,
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5000,
  });
}

/** One sealer per node identity, as a node-agent process holds one: its sessions rotate like a node's. */
const sealers = new Map<string, TemplateSealer>();

/** A sealed template exactly as a node would publish it (v2: under the node's current session). */
export function sealTemplate(args: {
  node: Pick<TestNode, "nodeId" | "cameraId" | "signingKey">;
  seq: number;
  embedding: Float32Array;
  recipient: { kid: string; publicKey: string };
  space: string;
  trackId?: string;
  ts?: number;
}): SealedTemplate {
  const header: TemplateHeader = {
    v: 2,
    nodeId: args.node.nodeId,
    seq: args.seq,
    ts: args.ts ?? Date.now(),
    space: args.space,
    kid: args.recipient.kid,
    cameraId: args.node.cameraId,
    trackId: args.trackId ?? `t${args.seq}`,
    quality: 0.9,
  };
  const id = `${args.node.nodeId}|${args.node.signingKey.publicKey}`;
  let sealer = sealers.get(id);
  if (!sealer) {
    sealer = new TemplateSealer({ nodeId: args.node.nodeId, signingKey: args.node.signingKey });
    sealers.set(id, sealer);
  }
  return { ...header, ...sealer.seal(encodeEmbedding(args.embedding), header, args.recipient.publicKey) };
}

export function randomEmbedding(dim = 512): Float32Array {
  const v = new Float32Array(dim);
  let n = 0;
  for (let i = 0; i < dim; i++) {
    v[i] = Math.random() - 0.5;
    n += (v[i] as number) ** 2;
  }
  for (let i = 0; i < dim; i++) v[i] = (v[i] as number) / Math.sqrt(n);
  return v;
}

/** Resolves with the first event `name` whose payload satisfies `match`, or rejects after `timeoutMs`. */
export function nextEvent<T>(
  emitter: { on(e: string, l: (v: T) => void): unknown; off(e: string, l: (v: T) => void): unknown },
  name: string,
  match: (v: T) => boolean = () => true,
  timeoutMs = 10_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(name, listener);
      reject(new Error(`no "${name}" event within ${timeoutMs} ms`));
    }, timeoutMs);
    const listener = (v: T) => {
      if (!match(v)) return;
      clearTimeout(timer);
      emitter.off(name, listener);
      resolve(v);
    };
    emitter.on(name, listener);
  });
}

export interface SseEvent {
  event: string;
  data: string;
}

/**
 * A minimal EventSource over fetch: collects events until `stop` returns true for one of them, the signal aborts
 * or the timeout passes, and resolves with everything received.
 */
export async function openSse(url: string, opts: { headers?: Record<string, string> } = {}) {
  const controller = new AbortController();
  const res = await fetch(url, { headers: opts.headers ?? {}, signal: controller.signal });
  if (res.status !== 200 || !res.body) throw new Error(`SSE ${url} answered ${res.status}: ${await res.text()}`);
  const events: SseEvent[] = [];
  const waiters: { match: (e: SseEvent) => boolean; resolve: (e: SseEvent) => void }[] = [];
  const pump = (async () => {
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let cut = buffer.indexOf("\n\n");
        while (cut >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          cut = buffer.indexOf("\n\n");
          const event: SseEvent = { event: "message", data: "" };
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event.event = line.slice(6).trim();
            else if (line.startsWith("data:")) event.data += line.slice(5).trimStart();
          }
          events.push(event);
          for (const w of [...waiters]) {
            if (w.match(event)) {
              waiters.splice(waiters.indexOf(w), 1);
              w.resolve(event);
            }
          }
        }
      }
    } catch {
      // aborted
    }
  })();
  return {
    events,
    next(match: (e: SseEvent) => boolean, timeoutMs = 10_000): Promise<SseEvent> {
      const seen = events.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching SSE event within ${timeoutMs} ms`)), timeoutMs);
        waiters.push({
          match,
          resolve: (e) => {
            clearTimeout(timer);
            resolve(e);
          },
        });
      });
    },
    async close() {
      controller.abort();
      await pump;
    },
  };
}
