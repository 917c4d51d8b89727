import { EventEmitter } from "node:events";
import { mkdir } from "node:fs/promises";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { FacePipeline } from "@glance/models";
import { type DesiredState, encodeMessage, SessionKeyCache, sharedFilterFor, topicFor } from "@glance/shared";
import { serve } from "@hono/node-server";
import type { Aedes } from "aedes";
import { and, eq, isNull } from "drizzle-orm";
import mqtt from "mqtt";
import { type Logger, pino } from "pino";
import { appendAudit } from "./audit/log.ts";
import {
  hashSecret,
  loadOrCreateSealingKey,
  newSecret,
  readAdminTokenFile,
  secretMatches,
  writeAdminTokenFile,
} from "./auth/secrets.ts";
import { BOOTSTRAP_LABEL } from "./auth/token-lifetime.ts";
import { ORCHESTRATOR_USERNAME, startBroker } from "./broker/broker.ts";
import { aedesSource, clientSource } from "./broker/source.ts";
import { type Db, openDatabase } from "./db/client.ts";
import { apiTokens, nodes, stores } from "./db/schema.ts";
import { aedesPublisher, edgeFirst, startEdgeGalleries } from "./edge/edge-galleries.ts";
import { Suppressions } from "./feedback/suppressions.ts";
import { startStatusTracking } from "./fleet/status.ts";
import { startFootfall } from "./footfall/footfall.ts";
import { openSetFromEnv } from "./gallery/open-set.ts";
import { createApp } from "./http/app.ts";
import { newId } from "./http/ids.ts";
import { startIngest } from "./ingest/ingest.ts";
import { galleryBytesWithin, MOSQUITTO_MAX_PACKET_BYTES, orchestratorUser } from "./mosquitto/config.ts";
import { type MosquittoReload, startMosquittoRevocation } from "./mosquitto/revocation.ts";
import { startCrlPublisher } from "./pki/crl.ts";
import { type FleetCa, loadOrCreateFleetCa } from "./pki/fleet-ca.ts";
import { commandSender, startErasureAcks } from "./privacy/erase.ts";
import { loadOrCreateMasterKey } from "./privacy/keyring.ts";
import { loadGallery, sealLegacyTemplates } from "./privacy/templates.ts";
import { Cooldowns, RuleCache } from "./promotions/trigger.ts";
import { PersonKeyCache } from "./recognition/key-cache.ts";
import { createBatchRecognizer } from "./recognition/recognize.ts";
import { VisitLog } from "./recognition/visit-log.ts";
import { DEFAULT_RETENTION_INTERVAL_MS, DEFAULT_VISITOR_RETENTION_MS, startRetention } from "./retention/retention.ts";
import type { Services } from "./services.ts";
import { ScreenHub } from "./signage/hub.ts";
import { Visitors } from "./visitors/visitors.ts";

export type { Rejection } from "./ingest/ingest.ts";
export { generateMosquittoConfig, type MosquittoConfig } from "./mosquitto/config.ts";
export {
  certificateIdentity,
  type FleetCa,
  loadOrCreateFleetCa,
  signingKeyPem,
  type TlsMaterial,
} from "./pki/fleet-ca.ts";
export type { Recognition } from "./recognition/recognize.ts";
export type { PromotionEvent } from "./signage/hub.ts";
export type { VisitorDay } from "./visitors/visitors.ts";

