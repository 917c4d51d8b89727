import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createConnection, createServer } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { contract, generateSigningKeyPair, type KeyPair } from "@glance/shared";
import mqtt, { type MqttClient } from "mqtt";
import { pino } from "pino";
import { type Orchestrator, startOrchestrator } from "../index.ts";
import { generateMosquittoConfig, orchestratorUser } from "../mosquitto/config.ts";
import { type FleetCa, loadOrCreateFleetCa, signingKeyPem } from "../pki/fleet-ca.ts";
import { freshPostgres, requiredPostgresUrl, runPostgres } from "./harness.ts";

export const MOSQUITTO = "/usr/sbin/mosquitto";
export const haveMosquitto = existsSync(MOSQUITTO);
/** mosquitto suites need Postgres (the instances share it) and Debian's mosquitto; CI must have both */
export const runMosquitto = runPostgres && (haveMosquitto || !!process.env.GLANCE_REQUIRE_POSTGRES);

export interface FleetNode {
  nodeId: string;
  cameraId: string;
  signingKey: KeyPair;
  /** the node's mutual-TLS files, as a claimed node holds them */
  tls: { ca: string; cert: string; key: string };
  /** the broker address the orchestrator gave it */
  mqttUrl: string;
}

/** mosquitto with the generated configuration and orchestrator instances on one Postgres database behind it. */
export interface MosquittoFleet {
  /** temp dir: `mosquitto/` (config, acl, ca.pem) and `orchestrator/` (the instances' shared data dir) */
  dir: string;
  url: string;
  broker: ChildProcess;
  /** the instances' Postgres database (dropped by `stop`) */
  databaseUrl: string;
  orchs: Orchestrator[];
  /** each instance's name (`broker.external.instance`), in the order of `orchs` */
  instances: string[];
  /** everything mosquitto printed so far */
  log(): string;
  /** POST to the first instance's API as admin; anything but 201 throws */
  api(path: string, json: unknown): Promise<Record<string, unknown>>;
  register(storeId: string): Promise<FleetNode>;
  /** a node's MQTT connection over mutual TLS, closed by `stop` */
  connect(node: FleetNode): Promise<MqttClient>;
  /**
   * a connection with the orchestrator certificate of `instance` (default `TOOL_INSTANCE`, which the ACL lists beside
   * the instances: an operator's tool), with a client id of its own choosing; closed by `stop`
   */
  connectOrchestrator(instance?: string): Promise<MqttClient>;
  /** as an operator adds or removes an instance: the configuration generated again for these names, then SIGHUP */
  reconfigure(orchestratorInstances: string[]): Promise<void>;
  stop(): Promise<void>;
}

/** the instance name of `connectOrchestrator`'s connection: an orchestrator that is none of the fleet's instances */
export const TOOL_INSTANCE = "tool";

/**
 * Chains that outgrow one box: mosquitto with the generated configuration (mutual TLS, certificate CN as user name,
 * contract ACL, the fleet CRL, the dynamic-security plugin, a pid file) and `instances` orchestrators on one fresh Postgres database, sharing one data
 * directory (sealing key, fleet CA, admin token) and the template subscription.
 */
