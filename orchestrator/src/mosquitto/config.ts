import { chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type contract as Contract, contract, filterFor, GlanceError, type MessageName } from "@glance/shared";
import { ORCHESTRATOR_USERNAME } from "../broker/broker.ts";
import type { TlsMaterial } from "../pki/fleet-ca.ts";

export interface MosquittoConfigOptions {
  /** directory that receives mosquitto.conf, acl, ca.pem, server.pem and server-key.pem (0600) */
  dir: string;
  /** TLS listener port */
  port: number;
  /** listener address; default 127.0.0.1 */
  host?: string;
  /** broker server certificate, its key and the fleet CA (e.g. from `FleetCa.issueServerCertificate`) */
  tls: TlsMaterial;
  /**
   * names of the orchestrator instances behind this broker, as each is started (`broker.external.instance`): the ACL
   * grants the orchestrator topics to the user `$orchestrator.<name>` of each (`orchestratorUser`). Default: one
   * unnamed instance, `$orchestrator`. mosquitto makes a client's id its user name (`use_username_as_clientid`), so
   * two instances with one name would disconnect each other. An instance not listed here fails to start
   * (CONFIG_INVALID: the dynamic-security plugin does not answer it, ./revocation.ts); with `dynamicSecurity: false`
   * nothing would stop it, and it would silently lose its share of the templates (the ACL is checked at delivery).
   * To add an instance: generate again with the longer list (same `dir`; the dynamic-security state is kept), send
   * mosquitto SIGHUP (`systemctl reload mosquitto`: it re-reads the ACL file, live sessions stay), then start the new
   * instance with its name.
   */
  orchestratorInstances?: string[];
  /**
   * the account mosquitto runs as when started by root (its `user` option); mosquitto's default is `mosquitto`, which
   * must then be able to read `dir` (chown it). Pass the current user to run it from a test or a shell.
   */
  user?: string;
  /**
   * largest MQTT packet accepted (mosquitto checks what clients send it, the orchestrator's galleries included);
   * default `MOSQUITTO_MAX_PACKET_BYTES`: a full edge gallery (the contract's 4 MiB) plus the PUBLISH header
   */
  maxPacketBytes?: number;
  /**
   * bytes of QoS 1 messages mosquitto holds for one connected client that is behind (an orchestrator instance in a
   * burst); default `MOSQUITTO_MAX_QUEUED_BYTES`. There is no count limit: mosquitto's default of 1,000 messages
   * silently dropped templates it had already acknowledged to their nodes
   */
  maxQueuedBytes?: number;
  /**
   * the fleet CRL (`FleetCa.crlFile`, kept current by the orchestrator): mosquitto refuses the certificates it lists.
   * It is read when the TLS context is built: at start and on SIGHUP (the orchestrator sends it after each revocation,
   * see `reload` in ./revocation.ts). The file must exist before mosquitto starts.
   */
  crlFile?: string;
  /** where mosquitto writes its pid (the orchestrator's `reload: { pidFile }` reads it); default `<dir>/mosquitto.pid` */
  pidFile?: string;
  /**
   * mosquitto's dynamic-security plugin, through which the orchestrator drops a revoked node's live session and denies
   * it every topic (./revocation.ts); default Debian's `DYNSEC_PLUGIN`, `false` for none. Its state file
   * `<dir>/dynamic-security.json` is created once and then kept (mosquitto rewrites it).
   */
  dynamicSecurityPlugin?: string | false;
}

export interface MosquittoConfig {
  confFile: string;
  aclFile: string;
  pidFile: string;
  /** the ACL text, for review */
  acl: string;
}

/**
 * Debian's (and Ubuntu's) path of the plugin shipped with mosquitto 2.0, in this machine's multiarch directory
 * (x86_64-linux-gnu on a server, aarch64-linux-gnu on a Raspberry Pi or Jetson).
 */
export const DYNSEC_PLUGIN = `/usr/lib/${process.arch === "arm64" ? "aarch64" : "x86_64"}-linux-gnu/mosquitto_dynamic_security.so`;
/** topic of the dynamic-security plugin's commands, and of its answers (`/response`) */
export const DYNSEC_TOPIC = "$CONTROL/dynamic-security/v1";
/** dynamic-security role of revoked nodes: every topic denied, ahead of the ACL file */
export const REVOKED_ROLE = "glance-revoked";
export const REVOKED_ROLE_ACLS = ["publishClientSend", "publishClientReceive", "subscribePattern"].map((acltype) => ({
  acltype,
  topic: "#",
  allow: false,
}));

