import "reflect-metadata";
import { webcrypto } from "node:crypto";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeMessage, generateSigningKeyPair, type KeyPair, topicFor } from "@glance/shared";
import * as x509 from "@peculiar/x509";
import mqtt, { type MqttClient } from "mqtt";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadOrCreateFleetCa, signingKeyPem } from "../pki/fleet-ca.ts";
import {
  createStore,
  expectJson,
  type Harness,
  randomEmbedding,
  sealTemplate,
  startHarness,
} from "../testing/harness.ts";
import { startBroker } from "./broker.ts";

interface TlsNode {
  nodeId: string;
  cameraId: string;
  signingKey: KeyPair;
  tls: { ca: string; cert: string; serial: string; notAfter: string };
}

function connectTls(url: string, tls: { ca: string; cert?: string; key?: string }, extra: mqtt.IClientOptions = {}) {
  return mqtt.connectAsync(url, {
    ...tls,
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    rejectUnauthorized: true,
    ...extra,
  });
}

/** How a connection attempt ends: "connected", or "refused" (error or close before CONNACK), or "timeout". */
function attempt(url: string, tls: { ca: string; cert?: string; key?: string }, extra: mqtt.IClientOptions = {}) {
  return new Promise<"connected" | "refused" | "timeout">((resolve) => {
    const c = mqtt.connect(url, { ...tls, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000, ...extra });
    const done = (how: "connected" | "refused" | "timeout") => {
      clearTimeout(timer);
      c.end(true);
      resolve(how);
    };
    const timer = setTimeout(() => done("timeout"), 8000);
    c.once("connect", () => done("connected"));
    c.once("error", () => done("refused"));
    c.once("close", () => done("refused"));
  });
}

