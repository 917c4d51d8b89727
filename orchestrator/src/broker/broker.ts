import { createServer, type Server } from "node:net";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import { type Identity, mayPublish, maySubscribe } from "@glance/shared";
import { Aedes, type AuthenticateError, type Client } from "aedes";

type AuthenticateCallback = (error: AuthenticateError | null, success: boolean | null) => void;

import type { Logger } from "pino";
import { hashSecret, secretMatches } from "../auth/secrets.ts";
import { certificateIdentity, rawEd25519Key } from "../pki/fleet-ca.ts";
import { guardSocket } from "./packet-guard.ts";

/** The orchestrator's own MQTT username; `$` cannot appear in a node id, so it never collides with one. */
export const ORCHESTRATOR_USERNAME = "$orchestrator";

/** Largest MQTT packet accepted on the wire; the contract's own limits (a few KB) are checked later, per message. */
export const MAX_PACKET_BYTES = 64 * 1024;

/** Client id prefix of node agents. Claiming another node's id would take over (disconnect) its session. */
export const NODE_CLIENT_PREFIX = "glance-node-";

export interface BrokerOptions {
  host: string;
  port: number;
  /** in-memory secret of the orchestrator's own client, fresh at every start */
  orchestratorSecret: string;
  /** true when `password` is the current MQTT secret of a registered, non-revoked node */
  verifyNode(nodeId: string, password: string): Promise<boolean>;
  logger: Logger;
  /**
   * Mutual TLS: clients must present a certificate of the fleet CA, and their identity is taken from it (SAN URI),
   * never from the user name or password. Without it the broker speaks plain MQTT and binds loopback only.
   */
  tls?: {
    ca: string;
    cert: string;
    key: string;
    /** host name put in the broker URL (one of the server certificate's names) */
    urlHost: string;
    /**
     * true when `publicKey` (base64url raw Ed25519 key of the client certificate) is the registered signing key of a
     * non-revoked node `nodeId`: the certificate, the key that signs templates and the registry must agree.
     */
    verifyNodeCertificate(nodeId: string, publicKey: string): Promise<boolean>;
  };
}

export interface Broker {
  aedes: Aedes;
  url: string;
  /**
   * Drops every live session authenticated as node `nodeId` (after its revocation): the TLS connection is closed at
   * once; a reconnect goes through authenticate again, which refuses a revoked node. Returns how many were closed.
   */
  disconnectNode(nodeId: string): number;
  close(): Promise<void>;
}

function refused(message: string): AuthenticateError {
  // 4 = bad user name or password (MQTT 3.1.1 CONNACK return code)
  return Object.assign(new Error(message), { returnCode: 4 }) as AuthenticateError;
}

/**
 * Embedded aedes, either on mutual TLS (identity = the client certificate) or on plain TCP bound to loopback for
 * development (identity = user name + password). Every client is authenticated and then held to the ACL derived from
 * the shared contract (`mayPublish` / `maySubscribe`).
 */
const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);