/** an instance name: short, and nothing mosquitto's ACL file or topic patterns read specially (`/ + # $ %`, space) */
const INSTANCE_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/;

/**
 * The MQTT user name, certificate CN and (on mosquitto) client id of an orchestrator instance: `$orchestrator.<instance>`,
 * or `$orchestrator` for an unnamed one. A node id never starts with `$` (shared `Id`), so no node's certificate can
 * name an orchestrator, nor take its client id.
 */
export function orchestratorUser(instance?: string): string {
  if (instance === undefined) return ORCHESTRATOR_USERNAME;
  if (!INSTANCE_NAME.test(instance)) {
    throw new GlanceError(
      "CONFIG_INVALID",
      `Orchestrator instance name ${JSON.stringify(instance)} is not 1-32 of A-Z a-z 0-9 _ - (starting with a letter or digit); choose one such as "hq-1".`,
    );
  }
  return `${ORCHESTRATOR_USERNAME}.${instance}`;
}

/** the user names the ACL grants the orchestrator topics to: one per named instance, else the one unnamed instance */
function orchestratorUsers(instances: string[] | undefined): string[] {
  if (!instances?.length) return [ORCHESTRATOR_USERNAME];
  const users = instances.map(orchestratorUser);
  const twice = users.find((u, i) => users.indexOf(u) !== i);
  if (twice) {
    throw new GlanceError(
      "CONFIG_INVALID",
      `Orchestrator instance ${twice} is listed twice; each instance needs its own name (two with one name disconnect each other).`,
    );
  }
  return users;
}

/** PUBLISH fixed header, topic and packet id of a gallery: far less than this */
const PUBLISH_OVERHEAD_BYTES = 4096;
/**
 * mosquitto's packet limit: a whole edge gallery, as the embedded broker carries it. It applies to every client,
 * nodes included; that is acceptable because only holders of a fleet certificate get a connection at all (mutual
 * TLS, revocable), the ACL drops what a node may not publish, and the orchestrator refuses a node message above the
 * contract's limit (a template is 4 KiB) with PAYLOAD_TOO_LARGE before parsing it.
 */
export const MOSQUITTO_MAX_PACKET_BYTES = contract.gallery.maxBytes + PUBLISH_OVERHEAD_BYTES;

/**
 * What mosquitto may queue for one slow connected client: 256 MiB, about 230,000 templates (over a minute of a chain's
 * burst for one instance), or 64 full edge galleries. Nodes and orchestrators connect with clean sessions, so nothing
 * queues for a client that is away. Beyond it mosquitto drops (and logs "Outgoing messages are being dropped").
 */
export const MOSQUITTO_MAX_QUEUED_BYTES = 256 * 1024 * 1024;

/** The largest gallery message that fits a broker packet limit of `maxPacketBytes`. */
export function galleryBytesWithin(maxPacketBytes: number): number {
  return Math.min(contract.gallery.maxBytes, maxPacketBytes - PUBLISH_OVERHEAD_BYTES);
}

/**
 * ACL for mosquitto derived from the contract, like `mayPublish`/`maySubscribe` for the embedded broker: a node
 * (user name = its certificate's CN = its node id, `%u`) writes only its own node-originated topics and reads only
 * what the orchestrator sends it; each orchestrator instance (`orchestratorInstances`, see `MosquittoConfigOptions`)
 * reads every node-originated topic and writes the rest.
 */
export function mosquittoAcl(
  c: typeof Contract,
  opts: { orchestratorInstances?: string[]; dynamicSecurity?: boolean } = {},
): string {
  const names = Object.keys(c) as MessageName[];
  const lines = ["# generated from shared/src/contract.ts by generateMosquittoConfig; do not edit", ""];
  lines.push("# every node, by the CN of its client certificate");
  for (const name of names) {
    const access = c[name].from === "node" ? "write" : "read";
    lines.push(`pattern ${access} ${filterFor(name, "%u")}`);
  }
  for (const user of orchestratorUsers(opts.orchestratorInstances)) {
    lines.push("", `user ${user}`);
    for (const name of names) {
      const access = c[name].from === "node" ? "read" : "write";
      lines.push(`topic ${access} ${filterFor(name)}`);
    }
    if (opts.dynamicSecurity) {
      lines.push("# revocation: the orchestrator commands the dynamic-security plugin and reads its answers");
      lines.push(`topic write ${DYNSEC_TOPIC}`, `topic read ${DYNSEC_TOPIC}/response`);
    }
  }
  return `${lines.join("\n")}\n`;
}

