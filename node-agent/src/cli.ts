#!/usr/bin/env -S npx --no-install tsx
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_EMBEDDER } from "@glance/models";
import type { KeyPair } from "@glance/shared";
import { GlanceError, isGlanceError } from "@glance/shared";
import type { Logger } from "pino";
import { pino } from "pino";
import { startAgent } from "./agent.ts";
import { inspectCertificate, nextRenewalCheckMs, renewalDue, renewCertificate } from "./certificate.ts";
import { keyFile, loadMqttTls, loadOrCreateKey, type NodeConfig, readConfig, writeCertificate } from "./config.ts";
import { doctor, formatChecks } from "./doctor.ts";
import { benchStages, formatStageBench } from "./stage-bench.ts";

const DEMO_VIDEO = new URL("../../demo/people/video/hamilton-clip.mp4", import.meta.url).pathname;

const USAGE = `glance-agent run --config <node.json>       run the node
glance-agent doctor --config <node.json>    check key, certificate, disk, clock, models, camera, broker; exit 1 on a failure
glance-agent renew --config <node.json> [--if-due]
                                            renew the node's broker certificate now (or only when a third of its
                                            lifetime is left), proving possession of the node key; needs apiUrl
glance-agent bench [--width 640] [--frames 150] [--video file] [--embedder name]... [--json]
                                            per-stage latency on this CPU (fp32 and int8 embedders if installed)

Runs one camera node. The config file (JSON):
  nodeId, cameraId          ids this node was claimed with
  mqtt: { url, username?, password?, ca?, cert? }
                            broker from the claim. Mutual TLS (mqtts://): ca = fleet-ca.pem, cert = node-cert.pem, the
                            key is the node's identity key in dataDir; no password then. Plain MQTT (development):
                            username + password (password may come from GLANCE_MQTT_PASSWORD)
  apiUrl?                   orchestrator URL (https://hq.example.com): the running agent renews its certificate
                            there when a third of its lifetime is left, and reconnects with the new one
  source: one of
    { kind: "picamera", width?, height?, fps? }            Raspberry Pi camera through rpicam-vid (MJPEG)
    { kind: "v4l2", device: "/dev/video0", inputFormat?, captureWidth?, captureHeight?, captureFps?, fps?, width? }
    { kind: "rtsp", url: "rtsp://user:pass@cam/stream", fps?, width? }
    { kind: "replay", path, loop?, fps?, width?, pace? }   a video file
    { kind: "folder", path, loop?, fps?, pace? }           a folder of images
  dataDir                   node state: identity key, sequence numbers, outgoing queue (created 0700)
  modelsDir?, models?       face models (default: the models package's dist; models: { detector?, embedder? })
  queueMaxBytes?            outgoing queue bound on disk (default 268435456 = 256 MiB); oldest dropped beyond
  heartbeatMs?              status heartbeat period (default 30000)
  watchdog?                 { stallMs?, cameraSilenceMs?, backoffMs?, backoffMaxMs?, maxRestarts? }
  logLevel?                 pino level (default info)
Relative paths are resolved against the config file's folder.`;

/**
 * Renews the node certificate (writing `mqtt.cert`) when `force`, or when it is missing, expired or has less than a
 * third of its lifetime left. Returns the new certificate's facts, or undefined when nothing was due.
 */