function closed(client: MqttClient, ms = 3000): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    client.once("close", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function waitFor(check: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("broker over mutual TLS with fleet certificates", () => {
  let h: Harness;
  let a: TlsNode;
  let b: TlsNode;
  const clients: MqttClient[] = [];
  const connect = async (...args: Parameters<typeof connectTls>) => {
    const c = await connectTls(...args);
    clients.push(c);
    return c;
  };

  const register = async (storeId: string, csrFor?: KeyPair): Promise<TlsNode> => {
    const signingKey = csrFor ?? generateSigningKeyPair();
    const nodeId = `node-${Math.random().toString(36).slice(2, 10)}`;
    let csr: string | undefined;
    if (csrFor) {
      const alg = { name: "Ed25519" };
      const privateKey = await webcrypto.subtle.importKey(
        "jwk",
        { kty: "OKP", crv: "Ed25519", x: signingKey.publicKey, d: signingKey.privateKey },
        alg,
        true,
        ["sign"],
      );
      const publicKey = await webcrypto.subtle.importKey(
        "jwk",
        { kty: "OKP", crv: "Ed25519", x: signingKey.publicKey },
        alg,
        true,
        ["verify"],
      );
      x509.cryptoProvider.set(webcrypto as unknown as Crypto);
      const req = await x509.Pkcs10CertificateRequestGenerator.create({
        name: `CN=${nodeId}`,
        keys: { publicKey, privateKey } as never,
        signingAlgorithm: alg,
      });
      csr = req.toString("pem");
    }
    const body = await expectJson<{ tls: TlsNode["tls"]; mqtt: { url: string } }>(
      await h.api("/api/nodes", {
        method: "POST",
        json: {
          nodeId,
          storeId,
          cameraId: "entrance",
          signingPublicKey: signingKey.publicKey,
          ...(csr ? { csr } : {}),
        },
      }),
      201,
    );
    expect(body.mqtt.url).toBe(h.orch.mqttUrl);
    return { nodeId, cameraId: "entrance", signingKey, tls: body.tls };
  };

  const nodeTls = (n: TlsNode) => ({ ca: n.tls.ca, cert: n.tls.cert, key: signingKeyPem(n.signingKey) });

  const template = (n: TlsNode, seq: number, as: TlsNode = n) =>
    encodeMessage(
      "template",
      sealTemplate({
        node: as,
        seq,
        embedding: randomEmbedding(),
        recipient: h.orch.sealingKey,
        space: "arcface-r100-glint360k-v1",
      }),
    );

  beforeAll(async () => {
    h = await startHarness({ mqttTls: {} });
    const storeId = await createStore(h);
    a = await register(storeId);
    b = await register(storeId, generateSigningKeyPair());
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => {})));
    await h?.close();
  });

  it("serves mqtts and issues node certificates for the node's own signing key", async () => {
    expect(h.orch.mqttUrl).toMatch(/^mqtts:\/\/127\.0\.0\.1:\d+$/);
    const cert = new x509.X509Certificate(a.tls.cert);
    expect(cert.subject).toBe(`CN=${a.nodeId}`);
    expect(cert.getExtension(x509.SubjectAlternativeNameExtension)?.names.items).toEqual([
      expect.objectContaining({ type: "url", value: `urn:glance:node:${a.nodeId}` }),
    ]);
    const jwk = await webcrypto.subtle.exportKey("jwk", await cert.publicKey.export(webcrypto as unknown as Crypto));
    expect(jwk.x).toBe(a.signingKey.publicKey);
    expect(a.tls.serial).toBe(cert.serialNumber);
    const days = (cert.notAfter.getTime() - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(89);
    expect(days).toBeLessThan(91);
    expect((await stat(join(h.dataDir, "pki", "ca-key.pem"))).mode & 0o777).toBe(0o600);
  });

  it("a node with a valid certificate publishes its templates and reads its desired state", async () => {
    const space = (await (await h.api("/api/health")).json()) as { space?: string };
    const c = await connect(h.orch.mqttUrl, nodeTls(a), { clientId: `glance-node-${a.nodeId}` });
    const desired = new Promise<string>((resolve) => c.once("message", (topic) => resolve(topic)));
    await c.subscribeAsync(topicFor("desired", a.nodeId), { qos: 1 });
    expect(await desired).toBe(topicFor("desired", a.nodeId));
    const before = h.orch.metrics().accepted;
    const payload = encodeMessage(
      "template",
      sealTemplate({
        node: a,
        seq: 1,
        embedding: randomEmbedding(),
        recipient: h.orch.sealingKey,
        space: space.space ?? "",
      }),
    );
    await c.publishAsync(topicFor("template", a.nodeId), payload, { qos: 1 });
    await waitFor(() => h.orch.metrics().accepted === before + 1);
  });

  it("a certificate requested with a CSR works the same", async () => {
    const c = await connect(h.orch.mqttUrl, nodeTls(b));
    expect(c.connected).toBe(true);
  });

  it("a node cannot publish as another node", async () => {
    const c = await connect(h.orch.mqttUrl, nodeTls(a));
    const gone = closed(c);
    const before = { ...h.orch.metrics() };
    // b's topic with a's certificate: payload sealed and signed by b's key would not help either
    c.publish(topicFor("template", b.nodeId), template(b, 1), { qos: 1 });
    expect(await gone).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(h.orch.metrics()).toEqual(before);
    // nor claim b's user name or client id
    await expect(connectTls(h.orch.mqttUrl, nodeTls(a), { username: b.nodeId })).rejects.toThrow(/Bad username/i);
    await expect(connectTls(h.orch.mqttUrl, nodeTls(a), { clientId: `glance-node-${b.nodeId}` })).rejects.toThrow(
      /Bad username/i,
    );
  });

  it("refuses a client without a certificate, even with the node's MQTT password", async () => {
    expect(await attempt(h.orch.mqttUrl, { ca: a.tls.ca }, { username: a.nodeId, password: "x" })).toBe("refused");
    expect(await attempt(h.orch.mqttUrl, nodeTls(a))).toBe("connected");
  });

  it("refuses a self-signed certificate and one from another fleet's CA", { timeout: 20_000 }, async () => {
    const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
    x509.cryptoProvider.set(webcrypto as unknown as Crypto);
    const keys = (await webcrypto.subtle.generateKey(alg, true, ["sign", "verify"])) as CryptoKeyPairLike;
    const selfSigned = await x509.X509CertificateGenerator.createSelfSigned({
      name: `CN=${a.nodeId}`,
      keys: keys as never,
      signingAlgorithm: alg,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: `urn:glance:node:${a.nodeId}` }])],
    });
    const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey)).toString("base64");
    const key = `-----BEGIN PRIVATE KEY-----\n${pkcs8.match(/.{1,64}/g)?.join("\n")}\n-----END PRIVATE KEY-----\n`;
    expect(await attempt(h.orch.mqttUrl, { ca: a.tls.ca, cert: selfSigned.toString("pem"), key })).toBe("refused");

    const otherDir = await mkdtemp(join(tmpdir(), "glance-other-ca-"));
    try {
      const otherCa = await loadOrCreateFleetCa(otherDir);
      const forged = await otherCa.issueNodeCertificate(a.nodeId, a.signingKey.publicKey);
      expect(
        await attempt(h.orch.mqttUrl, { ca: a.tls.ca, cert: forged.certPem, key: signingKeyPem(a.signingKey) }),
      ).toBe("refused");
      // the same key with this fleet's certificate connects: the refusal is the issuer's
      expect(await attempt(h.orch.mqttUrl, nodeTls(a))).toBe("connected");
    } finally {
      await rm(otherDir, { recursive: true, force: true });
    }
  });

  it("refuses a fleet certificate whose key is not the node's registered signing key", async () => {
    const stranger = generateSigningKeyPair();
    const cert = await h.orch.fleetCa.issueNodeCertificate(a.nodeId, stranger.publicKey);
    await expect(
      connectTls(h.orch.mqttUrl, { ca: a.tls.ca, cert: cert.certPem, key: signingKeyPem(stranger) }),
    ).rejects.toThrow(/Bad username/i);
  });
});

type CryptoKeyPairLike = { publicKey: CryptoKey; privateKey: CryptoKey };

describe("plain MQTT", () => {
  it("refuses to listen anywhere but loopback", async () => {
    const opts = {
      port: 0,
      orchestratorSecret: "s",
      verifyNode: async () => false,
      logger: pino({ level: "silent" }),
    };
    await expect(startBroker({ ...opts, host: "0.0.0.0" })).rejects.toThrow(/loopback only.*mqttTls/);
    const local = await startBroker({ ...opts, host: "127.0.0.1" });
    expect(local.url).toMatch(/^mqtt:\/\/127\.0\.0\.1:\d+$/);
    await local.close();
  });
});