export interface OrchestratorOptions {
  /** PGlite data dir, sealing key, admin token file */
  dataDir: string;
  /** when set: a real Postgres (postgres-js) instead of PGlite */
  databaseUrl?: string;
  /** default 127.0.0.1 */
  host?: string;
  /** default 1883; 0 = ephemeral */
  mqttPort?: number;
  /** default 8080; 0 = ephemeral */
  httpPort?: number;
  /** ONNX models and manifests; models/dist by default */
  modelsDir?: string;
  logger?: Logger;
  /** one visit per person per store within this window; default 10 minutes */
  visitDedupeMs?: number;
  /** templates older than this (a node's backlog) count as visits but trigger no promotion; default 60 s */
  promotionMaxAgeMs?: number;
  /** SSE keep-alive interval; default 15 s */
  pingIntervalMs?: number;
  /**
   * Mutual TLS for the embedded broker: nodes authenticate with fleet-CA certificates (identity = certificate). Without
   * it the broker speaks plain MQTT on loopback only (development). `port` defaults to `mqttPort`; `hostnames` are put
   * in the broker's server certificate besides 127.0.0.1 and localhost (the first one is used in the broker URL).
   */
  mqttTls?: { port?: number; hostnames?: string[] };
  /**
   * An external broker (mosquitto, see `generateMosquittoConfig`) instead of the embedded one: this instance connects
   * to `url` and takes templates through a shared subscription, so N instances each process a template once.
   * `instance`: this instance's name, its own among the instances (`orchestratorInstances` of the generated config):
   * mosquitto takes the client id from the certificate CN, so two instances with one name would disconnect each other;
   * leave it out for a single instance. `tls` defaults to a client certificate issued by this instance's fleet CA (CN
   * `$orchestrator.<instance>`, or `$orchestrator` without one; `orchestratorUser`). `reload`: how mosquitto
   * is told to re-read the fleet CRL after each write (mosquitto/revocation.ts); `dynamicSecurity` (default true):
   * revoked nodes' live sessions are closed through mosquitto's dynamic-security plugin; `maxPacketBytes`: the
   * broker's `max_packet_size` (default the generated config's), which bounds the edge galleries sent through it.
   */
  broker?: {
    external: {
      url: string;
      instance?: string;
      tls?: { ca: string; cert: string; key: string };
      reload?: MosquittoReload;
      dynamicSecurity?: boolean;
      maxPacketBytes?: number;
    };
  };
  /** lifetime of node certificates issued by the fleet CA; default 90 days (nodes renew with `glance-agent renew`) */
  nodeCertValidityDays?: number;
  /**
   * pseudonymous visitor records older than this are deleted, and visitor templates live this long from their first
   * sighting in stores that set no period of their own; default 30 days
   */
  visitorRetentionMs?: number;
  /** how often the retention job runs (it also runs at start); default 1 hour */
  retentionIntervalMs?: number;
  /**
   * how often members-only stores' edge galleries look at the database's change signal and the next consent expiry
   * (nothing is read unless one of them says so); default 10 s
   */
  edgeGalleryPollMs?: number;
  /** master key (hex or base64, 32 bytes) wrapping every person's data key; default env GLANCE_MASTER_KEY, else
   * `<dataDir>/master-key` (created 0600) */
  masterKey?: string;
  /**
   * the gallery (graph search and exact re-scoring, most of ingest's work) on a worker thread of its own, beside the
   * broker, crypto and database work of the main thread; default true. False keeps it on the main thread.
   */
  galleryThread?: boolean;
}

export interface Orchestrator {
  mqttUrl: string;
  httpUrl: string;
  /** created at first start, stored hashed; plaintext kept in dataDir/admin-token (mode 0600) */
  adminToken: string;
  sealingKey: { kid: string; publicKey: string };
  /** tests tap raw publishes via broker.on("publish"); throws in external broker mode */
  broker: Aedes;
  /** the fleet CA in `<dataDir>/pki`: node, broker and orchestrator certificates */
  fleetCa: FleetCa;
  /** "recognition" (Recognition) and "rejection" (Rejection) */
  events: EventEmitter;
  metrics(): { accepted: number; rejected: Record<string, number> };
  stop(): Promise<void>;
}

const DESIRED_DEFAULTS = { templateIntervalMs: 5000, minFaceSizePx: 40 } as const;

/**
 * The admin token survives restarts through its file; a fresh database (e.g. a new Postgres) gets its hash again.
 * Without the file a new token is made, and every earlier bootstrap token still live in the database is revoked in
 * the same transaction (audited): deleting the file and restarting is how the one token that never expires is
 * rotated. The file is written after the commit: should the write fail, the new token is held by nobody and the
 * next start, finding no file again, revokes it as it rotates.
 */