async function renew(config: NodeConfig, key: KeyPair, log: Logger, force: boolean) {
  const { cert: certFile, ca: caFile } = config.mqtt;
  if (!certFile || !caFile) {
    throw new GlanceError("CONFIG_INVALID", "The config has no mqtt.cert/mqtt.ca: this node does not use mutual TLS.");
  }
  if (!force) {
    let due = true;
    try {
      due = renewalDue(
        inspectCertificate(readFileSync(certFile, "utf8"), readFileSync(caFile, "utf8"), config.nodeId, key),
      );
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
    if (!due) return undefined;
  }
  if (!config.apiUrl) {
    throw new GlanceError(
      "CONFIG_INVALID",
      "The certificate needs renewing but the config has no apiUrl (the orchestrator's URL): add it, or claim again.",
    );
  }
  const renewed = await renewCertificate({ apiUrl: config.apiUrl, nodeId: config.nodeId, key });
  const facts = inspectCertificate(renewed.cert, renewed.ca, config.nodeId, key);
  if (facts.problems.length > 0) {
    throw new GlanceError("CONFIG_INVALID", `The renewed certificate cannot be used: ${facts.problems.join("; ")}.`);
  }
  writeCertificate(certFile, renewed.cert);
  if (readFileSync(caFile, "utf8") !== renewed.ca) writeCertificate(caFile, renewed.ca);
  log.info({ serial: facts.serial, notAfter: facts.notAfter.toISOString() }, "node certificate renewed");
  return facts;
}

async function run(configFile: string): Promise<number> {
  const config = readConfig(configFile);
  const log = pino({ name: "glance-agent", level: config.logLevel });
  const { key, created } = loadOrCreateKey(config.dataDir);
  // the public key is what HQ registers for this node; stdout so an installer can capture it
  process.stdout.write(`node ${config.nodeId} public signing key: ${key.publicKey}${created ? " (new)" : ""}\n`);

  const usesTls = !!config.mqtt.cert;
  // a node that was off past its renewal window renews before connecting (its expired certificate would be refused)
  // HQ out of reach is no reason not to run: the queue holds templates and the running agent retries the renewal
  if (usesTls && config.apiUrl) {
    await renew(config, key, log, false).catch((err: unknown) =>
      log.warn({ err: (err as Error).message }, "certificate renewal at start failed; retrying while running"),
    );
  }
  const password = config.mqtt.password ?? process.env.GLANCE_MQTT_PASSWORD;
  if (!password && !usesTls)
    throw new GlanceError(
      "CONFIG_INVALID",
      "No MQTT password: set mqtt.password in the config or GLANCE_MQTT_PASSWORD, or mqtt.ca + mqtt.cert (mutual TLS).",
    );
  const stopped = new Promise<number>((done) => {
    process.once("SIGINT", () => done(0));
    process.once("SIGTERM", () => done(0));
  });

  for (;;) {
    const tls = loadMqttTls(config, key);
    const agent = await startAgent({
      nodeId: config.nodeId,
      cameraId: config.cameraId,
      mqtt: {
        url: config.mqtt.url,
        username: config.mqtt.username ?? config.nodeId,
        // the certificate is the identity on a TLS broker; a password there is ignored
        password: password ?? "",
        ...(tls ? { ca: tls.ca, cert: tls.cert, key: tls.key } : {}),
      },
      signingKey: key,
      source: config.source,
      dataDir: config.dataDir,
      modelsDir: config.modelsDir,
      models: config.models,
      queueMaxBytes: config.queueMaxBytes,
      heartbeatMs: config.heartbeatMs,
      watchdog: config.watchdog,
      logger: log,
    });
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      stopped,
      new Promise<number | "renewed">((done) => {
        agent.events.once("source-ended", () => done(0));
        // a dead camera exits non-zero so the supervisor (systemd, docker) restarts the node
        agent.events.once("error", () => done(1));
        if (tls && config.apiUrl) {
          // wakes when renewal falls due (at most every 6 h), and retries a failed renewal well before expiry
          const check = (failed: boolean) => {
            timer = setTimeout(
              () => {
                renew(config, key, log, false).then(
                  (facts) => (facts ? done("renewed") : check(false)),
                  (err: unknown) => {
                    log.warn({ err: (err as Error).message }, "certificate renewal failed; retrying later");
                    check(true);
                  },
                );
              },
              nextRenewalCheckMs(tls.facts, new Date(), failed),
            );
            timer.unref();
          };
          check(false);
        }
      }),
    ]);
    clearTimeout(timer);
    await agent.stop();
    if (outcome !== "renewed") return outcome;
    // the MQTT client keeps the certificate it was built with: start again with the new one
    log.info("reconnecting with the renewed certificate");
  }
}

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: "string", short: "c" },
      help: { type: "boolean", short: "h" },
      json: { type: "boolean" },
      width: { type: "string", default: "640" },
      frames: { type: "string", default: "150" },
      video: { type: "string", default: DEMO_VIDEO },
      embedder: { type: "string", multiple: true },
      "models-dir": { type: "string" },
      "if-due": { type: "boolean" },
    },
  });
  const command = positionals[0];
  if (values.help || !command || !["run", "doctor", "bench", "renew"].includes(command)) {
    process.stderr.write(`${USAGE}\n`);
    return values.help ? 0 : 2;
  }
  if (command === "bench") {
    // the embedder nodes run (GLANCE_EMBEDDER, as the models package reads it) and its int8 build
    const embedder = process.env.GLANCE_EMBEDDER?.trim() || DEFAULT_EMBEDDER;
    const result = await benchStages({
      video: resolve(values.video),
      width: Number(values.width),
      frames: Number(values.frames),
      modelsDir: values["models-dir"],
      embedders: values.embedder ?? [embedder, `${embedder}-int8`],
    });
    process.stdout.write(`${values.json ? JSON.stringify(result, null, 2) : formatStageBench(result)}\n`);
    return 0;
  }
  if (!values.config) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  if (command === "doctor") {
    const config = readConfig(values.config);
    const checks = await doctor(config, config.mqtt.password ?? process.env.GLANCE_MQTT_PASSWORD);
    process.stdout.write(`${values.json ? JSON.stringify(checks, null, 2) : formatChecks(checks)}\n`);
    return checks.every((c) => c.ok) ? 0 : 1;
  }
  if (command === "renew") {
    const config = readConfig(values.config);
    // stdout carries the one-line result a script reads
    const log = pino({ name: "glance-agent", level: config.logLevel }, process.stderr);
    // a fresh key would never match the registered one: renewal needs the key the node was claimed with
    if (!existsSync(keyFile(config.dataDir))) {
      throw new GlanceError(
        "CONFIG_INVALID",
        `${keyFile(config.dataDir)} does not exist: restore the node's key, or claim the node again.`,
      );
    }
    const { key } = loadOrCreateKey(config.dataDir);
    const facts = await renew(config, key, log, !values["if-due"]);
    process.stdout.write(
      facts
        ? `renewed: serial ${facts.serial}, valid until ${facts.notAfter.toISOString()} (${facts.daysLeft} days)\n`
        : "not due: more than a third of the certificate's lifetime is left\n",
    );
    return 0;
  }
  return run(values.config);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    const message = isGlanceError(err) ? `${err.code}: ${err.message}` : (err as Error).stack;
    process.stderr.write(`glance-agent: ${message}\n`);
    process.exit(1);
  },
);
