import { EventEmitter } from "node:events";
import {
  type Command,
  contract,
  type DesiredState,
  decodeMessage,
  type EdgeGallery,
  encodeMessage,
  isGlanceError,
  type MessageName,
  type NodeStatus,
  type Payload,
  topicFor,
} from "@glance/shared";
import { connect, type MqttClient } from "mqtt";
import type { Logger } from "pino";

export interface LinkOptions {
  nodeId: string;
  /** `ca`, `cert`, `key` (PEM) for an `mqtts://` broker with fleet certificates; `key` is the node's signing key */
  mqtt: { url: string; username: string; password: string; ca?: string; cert?: string; key?: string };
  /** fields of the retained status besides nodeId/online/ts, read at every publish */
  status: () => Omit<NodeStatus, "nodeId" | "online" | "ts">;
  /** heartbeat: the status is republished this often (default 30 s) */
  statusEveryMs?: number;
  /** the node's attested sealing key, also put in the last will so the orchestrator always knows it */
  sealingKey?: NodeStatus["sealingKey"];
  /**
   * erase-member: removes the person from whatever the node holds (the edge gallery) before the command is
   * acknowledged; returns whether the person was held. Without it the node holds nothing attributable.
   */
  eraseMember?: (personId: string, ts: number) => boolean;
}

const STATUS_EVERY_MS = 30_000;
const CLOSE_GRACE_MS = 2000;

/**
 * The node's MQTT session: converges on the orchestrator's retained desired state, keeps a retained status
 * (online, with a last will saying offline), and sends contract messages with the contract's QoS and retain flag.
 * Reconnects by itself; messages sent while offline wait in the client's queue.
 */
