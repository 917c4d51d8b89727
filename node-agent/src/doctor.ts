import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, statfsSync, statSync } from "node:fs";
import { FacePipeline } from "@glance/models";
import { isGlanceError, type KeyPair } from "@glance/shared";
import { connectAsync } from "mqtt";
import { pino } from "pino";
import { CERT_WARN_DAYS } from "./certificate.ts";
import { keyFile, loadMqttTls, type MqttTls, type NodeConfig } from "./config.ts";
import { describeSource, openSource } from "./sources/index.ts";
import { modelLabel } from "./telemetry.ts";

export interface Check {
  name: string;
  ok: boolean;
  /** a warning does not fail the doctor */
  warn?: boolean;
  detail: string;
  /** what to do about it, when not ok */
  next?: string;
}

/** Nothing made by this project can predate this: a clock before it has never been set (no RTC, no NTP yet). */
const CLOCK_FLOOR = Date.UTC(2025, 0, 1);
const CAMERA_WAIT_MS = 15_000;
const BROKER_WAIT_MS = 8000;
const MIN_FREE_BYTES = 512 * 1024 * 1024;

const why = (err: unknown) => (isGlanceError(err) ? `${err.code}: ${err.message}` : (err as Error).message);

/**
 * `glance-agent doctor`: every check a technician needs after installing a node, each with a next step. Checks run
 * one after another and never change the node's state (the key is not created or re-moded, the broker session uses
 * its own client id, so a running agent is not disturbed).
 */
export async function doctor(config: NodeConfig, password: string | undefined): Promise<Check[]> {
  const checks: Check[] = [];
  checks.push(checkKey(config.dataDir));
  let tls: MqttTls | undefined;
  if (config.mqtt.cert) {
    const cert = checkCertificate(config);
    checks.push(cert.check);
    tls = cert.tls;
  }
  checks.push(checkDisk(config.dataDir));
  checks.push(checkClock());
  checks.push(await checkModels(config));
  checks.push(await checkCamera(config));
  checks.push(await checkBroker(config, password, tls));
  return checks;
}

function checkKey(dataDir: string): Check {
  const name = "node key";
  const file = keyFile(dataDir);
  let mode: number;
  let uid: number;
  try {
    const st = statSync(file);
    mode = st.mode & 0o777;
    uid = st.uid;
    const key = JSON.parse(readFileSync(file, "utf8")) as { publicKey?: unknown; privateKey?: unknown };
    if (typeof key.publicKey !== "string" || typeof key.privateKey !== "string") throw new Error("not a node key");
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === "ENOENT";
    return {
      name,
      ok: false,
      detail: missing ? `${file} does not exist` : `${file} cannot be read: ${why(err)}`,
      next: missing
        ? "Claim the node (provisioning) or start the agent once to create it, then register its public key at HQ."
        : "Run doctor as the agent's user (sudo -u glance), or restore the key from the node's backup.",
    };
  }
  if ((mode & 0o077) !== 0) {
    return {
      name,
      ok: false,
      detail: `${file} has mode ${mode.toString(8).padStart(4, "0")}: other users can read the node's private key`,
      next: `chmod 600 ${file} (and check who copied it; re-claim the node if it may have leaked)`,
    };
  }
  if (process.getuid && uid !== process.getuid()) {
    return {
      name,
      ok: false,
      detail: `${file} belongs to uid ${uid}, not to this user`,
      next: `chown glance: ${file}`,
    };
  }
  return { name, ok: true, detail: `${file}, mode 0600, owned by this user` };
}

/**
 * The broker certificate: of the fleet CA in mqtt.ca, valid now, naming this node, for this node's key, and how long
 * it has left (a warning under CERT_WARN_DAYS: the agent renews by itself only when it has apiUrl and runs).
 */