async function ensureAdminToken(db: Db, dataDir: string, log: Logger): Promise<string> {
  const existing = await readAdminTokenFile(dataDir);
  if (existing) {
    const hash = hashSecret(existing);
    const known = await db.select({ id: apiTokens.id }).from(apiTokens).where(eq(apiTokens.tokenHash, hash));
    if (known.length === 0)
      await db.insert(apiTokens).values({ id: newId(), tokenHash: hash, role: "hq-admin", label: BOOTSTRAP_LABEL });
    return existing;
  }
  const token = newSecret("gl_");
  const id = newId();
  const revoked = await db.transaction(async (tx) => {
    const gone = await tx
      .update(apiTokens)
      .set({ revokedAt: new Date() })
      .where(and(eq(apiTokens.label, BOOTSTRAP_LABEL), eq(apiTokens.role, "hq-admin"), isNull(apiTokens.revokedAt)))
      .returning({ id: apiTokens.id });
    await tx.insert(apiTokens).values({ id, tokenHash: hashSecret(token), role: "hq-admin", label: BOOTSTRAP_LABEL });
    return gone.map((r) => r.id);
  });
  await writeAdminTokenFile(dataDir, token);
  if (revoked.length === 0) log.info({ file: `${dataDir}/admin-token` }, "admin token created");
  else {
    log.warn(
      { file: `${dataDir}/admin-token`, revoked },
      "admin token file was missing: a new admin token was made and the earlier one revoked",
    );
    await appendAudit(db, {
      actor: "system:admin-token",
      action: "admin-token.rotate",
      subject: id,
      details: { revokedTokenIds: revoked },
    });
  }
  return token;
}