export class NodeLink extends EventEmitter<{
  desired: [DesiredState | undefined];
  /** a members-only edge gallery (contract-valid, not yet verified or opened), or undefined when withdrawn */
  gallery: [EdgeGallery | undefined];
  connect: [];
  command: [Command];
}> {
  readonly #client: MqttClient;
  readonly #o: LinkOptions;
  readonly #log: Logger;
  readonly #statusTimer: NodeJS.Timeout;
  #desired: DesiredState | undefined;

  constructor(o: LinkOptions, log: Logger) {
    super();
    this.#o = o;
    this.#log = log;
    const statusTopic = topicFor("status", o.nodeId);
    this.#client = connect(o.mqtt.url, {
      clientId: `glance-node-${o.nodeId}`,
      username: o.mqtt.username,
      password: o.mqtt.password,
      ...(o.mqtt.ca ? { ca: o.mqtt.ca } : {}),
      ...(o.mqtt.cert ? { cert: o.mqtt.cert } : {}),
      ...(o.mqtt.key ? { key: o.mqtt.key } : {}),
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 2000,
      connectTimeout: 10_000,
      will: {
        topic: statusTopic,
        payload: encodeMessage("status", {
          nodeId: o.nodeId,
          online: false,
          ts: Date.now(),
          ...(o.sealingKey ? { sealingKey: o.sealingKey } : {}),
        }),
        qos: contract.status.qos,
        retain: contract.status.retain,
      },
    });
    this.#client.on("connect", () => {
      log.info({ url: redactUrl(o.mqtt.url) }, "connected to broker");
      this.#client.subscribe(topicFor("desired", o.nodeId), { qos: contract.desired.qos }, (err, granted) => {
        // a broker ACL refusal is not an error but a SUBACK of 128
        if (err || granted?.some((g) => g.qos === 128)) {
          log.error({ err: err?.message }, "cannot subscribe to desired state: check the broker ACL for this node");
        }
      });
      this.#client.subscribe(topicFor("command", o.nodeId), { qos: contract.command.qos }, (err, granted) => {
        if (err || granted?.some((g) => g.qos === 128)) {
          log.error({ err: err?.message }, "cannot subscribe to commands: check the broker ACL for this node");
        }
      });
      this.#client.subscribe(topicFor("gallery", o.nodeId), { qos: contract.gallery.qos }, (err, granted) => {
        if (err || granted?.some((g) => g.qos === 128)) {
          log.error({ err: err?.message }, "cannot subscribe to the edge gallery: check the broker ACL for this node");
        }
      });
      this.publishStatus();
      this.emit("connect");
    });
    this.#client.on("message", (topic, payload) => this.#onMessage(topic, payload));
    this.#client.on("offline", () => log.warn("broker unreachable; retrying"));
    this.#client.on("error", (err) => log.warn({ err: err.message }, "broker connection error"));
    this.#statusTimer = setInterval(() => this.publishStatus(), o.statusEveryMs ?? STATUS_EVERY_MS);
    this.#statusTimer.unref();
  }

  get desired(): DesiredState | undefined {
    return this.#desired;
  }

  get connected(): boolean {
    return this.#client.connected;
  }

  /** Publishes a contract message; resolves with its size once the broker has it (QoS 1) or it is written (QoS 0). */
  send<N extends MessageName>(name: N, payload: Payload<N>): Promise<number> {
    return this.sendEncoded(name, encodeMessage(name, payload));
  }

  /** Publishes a message already encoded with `encodeMessage` (from the outgoing queue). */
  sendEncoded(name: MessageName, bytes: Buffer): Promise<number> {
    const { qos, retain } = contract[name];
    return new Promise((resolve, reject) => {
      this.#client.publish(topicFor(name, this.#o.nodeId), bytes, { qos, retain }, (err) =>
        err ? reject(err) : resolve(bytes.length),
      );
    });
  }

  publishStatus(online = true): Promise<number> {
    // offline, a heartbeat would only pile up in the client's memory: the next connect publishes a fresh one
    if (!this.#client.connected) return Promise.resolve(0);
    const status = {
      ...this.#o.status(),
      ...(this.#o.sealingKey ? { sealingKey: this.#o.sealingKey } : {}),
      nodeId: this.#o.nodeId,
      online,
      ts: Date.now(),
    };
    const sent = this.send("status", status);
    sent.catch((err: Error) => this.#log.warn({ err: err.message }, "status not sent"));
    return sent;
  }

  /**
   * Says goodbye (retained offline status) and disconnects. Waits a moment for a connection still being made, so
   * that what was queued before it (a camera-down event at startup) is not lost.
   */
  async close(): Promise<void> {
    clearInterval(this.#statusTimer);
    const within = (ms: number) => new Promise((r) => setTimeout(r, ms).unref());
    if (!this.#client.connected)
      await Promise.race([new Promise((r) => this.#client.once("connect", r)), within(CLOSE_GRACE_MS)]);
    if (this.#client.connected) {
      await Promise.race([this.publishStatus(false).catch(() => 0), within(CLOSE_GRACE_MS)]);
    }
    await this.#client.endAsync(!this.#client.connected);
  }

  /**
   * Commands from the orchestrator, each acknowledged on the node's ack topic with its correlation id.
   * erase-member: the person is removed from the edge gallery (if held) before the ack, so ok:true means the node
   * holds nothing of them: queued templates are sealed to the orchestrator, the node cannot attribute them.
   */
  #onCommand(topic: string, payload: Buffer): void {
    let command: Command;
    try {
      command = decodeMessage("command", topic, payload);
    } catch (e) {
      this.#log.warn({ code: isGlanceError(e) ? e.code : "PAYLOAD_INVALID" }, "command rejected");
      return;
    }
    const ack = (ok: boolean, error?: string) =>
      this.send("ack", {
        commandId: command.id,
        nodeId: this.#o.nodeId,
        ts: Date.now(),
        ok,
        ...(error ? { error } : {}),
      }).catch((err: Error) => this.#log.warn({ err: err.message, commandId: command.id }, "ack not sent"));
    this.emit("command", command);
    if (command.kind === "erase-member") {
      if (!command.personId) {
        void ack(false, "erase-member names no personId");
        return;
      }
      let held = false;
      try {
        held = this.#o.eraseMember?.(command.personId, command.ts) ?? false;
      } catch (err) {
        this.#log.error({ err: (err as Error).message, commandId: command.id }, "erase-member failed");
        void ack(false, `erase failed: ${(err as Error).message}`.slice(0, 512));
        return;
      }
      this.#log.info(
        { commandId: command.id, held },
        held
          ? "erase-member: removed from the edge gallery; acknowledged"
          : "erase-member: person not held on this node; acknowledged",
      );
      void ack(true);
    } else {
      void ack(false, `command ${command.kind} is not supported by this agent`);
    }
  }

  #onGallery(topic: string, payload: Buffer): void {
    if (payload.length === 0) {
      this.#log.info("edge gallery withdrawn");
      this.emit("gallery", undefined);
      return;
    }
    try {
      this.emit("gallery", decodeMessage("gallery", topic, payload));
    } catch (err) {
      this.#log.error(
        { code: isGlanceError(err) ? err.code : "INTERNAL", err: (err as Error).message },
        "edge gallery rejected: it does not match the contract",
      );
    }
  }

  #onMessage(topic: string, payload: Buffer): void {
    if (topic === topicFor("command", this.#o.nodeId)) {
      this.#onCommand(topic, payload);
      return;
    }
    if (topic === topicFor("gallery", this.#o.nodeId)) {
      this.#onGallery(topic, payload);
      return;
    }
    if (topic !== topicFor("desired", this.#o.nodeId)) return;
    if (payload.length === 0) {
      // retained desired state cleared: stop sending templates until told again
      this.#log.warn("desired state withdrawn: no templates until a new one arrives");
      this.#desired = undefined;
      this.emit("desired", undefined);
      return;
    }
    try {
      const desired = decodeMessage("desired", topic, payload);
      // the retained message is authoritative (only the orchestrator may publish it), even with a lower version:
      // a re-created orchestrator database restarts its version numbers
      this.#desired = desired;
      this.#log.info(
        {
          version: desired.version,
          privacyMode: desired.privacyMode,
          kid: desired.sealingKey.kid,
          storeId: desired.storeId,
        },
        "desired state applied",
      );
      this.emit("desired", this.#desired);
      this.publishStatus();
    } catch (err) {
      this.#log.error({ err: (err as Error).message }, "desired state rejected: it does not match the contract");
    }
  }
}

function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.password = "";
    u.username = "";
    return u.toString();
  } catch {
    return "(unparseable url)";
  }
}