function checkCertificate(config: NodeConfig): { check: Check; tls?: MqttTls } {
  const name = "certificate";
  let key: KeyPair;
  try {
    key = JSON.parse(readFileSync(keyFile(config.dataDir), "utf8")) as KeyPair;
  } catch {
    return {
      check: { name, ok: false, detail: "no readable node key to check it against", next: "Fix the node key first." },
    };
  }
  let tls: MqttTls | undefined;
  try {
    tls = loadMqttTls(config, key);
  } catch (err) {
    const detail = why(err);
    const expired = /expired/.test(detail);
    return {
      check: {
        name,
        ok: false,
        detail,
        next: expired
          ? "glance-agent renew --config <node.json> (set apiUrl to HQ's URL), or claim the node again."
          : "Use fleet-ca.pem and node-cert.pem from this node's claim, with dataDir holding the key it was claimed with.",
      },
    };
  }
  if (!tls) return { check: { name, ok: true, detail: "no certificate configured" } };
  const { facts } = tls;
  const detail = `serial ${facts.serial} for ${config.nodeId} and this node's key, chains to the fleet CA, valid until ${facts.notAfter.toISOString()} (${facts.daysLeft} days left)`;
  if (facts.daysLeft < CERT_WARN_DAYS) {
    return {
      check: {
        name,
        ok: true,
        warn: true,
        detail,
        next: `Renew now: glance-agent renew --config <node.json>${config.apiUrl ? "" : " (add apiUrl, HQ's URL, to the config so the agent renews by itself)"}.`,
      },
      tls,
    };
  }
  return { check: { name, ok: true, detail }, tls };
}

function checkDisk(dataDir: string): Check {
  const name = "data disk";
  try {
    const fs = statfsSync(dataDir);
    const free = fs.bavail * fs.bsize;
    const mib = Math.round(free / 1024 / 1024);
    if (free < MIN_FREE_BYTES) {
      return {
        name,
        ok: false,
        detail: `${mib} MiB free under ${dataDir}`,
        next: "Free space on the SD card: the outgoing queue needs room to hold a day offline.",
      };
    }
    return { name, ok: true, detail: `${mib} MiB free under ${dataDir}` };
  } catch (err) {
    return {
      name,
      ok: false,
      detail: `${dataDir}: ${why(err)}`,
      next: "Create dataDir and give it to the glance user.",
    };
  }
}