export async function startOrchestrator(opts: OrchestratorOptions): Promise<Orchestrator> {
  const host = opts.host ?? "127.0.0.1";
  const log = opts.logger ?? pino({ name: "orchestrator" });
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });

  const database = await openDatabase({ dataDir: opts.dataDir, databaseUrl: opts.databaseUrl });
  const { db } = database;
  const cleanups: (() => Promise<unknown>)[] = [() => database.close()];
  const stopAll = async () => {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (error) {
        log.warn({ err: error }, "shutdown step failed");
      }
    }
    cleanups.length = 0;
  };

  try {
    const sealingKey = await loadOrCreateSealingKey(opts.dataDir);
    const adminToken = await ensureAdminToken(db, opts.dataDir, log);

    const faces = await FacePipeline.load(opts.modelsDir ? { modelsDir: opts.modelsDir } : {});
    cleanups.push(() => faces.close());
    const { masterKey, source: masterKeySource } = await loadOrCreateMasterKey(
      opts.dataDir,
      opts.masterKey ?? process.env.GLANCE_MASTER_KEY,
    );
    log.info({ masterKeyId: masterKey.id, source: masterKeySource }, "master key loaded");
    const sealedLegacy = await sealLegacyTemplates(db, masterKey);
    if (sealedLegacy > 0) log.warn({ templates: sealedLegacy }, "plaintext templates from before 0002 sealed at rest");
    // open-set rule from the embedder's calibration and GLANCE_FAR / GLANCE_MARGIN / GLANCE_OPEN_SET
    const openSet = openSetFromEnv(faces.embedder.embedding?.thresholds ?? {});
    const gallery = await loadGallery(
      db,
      masterKey,
      faces.space,
      openSet,
      new Date(),
      opts.galleryThread === false
        ? undefined
        : {
            warn: (message) => log.warn(message),
            // a dead gallery thread is replaced by one rebuilt from the database (loadGallery), at most once a minute
            onRestart: (error) => log.error({ err: error }, "gallery thread died; rebuilt from the database"),
            // without its gallery the orchestrator recognises nobody: /api/health says so, the supervisor restarts it
            onFailure: (error) => log.fatal({ err: error }, "gallery thread failed"),
          },
    );
    cleanups.push(async () => gallery.close?.());
    const rule = gallery.openSet;
    log.info(
      { space: gallery.space, ...gallery.size, threshold: rule.threshold, margin: rule.margin, scale: rule.scale },
      "gallery loaded",
    );
    if (rule.expectedFar > 10 * rule.targetFar || rule.clamped)
      log.warn(
        {
          identities: rule.identities,
          targetFar: rule.targetFar,
          expectedFar: Number(rule.expectedFar.toPrecision(2)),
        },
        "at this gallery size a stranger matches some member more often than the false-accept target",
      );
    // the graph's search breadth is measured (GLANCE_ANN_EF fixes it instead: gallery.ts indexOptionsWithEnv)
    const tuning = await gallery.graphTuned();
    if (tuning) {
      const { ef, source, recall, target, reached, ms } = tuning;
      log.info(
        // stranded: people the parallel build left unreachable, found and placed again (usearch#735)
        { ef, source, recall, ms: ms === undefined ? undefined : Math.round(ms), stranded: gallery.graphRepaired },
        "gallery graph search breadth",
      );
      if (reached === false)
        log.warn({ ef, recall, target }, "gallery graph: no search breadth tried reaches the target recall@1");
    }

    const fleetCa = await loadOrCreateFleetCa(
      opts.dataDir,
      opts.nodeCertValidityDays ? { nodeValidityDays: opts.nodeCertValidityDays } : {},
    );
    const orchestratorSecret = newSecret();
    const external = opts.broker?.external;
    let broker: Awaited<ReturnType<typeof startBroker>> | undefined;
    let clientTls: { ca: string; cert: string; key: string } | undefined;
    let internalUrl: string;
    if (external) {
      const user = orchestratorUser(external.instance); // a bad name fails here, even with `tls` given
      clientTls = external.tls ?? (await fleetCa.issueOrchestratorCertificate(user));
      internalUrl = external.url;
    } else {
      const wildcard = host === "0.0.0.0" || host === "::";
      const hostnames = opts.mqttTls?.hostnames ?? [];
      const tls = opts.mqttTls
        ? {
            ...(await fleetCa.issueServerCertificate(wildcard ? hostnames : [...hostnames, host])),
            urlHost: hostnames[0] ?? (wildcard ? "127.0.0.1" : host),
            async verifyNodeCertificate(nodeId: string, publicKey: string) {
              const [node] = await db
                .select({ key: nodes.signingPublicKey })
                .from(nodes)
                .where(and(eq(nodes.id, nodeId), isNull(nodes.revokedAt)));
              return node?.key === publicKey;
            },
          }
        : undefined;
      if (opts.mqttTls) clientTls = await fleetCa.issueOrchestratorCertificate(ORCHESTRATOR_USERNAME);
      broker = await startBroker({
        host,
        port: opts.mqttTls?.port ?? opts.mqttPort ?? 1883,
        orchestratorSecret,
        logger: log.child({ component: "broker" }),
        async verifyNode(nodeId, password) {
          const [node] = await db
            .select({ hash: nodes.mqttPasswordHash })
            .from(nodes)
            .where(and(eq(nodes.id, nodeId), isNull(nodes.revokedAt)));
          return !!node && secretMatches(password, node.hash);
        },
        ...(tls ? { tls } : {}),
      });
      const started = broker;
      cleanups.push(() => started.close());
      const port = new URL(broker.url).port;
      internalUrl = tls ? `mqtts://${wildcard ? "127.0.0.1" : host}:${port}` : broker.url;
    }
    const mqttUrl = broker?.url ?? internalUrl;

    const client = await mqtt.connectAsync(internalUrl, {
      clientId: `orchestrator-${newId()}`,
      protocolVersion: 4,
      reconnectPeriod: 1000,
      ...(clientTls
        ? { ...clientTls, rejectUnauthorized: true }
        : { username: ORCHESTRATOR_USERNAME, password: orchestratorSecret }),
    });
    cleanups.push(() => client.endAsync());
    const mosquitto = external
      ? await startMosquittoRevocation({
          client,
          logger: log.child({ component: "mosquitto" }),
          ...(external.reload ? { reload: external.reload } : {}),
          ...(external.dynamicSecurity === undefined ? {} : { dynamicSecurity: external.dynamicSecurity }),
        })
      : undefined;
    if (mosquitto) cleanups.push(() => mosquitto.stop());

    // members-only stores: each node gets the store's consented members, sealed to its key (edge/edge-galleries.ts)
    const edge = await startEdgeGalleries({
      client,
      db,
      masterKey,
      sealingKey,
      space: gallery.space,
      threshold: () => gallery.threshold,
      logger: log.child({ component: "edge" }),
      // changes made through any instance on the same Postgres are announced there (migration 0010)
      databaseUrl: opts.databaseUrl,
      ...(opts.edgeGalleryPollMs ? { pollMs: opts.edgeGalleryPollMs } : {}),
      // embedded: straight into the broker (4 MiB galleries); external: through the client, within its packet limit
      ...(broker
        ? { publish: aedesPublisher(broker.aedes) }
        : { maxBytes: galleryBytesWithin(external?.maxPacketBytes ?? MOSQUITTO_MAX_PACKET_BYTES) }),
    });
    cleanups.push(async () => edge.stop());

    const publishDesired = async (nodeId: string): Promise<DesiredState> => {
      const [row] = await db
        .select({ node: nodes, privacyMode: stores.privacyMode, attributes: stores.attributes })
        .from(nodes)
        .innerJoin(stores, eq(stores.id, nodes.storeId))
        .where(eq(nodes.id, nodeId));
      if (!row) throw new Error(`node ${nodeId} vanished`);
      const { node } = row;
      const desired: DesiredState = {
        version: node.desiredVersion,
        storeId: node.storeId,
        sealingKey: { kid: sealingKey.kid, publicKey: sealingKey.publicKey },
        // the store's privacy mode: a count-only store's nodes publish no templates at all
        privacyMode: row.privacyMode,
        // opt-in coarse attributes on anonymous footfall; off, the node does not load the model
        attributes: row.attributes,
        gallerySigningKey: edge.signingPublicKey,
        ...DESIRED_DEFAULTS,
      };
      await client.publishAsync(topicFor("desired", nodeId), encodeMessage("desired", desired), {
        qos: 1,
        retain: true,
      });
      // the node's gallery (members-only) or its withdrawal goes with every desired state, so at start too
      await edge
        .publishNode(nodeId)
        .catch((error: unknown) => log.error({ err: error, nodeId }, "edge gallery not published"));
      return desired;
    };
    // the broker keeps retained messages in memory only: restate every node's desired state after a restart
    for (const node of await db.select({ id: nodes.id }).from(nodes).where(isNull(nodes.revokedAt))) {
      await publishDesired(node.id);
    }

    const events = new EventEmitter();
    const hub = new ScreenHub();
    const suppressions = await Suppressions.load(db);
    const visitorRetentionMs = opts.visitorRetentionMs ?? DEFAULT_VISITOR_RETENTION_MS;
    const visitors = await Visitors.load(db, masterKey, gallery.space, gallery.threshold, visitorRetentionMs);
    log.info({ visitors: visitors.size }, "visitor templates loaded");
    // visitors first seen through another instance on the same database
    const stopVisitorSync = visitors.startSync(10_000, (err) => log.warn({ err }, "visitor sync failed"));
    cleanups.push(async () => stopVisitorSync());
    // and visitors another instance shredded (an erasure, a store leaving visitor mode), dropped here at once
    if (opts.databaseUrl)
      cleanups.push(await visitors.follow(opts.databaseUrl, (err) => log.warn({ err }, "visitor reconcile failed")));
    const recognitionLog = log.child({ component: "recognition" });
    const visitLog = await VisitLog.load(db, opts.visitDedupeMs ?? 10 * 60_000, recognitionLog);
    cleanups.push(() => visitLog.drain());
    const keyCache = await PersonKeyCache.start({ db, logger: recognitionLog, databaseUrl: opts.databaseUrl });
    cleanups.push(() => keyCache.stop());
    const recognizeBatch = createBatchRecognizer({
      suppressions,
      db,
      gallery,
      hub,
      events,
      logger: recognitionLog,
      visitLog,
      keys: keyCache.cache,
      visitors,
      cooldowns: new Cooldowns(),
      rules: new RuleCache(db),
      promotionMaxAgeMs: opts.promotionMaxAgeMs ?? 60_000,
    });
    // node session keys (one signature check + X25519 per node session); a revoked node's are dropped at once
    const sessions = new SessionKeyCache(8192);
    const ingest = await startIngest({
      // embedded: templates straight from the broker in this process; external: the shared subscription
      source: broker ? aedesSource(broker.aedes) : clientSource(client),
      deps: { db, sealingKey, space: gallery.space, sessions },
      events,
      ...(external ? { filter: sharedFilterFor("template") } : {}),
      logger: log.child({ component: "ingest" }),
      // the next batch's gallery search runs while the previous batch finishes
      prepareBatch: (templates) => recognizeBatch.search(templates),
      onAcceptedBatch: async (templates, searched) =>
        (await (searched ? recognizeBatch.finish(templates, searched) : recognizeBatch(templates))).flatMap((o, i) =>
          "error" in o ? [{ template: templates[i] as (typeof templates)[number], error: o.error }] : [],
        ),
    });
    cleanups.push(() => ingest.stop());
    const stopAcks = await startErasureAcks({ client, db, logger: log.child({ component: "erasure" }) });
    cleanups.push(async () => stopAcks());
    const stopRetention = await startRetention({
      db,
      logger: log.child({ component: "retention" }),
      visitorRetentionMs,
      intervalMs: opts.retentionIntervalMs ?? DEFAULT_RETENTION_INTERVAL_MS,
      onVisitorsExpired: (ids) => visitors.forget(ids),
    });
    cleanups.push(async () => stopRetention());
    const stopStatus = await startStatusTracking({ client, db, logger: log.child({ component: "fleet" }) });
    const footfall = await startFootfall({
      client,
      db,
      logger: log.child({ component: "footfall" }),
      ...(external ? { filter: sharedFilterFor("event") } : {}),
    });
    cleanups.push(() => footfall.stop());
    const crl = await startCrlPublisher({
      db,
      ca: fleetCa,
      logger: log.child({ component: "pki" }),
      ...(mosquitto ? { onWritten: mosquitto.reloadCrl } : {}),
    });
    cleanups.push(async () => crl.stop());
    const nodeRevoked = async (nodeId: string) => {
      // the database decides anyway (the replay statement re-reads a node's status); this drops what is cached
      sessions.forgetNode(nodeId);
      ingest.guard.forget(nodeId);
      broker?.disconnectNode(nodeId);
      // nothing left for it to converge on, should it get back in
      await client.publishAsync(topicFor("desired", nodeId), Buffer.alloc(0), { qos: 1, retain: true });
      await edge
        .publishNode(nodeId)
        .catch((error: unknown) => log.error({ err: error, nodeId }, "edge gallery not withdrawn"));
      // mosquitto: the CRL reloaded (refresh), then the live session closed and every topic denied
      await crl.refresh();
      await mosquitto?.dropNode(nodeId);
    };
    cleanups.push(async () => stopStatus());

    const metrics = () => ({
      ...ingest.metrics,
      rejected: { ...ingest.metrics.rejected } as Record<string, number>,
      statements: { ...ingest.metrics.statements },
    });
    const services: Services = {
      db,
      hub,
      gallery,
      personKeys: keyCache.cache,
      faces,
      sealingKey: { kid: sealingKey.kid, publicKey: sealingKey.publicKey },
      mqttUrl,
      fleetCa,
      publishDesired,
      metrics,
      masterKey,
      suppressions,
      visitors,
      sendCommand: edgeFirst(edge, commandSender(client), log.child({ component: "edge" })),
      nodeRevoked,
      logger: log.child({ component: "http" }),
      pingIntervalMs: opts.pingIntervalMs ?? 15_000,
    };
    const app = createApp(services);
    const server = await new Promise<Server>((resolve, reject) => {
      const s = serve({ fetch: app.fetch, port: opts.httpPort ?? 8080, hostname: host }, () =>
        resolve(s as Server),
      ) as Server;
      s.once("error", reject);
    });
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          // open SSE streams would otherwise hold the server forever
          server.closeAllConnections();
        }),
    );
    const httpUrl = `http://${host}:${(server.address() as AddressInfo).port}`;
    log.info({ httpUrl, mqttUrl, external: !!external }, "orchestrator started");

    return {
      mqttUrl,
      httpUrl,
      adminToken,
      sealingKey: services.sealingKey,
      get broker(): Aedes {
        if (!broker) throw new Error("no embedded broker: this orchestrator uses an external one");
        return broker.aedes;
      },
      fleetCa,
      events,
      metrics,
      stop: stopAll,
    };
  } catch (error) {
    await stopAll();
    throw error;
  }
}