export async function startBroker(opts: BrokerOptions): Promise<Broker> {
  const log = opts.logger;
  const identities = new WeakMap<Client, Identity>();
  const orchestratorHash = hashSecret(opts.orchestratorSecret);
  const tlsOpts = opts.tls;
  if (!tlsOpts && !LOOPBACK.has(opts.host)) {
    throw new Error(
      `Plain MQTT is for development on loopback only, not ${opts.host}: configure mqttTls (mutual TLS) to listen there.`,
    );
  }
  /** identity of each TLS connection, read from its verified certificate before any MQTT byte is parsed */
  const certIdentities = new WeakMap<object, Identity>();

  const authenticateByCertificate = (client: Client, username: string | undefined, done: AuthenticateCallback) => {
    const who = certIdentities.get(client.conn as object);
    if (!who || !tlsOpts) {
      log.warn({ clientId: client.id }, "connection without a usable fleet certificate refused");
      done(refused("a fleet certificate naming a node is required"), false);
      return;
    }
    const claimed = who.role === "node" ? who.nodeId : ORCHESTRATOR_USERNAME;
    if (username && username !== claimed) {
      log.warn({ who, username }, "user name differs from the certificate's identity");
      done(refused("user name differs from the certificate"), false);
      return;
    }
    if (who.role === "orchestrator") {
      identities.set(client, who);
      done(null, true);
      return;
    }
    if (client.id.startsWith(NODE_CLIENT_PREFIX) && client.id !== `${NODE_CLIENT_PREFIX}${who.nodeId}`) {
      log.warn({ nodeId: who.nodeId, clientId: client.id }, "node tried to use another node's client id");
      done(refused("client id belongs to another node"), false);
      return;
    }
    const socket = client.conn as unknown as TLSSocket;
    const peer = socket.getPeerX509Certificate();
    const key = peer ? rawEd25519Key(peer.publicKey) : undefined;
    (key ? tlsOpts.verifyNodeCertificate(who.nodeId, key) : Promise.resolve(false)).then(
      (ok) => {
        if (ok) {
          identities.set(client, who);
          done(null, true);
        } else {
          log.warn({ nodeId: who.nodeId }, "certificate key is not the node's registered signing key, or revoked");
          done(refused("node unknown, revoked, or certificate for another key"), false);
        }
      },
      (error: unknown) => {
        log.error({ err: error }, "node certificate lookup failed");
        done(refused("certificate lookup failed"), false);
      },
    );
  };

  const aedes = await Aedes.createBroker({
    authenticate(client, username, password, done) {
      if (tlsOpts) return authenticateByCertificate(client, username, done);
      const secret = password?.toString("utf8") ?? "";
      if (username === ORCHESTRATOR_USERNAME) {
        if (secretMatches(secret, orchestratorHash)) {
          identities.set(client, { role: "orchestrator" });
          done(null, true);
        } else {
          log.warn({ clientId: client.id }, "orchestrator credentials refused");
          done(refused("bad credentials"), false);
        }
        return;
      }
      if (!username || secret.length === 0) {
        log.warn({ clientId: client.id }, "connection without credentials refused");
        done(refused("credentials required"), false);
        return;
      }
      if (client.id.startsWith(NODE_CLIENT_PREFIX) && client.id !== `${NODE_CLIENT_PREFIX}${username}`) {
        log.warn({ nodeId: username, clientId: client.id }, "node tried to use another node's client id");
        done(refused("client id belongs to another node"), false);
        return;
      }
      opts.verifyNode(username, secret).then(
        (ok) => {
          if (ok) {
            identities.set(client, { role: "node", nodeId: username });
            done(null, true);
          } else {
            log.warn({ nodeId: username }, "node credentials refused");
            done(refused("bad credentials"), false);
          }
        },
        (error: unknown) => {
          log.error({ err: error }, "node credential lookup failed");
          done(refused("credential lookup failed"), false);
        },
      );
    },
    authorizePublish(client, packet, callback) {
      // client is null for messages the broker itself publishes (retained state, will messages of other clients)
      if (!client) return callback(null);
      const who = identities.get(client);
      if (who && mayPublish(who, packet.topic)) return callback(null);
      log.warn({ who, topic: packet.topic }, "publish refused by ACL");
      callback(new Error("not authorised to publish on this topic"));
    },
    authorizeSubscribe(client, subscription, callback) {
      const who = identities.get(client);
      if (who && maySubscribe(who, subscription.topic)) return callback(null, subscription);
      log.warn({ who, topic: subscription.topic }, "subscription refused by ACL");
      // null grants nothing (SUBACK 0x80) without dropping the connection
      callback(null, null);
    },
  });

  const server: Server = tlsOpts
    ? createTlsServer(
        {
          ca: tlsOpts.ca,
          cert: tlsOpts.cert,
          key: tlsOpts.key,
          requestCert: true,
          rejectUnauthorized: true,
          minVersion: "TLSv1.3",
        },
        (socket) => {
          const der = socket.getPeerCertificate().raw;
          let who: Identity | undefined;
          try {
            who = der ? certificateIdentity(der) : undefined;
          } catch {
            who = undefined;
          }
          if (who) certIdentities.set(socket, who);
          guardSocket(socket, MAX_PACKET_BYTES, (declared) =>
            log.warn({ remote: socket.remoteAddress, declared }, "connection dropped: MQTT packet over the size limit"),
          );
          aedes.handle(socket);
        },
      ).on("tlsClientError", (err, socket) =>
        log.warn({ remote: socket.remoteAddress, err: err.message }, "TLS handshake refused"),
      )
    : createServer((socket) => {
        guardSocket(socket, MAX_PACKET_BYTES, (declared) =>
          log.warn({ remote: socket.remoteAddress, declared }, "connection dropped: MQTT packet over the size limit"),
        );
        aedes.handle(socket);
      });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : opts.port;
  const url = tlsOpts ? `mqtts://${tlsOpts.urlHost}:${port}` : `mqtt://${opts.host}:${port}`;
  log.info({ url }, "mqtt broker listening");

  return {
    aedes,
    url,
    disconnectNode(nodeId) {
      let closed = 0;
      // aedes keeps its connected clients by id at runtime; its typings leave the map out
      const clients = (aedes as unknown as { clients: Record<string, Client> }).clients;
      for (const client of Object.values(clients)) {
        const who = identities.get(client);
        if (who?.role !== "node" || who.nodeId !== nodeId) continue;
        client.close();
        closed++;
      }
      if (closed > 0) log.warn({ nodeId, sessions: closed }, "revoked node disconnected");
      return closed;
    },
    async close() {
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