function checkClock(): Check {
  const name = "clock";
  const now = new Date();
  if (now.getTime() < CLOCK_FLOOR) {
    return {
      name,
      ok: false,
      detail: `the clock says ${now.toISOString()}`,
      next: "Enable NTP (timedatectl set-ntp true) and check the network: templates carry capture times.",
    };
  }
  let synced: string | undefined;
  try {
    synced = execFileSync("timedatectl", ["show", "-p", "NTPSynchronized", "--value"], {
      encoding: "utf8",
      timeout: 3000,
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  } catch {
    synced = undefined;
  }
  if (synced === "no") {
    return {
      name,
      ok: true,
      warn: true,
      detail: `${now.toISOString()}, not NTP-synchronised yet`,
      next: "timedatectl set-ntp true; a Pi has no battery clock and keeps a stale time until NTP answers.",
    };
  }
  return { name, ok: true, detail: `${now.toISOString()}${synced === "yes" ? ", NTP-synchronised" : ""}` };
}

async function checkModels(config: NodeConfig): Promise<Check> {
  const name = "models";
  try {
    const engine = await FacePipeline.load({ modelsDir: config.modelsDir, ...config.models });
    const detail = `${modelLabel(engine.detector)}; ${modelLabel(engine.embedder)}; signatures and sha256 verified, warmed up`;
    await engine.close();
    return { name, ok: true, detail };
  } catch (err) {
    return {
      name,
      ok: false,
      detail: why(err),
      next: "Install the models HQ published (glance models dir) and set GLANCE_MODEL_TRUST to HQ's model-signing key.",
    };
  }
}

async function checkCamera(config: NodeConfig): Promise<Check> {
  const name = "camera";
  const where = describeSource(config.source);
  const log = pino({ level: "silent" });
  let source: Awaited<ReturnType<typeof openSource>> | undefined;
  try {
    source = await openSource(config.source, log);
    const iterator = source[Symbol.asyncIterator]();
    let timer: NodeJS.Timeout | undefined;
    const first = await Promise.race([
      iterator.next(),
      new Promise<"timeout">((r) => {
        timer = setTimeout(() => r("timeout"), CAMERA_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
    if (first === "timeout" || first.done) {
      return {
        name,
        ok: false,
        detail: `${where} opened but gave no frame in ${CAMERA_WAIT_MS / 1000} s`,
        next: "Check the camera's power and cable (or the stream URL), and that no other program holds it.",
      };
    }
    const { width, height } = first.value.image;
    return { name, ok: true, detail: `${where}: first frame ${width}×${height}` };
  } catch (err) {
    return {
      name,
      ok: false,
      detail: `${where}: ${why(err)}`,
      next:
        config.source.kind === "v4l2"
          ? "ls /dev/video*; add the glance user to the video group (usermod -aG video glance)."
          : config.source.kind === "picamera"
            ? "rpicam-hello --list-cameras; check the ribbon cable; add the glance user to the video group."
            : "Fix source in the node config.",
    };
  } finally {
    await source?.close().catch(() => {});
  }
}

async function checkBroker(config: NodeConfig, password: string | undefined, tls: MqttTls | undefined): Promise<Check> {
  const name = "broker";
  let where: string;
  try {
    const u = new URL(config.mqtt.url);
    u.username = "";
    u.password = "";
    where = u.toString();
  } catch {
    return { name, ok: false, detail: "mqtt.url is not a URL", next: "Use the broker URL from the node's claim." };
  }
  if (config.mqtt.cert && !tls) {
    return { name, ok: false, detail: "not tried: the certificate is unusable", next: "Fix the certificate first." };
  }
  if (!password && !tls) {
    return {
      name,
      ok: false,
      detail: "no MQTT password",
      next: "Set mqtt.password in the config or GLANCE_MQTT_PASSWORD (the unit reads it from /etc/glance/agent.env).",
    };
  }
  try {
    // its own client id: the node's would take over a running agent's session
    const client = await connectAsync(config.mqtt.url, {
      clientId: `glance-doctor-${config.nodeId}-${randomBytes(3).toString("hex")}`,
      username: config.mqtt.username ?? config.nodeId,
      ...(tls ? { ca: tls.ca, cert: tls.cert, key: tls.key } : { password }),
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: BROKER_WAIT_MS,
    });
    await client.endAsync();
    return {
      name,
      ok: true,
      detail: tls
        ? `${where} accepted ${config.nodeId}'s certificate (mutual TLS)`
        : `${where} accepted ${config.mqtt.username ?? config.nodeId}'s credentials`,
    };
  } catch (err) {
    const message = (err as Error).message;
    const refused = /not authorized|bad user ?name or password|Connection refused: (Bad|Not)/i.test(message);
    const tlsRefused = /certificate|alert|self.signed|altnames|handshake|SSL|TLS/i.test(message);
    return {
      name,
      ok: false,
      detail: `${where}: ${message}`,
      next: refused
        ? tls
          ? "The broker refused this node: it is revoked or registered with another key. Ask HQ; re-claim if revoked."
          : "The broker refused the credentials: re-claim the node or copy the password from the claim again."
        : tlsRefused
          ? "TLS failed: the broker's certificate must chain to mqtt.ca and name the host in mqtt.url; check both came from the same claim."
          : "Check the network, DNS and firewall (port 1883/8883) from this node to HQ.",
    };
  }
}

/** The checklist as a technician reads it. */
export function formatChecks(checks: Check[]): string {
  const lines: string[] = [];
  for (const c of checks) {
    const mark = !c.ok ? "FAIL" : c.warn ? "WARN" : " ok ";
    lines.push(`[${mark}] ${c.name.padEnd(10)} ${c.detail}`);
    if (c.next && (!c.ok || c.warn)) lines.push(`       next: ${c.next}`);
  }
  const failed = checks.filter((c) => !c.ok).length;
  lines.push(failed === 0 ? "All checks passed." : `${failed} check(s) failed.`);
  return lines.join("\n");
}