/**
 * Writes a mosquitto (≥ 2.0) configuration for chains that outgrow one box: one TLS listener that requires a client
 * certificate of the fleet CA and takes the user name, and the client id, from its CN (`use_identity_as_username`,
 * `use_username_as_clientid`), no anonymous access, and the contract-derived ACL.
 * Orchestrator instances then connect with `broker: { external: { url, instance } }`, one name each.
 */
export async function generateMosquittoConfig(
  c: typeof Contract,
  opts: MosquittoConfigOptions,
): Promise<MosquittoConfig> {
  const plugin = opts.dynamicSecurityPlugin === undefined ? DYNSEC_PLUGIN : opts.dynamicSecurityPlugin;
  // first: a bad instance name fails before any file is written
  const acl = mosquittoAcl(c, {
    ...(opts.orchestratorInstances ? { orchestratorInstances: opts.orchestratorInstances } : {}),
    dynamicSecurity: !!plugin,
  });
  await mkdir(opts.dir, { recursive: true, mode: 0o700 });
  const file = (name: string) => join(opts.dir, name);
  await writeFile(file("ca.pem"), opts.tls.ca);
  await writeFile(file("server.pem"), opts.tls.cert);
  await writeFile(file("server-key.pem"), opts.tls.key, { mode: 0o600 });
  await chmod(file("server-key.pem"), 0o600);
  await writeFile(file("acl"), acl);
  const pidFile = opts.pidFile ?? file("mosquitto.pid");
  if (plugin) {
    // created once: from then on mosquitto keeps the revoked nodes in it
    const state = {
      defaultACLAccess: { publishClientSend: false, publishClientReceive: false, subscribe: false, unsubscribe: false },
      clients: [],
      groups: [],
      roles: [{ rolename: REVOKED_ROLE, acls: REVOKED_ROLE_ACLS }],
    };
    await writeFile(file("dynamic-security.json"), `${JSON.stringify(state, null, 2)}\n`, { flag: "wx" }).catch(
      (error: NodeJS.ErrnoException) => {
        if (error.code !== "EEXIST") throw error;
      },
    );
  }
  const conf = [
    "# generated by generateMosquittoConfig (@glance/orchestrator)",
    ...(opts.user ? [`user ${opts.user}`] : []),
    "per_listener_settings false",
    "allow_anonymous false",
    "persistence false",
    `pid_file ${pidFile}`,
    `max_packet_size ${opts.maxPacketBytes ?? MOSQUITTO_MAX_PACKET_BYTES}`,
    // a subscriber that falls behind is held to a memory bound, not to mosquitto's default 1,000 messages
    "max_queued_messages 0",
    `max_queued_bytes ${opts.maxQueuedBytes ?? MOSQUITTO_MAX_QUEUED_BYTES}`,
    `acl_file ${file("acl")}`,
    // plugin ACL checks come first: a node the plugin knows (a revoked one) is denied before the ACL file is read;
    // every other client is not in it, and the ACL file decides
    ...(plugin ? [`plugin ${plugin}`, `plugin_opt_config_file ${file("dynamic-security.json")}`] : []),
    "",
    `listener ${opts.port} ${opts.host ?? "127.0.0.1"}`,
    `cafile ${file("ca.pem")}`,
    `certfile ${file("server.pem")}`,
    `keyfile ${file("server-key.pem")}`,
    ...(opts.crlFile ? [`crlfile ${opts.crlFile}`] : []),
    "tls_version tlsv1.3",
    "require_certificate true",
    "use_identity_as_username true",
    // the client id becomes the certificate CN: a node that sends another node's (or an orchestrator's) client id
    // would otherwise close that client's session (MQTT takeover). Not re-read on SIGHUP
    "use_username_as_clientid true",
    "",
  ].join("\n");
  await writeFile(file("mosquitto.conf"), conf);
  return { confFile: file("mosquitto.conf"), aclFile: file("acl"), pidFile, acl };
}
