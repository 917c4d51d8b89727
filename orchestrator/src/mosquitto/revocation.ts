import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { GlanceError } from "@glance/shared";
import type { MqttClient } from "mqtt";
import type { Logger } from "pino";
import { DYNSEC_TOPIC, REVOKED_ROLE, REVOKED_ROLE_ACLS } from "./config.ts";

/**
 * How mosquitto is made to re-read the fleet CRL (it does so only when its TLS context is rebuilt, on SIGHUP):
 * SIGHUP to the pid in `pidFile` (the generated config's `pid_file`; the orchestrator must run on the broker's host as
 * its user or root), or a command such as `["systemctl", "reload", "mosquitto"]` (Debian's unit sends SIGHUP).
 */
export type MosquittoReload = { pidFile: string } | { command: string[] };

export interface MosquittoRevocationOptions {
  client: MqttClient;
  logger: Logger;
  reload?: MosquittoReload;
  /** drop live sessions and deny revoked nodes through the dynamic-security plugin; default true */
  dynamicSecurity?: boolean;
  /** how long to wait for the plugin's answer; default 5 s */
  timeoutMs?: number;
}

export interface MosquittoRevocation {
  /** makes mosquitto re-read the CRL (a no-op without `reload`): call it after every write of the file */
  reloadCrl(): Promise<void>;
  /**
   * After a revocation: the plugin closes the node's live sessions and denies it every topic from then on. mosquitto
   * checks the CRL only during the TLS handshake, so without this a session opened before the revocation would keep
   * reading its commands, desired state and gallery. Throws if the plugin did not confirm.
   */
  dropNode(nodeId: string): Promise<void>;
  stop(): Promise<void>;
}

interface DynsecResponse {
  command: string;
  error?: string;
  correlationData?: string;
}

const run = promisify(execFile);

/** Revocation for an external mosquitto (see `generateMosquittoConfig`): the embedded broker does it itself. */
export async function startMosquittoRevocation(opts: MosquittoRevocationOptions): Promise<MosquittoRevocation> {
  const log = opts.logger;
  const useDynsec = opts.dynamicSecurity ?? true;
  const waiting = new Map<string, (r: DynsecResponse) => void>();
  const responses = `${DYNSEC_TOPIC}/response`;
  const onMessage = (topic: string, payload: Buffer) => {
    if (topic !== responses) return;
    try {
      const body = JSON.parse(payload.toString()) as { responses?: DynsecResponse[] };
      for (const r of body.responses ?? []) {
        const done = r.correlationData ? waiting.get(r.correlationData) : undefined;
        if (done) {
          waiting.delete(r.correlationData as string);
          done(r);
        }
      }
    } catch {
      log.warn("unreadable dynamic-security response ignored");
    }
  };
  if (useDynsec) {
    opts.client.on("message", onMessage);
    // every instance sees every answer (the plugin publishes them to all readers): correlation ids sort them out
    await opts.client.subscribeAsync(responses, { qos: 0 });
  }

  const reload = async () => {
    const how = opts.reload;
    if (!how) return;
    try {
      await reloadBy(how);
    } catch (error) {
      throw new GlanceError(
        "CONFIG_INVALID",
        `mosquitto was not told to reload the fleet CRL (${"pidFile" in how ? `SIGHUP to the pid in ${how.pidFile}` : how.command.join(" ")}): ${(error as Error).message}. Check broker.external.reload, then reload mosquitto by hand (systemctl reload mosquitto).`,
      );
    }
  };
  const reloadBy = async (how: MosquittoReload) => {
    if ("pidFile" in how) {
      const pid = Number.parseInt((await readFile(how.pidFile, "utf8")).trim(), 10);
      if (!Number.isInteger(pid) || pid <= 1) throw new Error(`${how.pidFile} holds no mosquitto pid`);
      process.kill(pid, "SIGHUP");
    } else {
      const [cmd, ...args] = how.command;
      if (!cmd) throw new Error("reload command is empty");
      await run(cmd, args, { timeout: 30_000 });
    }
  };

  /** sends the commands in order and resolves with the plugin's answers, in the same order */
  const dynsec = async (commands: Record<string, unknown>[]): Promise<DynsecResponse[]> => {
    const ids = commands.map(() => randomUUID());
    const answers = ids.map(
      (id) =>
        new Promise<DynsecResponse>((resolve, reject) => {
          const timer = setTimeout(() => {
            waiting.delete(id);
            reject(
              new Error(
                "mosquitto's dynamic-security plugin did not answer: is it loaded (generateMosquittoConfig) and may the orchestrator write " +
                  DYNSEC_TOPIC +
                  "?",
              ),
            );
          }, opts.timeoutMs ?? 5000);
          waiting.set(id, (r) => {
            clearTimeout(timer);
            resolve(r);
          });
        }),
    );
    const payload = JSON.stringify({ commands: commands.map((c, i) => ({ ...c, correlationData: ids[i] })) });
    await opts.client.publishAsync(DYNSEC_TOPIC, payload, { qos: 1 });
    return Promise.all(answers);
  };

  if (useDynsec) {
    // mosquitto's ACL file refuses nothing at subscribe time: an instance whose user name it does not list would start,
    // then silently lose its share of the templates (a shared subscription does not pass a message it may not read on
    // to another member). The plugin answers only a client the ACL lets write its topic and read the answers.
    await dynsec([{ command: "getDefaultACLAccess" }]).catch((error: Error) => {
      throw new GlanceError(
        "CONFIG_INVALID",
        `${error.message} Is this instance's name (broker.external.instance) among generateMosquittoConfig's orchestratorInstances? Generate the configuration again with it and reload mosquitto (systemctl reload mosquitto).`,
      );
    });
  }

  return {
    reloadCrl: reload,
    async dropNode(nodeId) {
      const failures: string[] = [];
      if (useDynsec) {
        try {
          const answers = await dynsec([
            // in the generated state file already; an operator's own file may lack it
            { command: "createRole", rolename: REVOKED_ROLE, acls: REVOKED_ROLE_ACLS },
            // no password: certificate clients never reach password checks, so this entry only carries the role;
            // on a client the plugin already has (revoked before) this fails harmlessly
            { command: "createClient", username: nodeId, roles: [{ rolename: REVOKED_ROLE }] },
            // disconnects every session with this user name (certificate CN = node id)
            { command: "disableClient", username: nodeId },
          ]);
          // a second revocation of the same node (or a state file that already has the role) finds them there
          const fine = /already exists/i;
          for (const a of answers) {
            if (a.error && !fine.test(a.error)) failures.push(`${a.command}: ${a.error}`);
          }
        } catch (error) {
          failures.push((error as Error).message);
        }
      }
      if (failures.length) {
        log.error({ nodeId, failures }, "mosquitto not fully told of a revocation");
        throw new GlanceError(
          "CONFIG_INVALID",
          `Node ${nodeId} is revoked, but mosquitto did not confirm closing its sessions: ${failures.join("; ")}. Its certificate is refused once mosquitto has reloaded the CRL; check the dynamic-security plugin (or set broker.external.dynamicSecurity: false).`,
        );
      }
      if (useDynsec) log.info({ nodeId }, "mosquitto: live sessions of the revoked node closed, every topic denied");
    },
    async stop() {
      opts.client.off("message", onMessage);
      waiting.clear();
    },
  };
}