export async function startMosquittoFleet(
  prefix: string,
  instances = 2,
  opts: {
    /** false: the instances are not told how to make mosquitto reload the CRL (a misconfigured or remote broker) */
    reloadCrl?: boolean;
  } = {},
): Promise<MosquittoFleet> {
  if (!haveMosquitto) throw new Error(`${MOSQUITTO} is missing: apt-get install mosquitto`);
  const pg = await freshPostgres(requiredPostgresUrl());
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const dataDir = join(dir, "orchestrator");
  const ca = await loadOrCreateFleetCa(dataDir);
  // each its own name: mosquitto makes the certificate CN the client id, so two of one name would kick each other off
  const names = Array.from({ length: instances }, (_, i) => `instance-${i + 1}`);
  const { url, broker, pidFile, log, reconfigure } = await startMosquitto(join(dir, "mosquitto"), ca, {
    orchestratorInstances: [...names, TOOL_INSTANCE],
  });
  const orchs: Orchestrator[] = [];
  for (const instance of names) {
    orchs.push(
      await startOrchestrator({
        dataDir,
        databaseUrl: pg.url,
        httpPort: 0,
        logger: pino({ level: process.env.LOG_LEVEL ?? "silent" }),
        // the instances tell mosquitto to reload the CRL themselves, as in production: the tests send no signal
        broker: { external: { url, instance, ...(opts.reloadCrl === false ? {} : { reload: { pidFile } }) } },
      }),
    );
  }
  const clients: MqttClient[] = [];

  const api = async (path: string, json: unknown) => {
    const o = orchs[0] as Orchestrator;
    const res = await fetch(new URL(path, o.httpUrl), {
      method: "POST",
      headers: { authorization: `Bearer ${o.adminToken}`, "content-type": "application/json" },
      body: JSON.stringify(json),
    });
    const body = (await res.json()) as Record<string, unknown>;
    if (res.status !== 201) throw new Error(`${path}: ${res.status} ${JSON.stringify(body)}`);
    return body;
  };

  return {
    dir,
    url,
    broker,
    databaseUrl: pg.url,
    orchs,
    instances: names,
    log,
    api,
    async register(storeId) {
      const signingKey = generateSigningKeyPair();
      const nodeId = `node-${Math.random().toString(36).slice(2, 10)}`;
      const body = (await api("/api/nodes", {
        nodeId,
        storeId,
        cameraId: "entrance",
        signingPublicKey: signingKey.publicKey,
      })) as { tls: { ca: string; cert: string }; mqtt: { url: string } };
      const tls = { ...body.tls, key: signingKeyPem(signingKey) };
      return { nodeId, cameraId: "entrance", signingKey, tls, mqttUrl: body.mqtt.url };
    },
    async connect(node) {
      const client = await mqtt.connectAsync(url, {
        ...node.tls,
        clientId: `glance-node-${node.nodeId}`,
        protocolVersion: 4,
        reconnectPeriod: 0,
        connectTimeout: 5000,
      });
      clients.push(client);
      return client;
    },
    async connectOrchestrator(instance = TOOL_INSTANCE) {
      const tls = await ca.issueOrchestratorCertificate(orchestratorUser(instance));
      const client = await mqtt.connectAsync(url, {
        ...tls,
        clientId: `orchestrator-test-${Math.random().toString(36).slice(2, 10)}`,
        protocolVersion: 4,
        reconnectPeriod: 0,
      });
      clients.push(client);
      return client;
    },
    reconfigure: (orchestratorInstances) => reconfigure({ orchestratorInstances }),
    async stop() {
      await Promise.all(clients.map((c) => c.endAsync(true).catch(() => {})));
      for (const o of orchs) await o.stop();
      broker.kill("SIGTERM");
      await pg.drop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface MosquittoBroker {
  url: string;
  broker: ChildProcess;
  pidFile: string;
  /** everything mosquitto printed so far */
  log(): string;
  /** the configuration generated again (same port, certificates and CRL) with `opts`, then SIGHUP; resolves once reloaded */
  reconfigure(opts: { orchestratorInstances?: string[] }): Promise<void>;
}

/**
 * mosquitto on a free loopback port with the generated configuration in `dir` and `ca`'s certificates (an empty CRL
 * is written first: mosquitto wants it at start). `orchestratorInstances`: the instances' names, as for
 * `generateMosquittoConfig` (default one unnamed instance, `$orchestrator`). Killed by the caller (`broker.kill()`).
 */
export async function startMosquitto(
  dir: string,
  ca: FleetCa,
  opts: { orchestratorInstances?: string[] } = {},
): Promise<MosquittoBroker> {
  if (!haveMosquitto) throw new Error(`${MOSQUITTO} is missing: apt-get install mosquitto`);
  const port = await freePort();
  // the orchestrators rewrite it as they start and at each revocation
  await writeFile(ca.crlFile, await ca.createCrl([]));
  const tls = await ca.issueServerCertificate(["localhost"]);
  const generate = (o: typeof opts) =>
    generateMosquittoConfig(contract, {
      dir,
      port,
      user: userInfo().username,
      tls,
      crlFile: ca.crlFile,
      ...(o.orchestratorInstances ? { orchestratorInstances: o.orchestratorInstances } : {}),
    });
  const { confFile, pidFile } = await generate(opts);
  let log = "";
  const broker = spawn(MOSQUITTO, ["-c", confFile], { stdio: ["ignore", "pipe", "pipe"] });
  broker.stdout?.on("data", (d: Buffer) => {
    log += d.toString();
  });
  broker.stderr?.on("data", (d: Buffer) => {
    log += d.toString();
  });
  await waitForPort(port).catch((e: Error) => {
    broker.kill("SIGTERM");
    throw new Error(`${e.message}: ${log}`);
  });
  const reloads = () => log.split("Reloading config").length;
  return {
    url: `mqtts://127.0.0.1:${port}`,
    broker,
    pidFile,
    log: () => log,
    async reconfigure(o) {
      await generate(o);
      const before = reloads();
      broker.kill("SIGHUP");
      const until = Date.now() + 10_000;
      while (reloads() === before) {
        if (Date.now() > until) throw new Error(`mosquitto did not reload: ${log}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function waitForPort(port: number, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ port, host: "127.0.0.1" }, () => {
        s.destroy();
        resolve(true);
      }).on("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`mosquitto did not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
