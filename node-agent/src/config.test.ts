import "reflect-metadata";
import { webcrypto } from "node:crypto";
import { chmodSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateSigningKeyPair, type KeyPair } from "@glance/shared";
import * as x509 from "@peculiar/x509";
import { describe, expect, it } from "vitest";
import { nextRenewalCheckMs, renewalDue } from "./certificate.ts";
import { keyFile, loadMqttTls, loadOrCreateKey, readConfig } from "./config.ts";
import { doctor } from "./doctor.ts";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);
const DAY = 86_400_000;
const EC = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };

/** A fleet CA like the orchestrator's: ECDSA root, node certificates for the node's Ed25519 key, SAN URI. */
async function testCa() {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as {
    publicKey: CryptoKey;
    privateKey: CryptoKey;
  };
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    name: "CN=test fleet CA",
    keys,
    signingAlgorithm: EC,
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + 365 * DAY),
    extensions: [new x509.BasicConstraintsExtension(true, 0, true)],
  });
  return {
    pem: ca.toString("pem"),
    async issue(nodeId: string, key: KeyPair, from: number, to: number) {
      const publicKey = await webcrypto.subtle.importKey(
        "jwk",
        { kty: "OKP", crv: "Ed25519", x: key.publicKey },
        { name: "Ed25519" },
        true,
        ["verify"],
      );
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: "01a2b3",
        subject: `CN=${nodeId}`,
        issuer: ca.subject,
        notBefore: new Date(from),
        notAfter: new Date(to),
        publicKey,
        signingKey: keys.privateKey,
        signingAlgorithm: EC,
        extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: `urn:glance:node:${nodeId}` }])],
      });
      return cert.toString("pem");
    },
  };
}

async function tlsNode(
  cert: (key: KeyPair) => Promise<string>,
  caPem: string,
  overrides: Record<string, unknown> = {},
) {
  const dir = await mkdtemp(join(tmpdir(), "glance-config-"));
  const file = join(dir, "node.json");
  writeFileSync(
    file,
    JSON.stringify({
      nodeId: "tls-node",
      cameraId: "cam-1",
      // nothing listens here: these tests are about the files
      mqtt: { url: "mqtts://127.0.0.1:1", ca: "state/fleet-ca.pem", cert: "state/node-cert.pem" },
      source: { kind: "folder", path: "/nonexistent" },
      dataDir: "state",
      ...overrides,
    }),
  );
  const config = readConfig(file);
  const { key } = loadOrCreateKey(config.dataDir);
  writeFileSync(join(config.dataDir, "fleet-ca.pem"), caPem);
  writeFileSync(join(config.dataDir, "node-cert.pem"), await cert(key));
  return { config, key, dir };
}

describe("node config with mutual TLS files", () => {
  it("loads the CA, the certificate and the node's own key, resolved against the config's folder", async () => {
    const ca = await testCa();
    const { config, key, dir } = await tlsNode(
      (k) => ca.issue("tls-node", k, Date.now() - DAY, Date.now() + 90 * DAY),
      ca.pem,
    );
    expect(config.mqtt.ca).toBe(join(dir, "state", "fleet-ca.pem"));
    const tls = loadMqttTls(config, key);
    if (!tls) throw new Error("no TLS material loaded");
    expect(tls.ca).toBe(ca.pem);
    expect(tls.key).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(tls.facts.daysLeft).toBe(89);
    expect(tls.facts.serial).toBe("01a2b3");
    expect(renewalDue(tls.facts)).toBe(false);
    expect(renewalDue(tls.facts, new Date(Date.now() + 62 * DAY))).toBe(true);
  });

  it("a running agent looks again when renewal falls due, at most 6 h later, and retries failures days before expiry", () => {
    const now = new Date("2026-01-01T00:00:00Z");
    const cert = (issuedDaysAgo: number, lifetimeDays: number) => ({
      notBefore: new Date(now.getTime() - issuedDaysAgo * DAY),
      notAfter: new Date(now.getTime() + (lifetimeDays - issuedDaysAgo) * DAY),
    });
    expect(nextRenewalCheckMs(cert(1, 90), now)).toBe(6 * 3600_000);
    expect(nextRenewalCheckMs(cert(60 - 1 / 24, 90), now)).toBe(3600_000);
    expect(nextRenewalCheckMs(cert(70, 90), now)).toBe(1000);
    expect(nextRenewalCheckMs({ notBefore: now, notAfter: new Date(now.getTime() + 180_000) }, now)).toBe(120_000);
    expect(nextRenewalCheckMs(cert(70, 90), now, true)).toBe(6 * 3600_000);
    expect(nextRenewalCheckMs({ notBefore: now, notAfter: new Date(now.getTime() + 300_000) }, now, true)).toBe(10_000);
  });

  it("says which file is missing or unreadable and where to get it", async () => {
    const ca = await testCa();
    const { config, key } = await tlsNode((k) => ca.issue("tls-node", k, Date.now() - DAY, Date.now() + DAY), ca.pem);
    expect(() => loadMqttTls({ ...config, mqtt: { ...config.mqtt, cert: "/nope/node-cert.pem" } }, key)).toThrow(
      /mqtt\.cert: \/nope\/node-cert\.pem does not exist\. Copy node-cert\.pem from the node's claim, or run `glance-agent renew/,
    );
    expect(() => loadMqttTls({ ...config, mqtt: { ...config.mqtt, ca: "/nope/ca.pem" } }, key)).toThrow(
      /mqtt\.ca: \/nope\/ca\.pem does not exist\. Copy fleet-ca\.pem/,
    );
    if (process.getuid?.() !== 0) {
      chmodSync(config.mqtt.cert as string, 0o000);
      expect(() => loadMqttTls(config, key)).toThrow(/cannot be read by this user/);
    }
    expect(() => loadMqttTls({ ...config, mqtt: { ...config.mqtt, url: "mqtt://127.0.0.1:1" } }, key)).toThrow(
      /not mqtts:\/\//,
    );
  });

  it("refuses a certificate for another key, another node, another CA, or expired, saying what to do", async () => {
    const ca = await testCa();
    const other = await testCa();
    const stranger = generateSigningKeyPair();
    const now = Date.now();
    const cases: [(k: KeyPair) => Promise<string>, string, RegExp][] = [
      [
        () => ca.issue("tls-node", stranger, now - DAY, now + DAY),
        ca.pem,
        /for another key than this node's signing key/,
      ],
      [
        (k) => ca.issue("other-node", k, now - DAY, now + DAY),
        ca.pem,
        /names urn:glance:node:other-node, not tls-node/,
      ],
      [(k) => other.issue("tls-node", k, now - DAY, now + DAY), ca.pem, /not signed by this fleet CA/],
      [
        (k) => ca.issue("tls-node", k, now - 3 * DAY, now - DAY),
        ca.pem,
        /it expired at .*Renew it: glance-agent renew/,
      ],
    ];
    for (const [cert, caPem, message] of cases) {
      const { config, key } = await tlsNode(cert, caPem);
      expect(() => loadMqttTls(config, key)).toThrow(message);
    }
  });

  it("wants mqtt.ca and mqtt.cert together", async () => {
    const dir = await mkdtemp(join(tmpdir(), "glance-config-"));
    const file = join(dir, "node.json");
    writeFileSync(
      file,
      JSON.stringify({
        nodeId: "n",
        cameraId: "c",
        mqtt: { url: "mqtts://h:8883", cert: "node-cert.pem" },
        source: { kind: "folder", path: "." },
        dataDir: "state",
      }),
    );
    expect(() => readConfig(file)).toThrow(/mqtt\.ca and mqtt\.cert go together/);
  });
});

describe("glance-agent doctor with a node certificate", () => {
  it("warns when the certificate has less than 14 days left, and fails on an expired one", async () => {
    const ca = await testCa();
    const soon = await tlsNode((k) => ca.issue("tls-node", k, Date.now() - 80 * DAY, Date.now() + 10.5 * DAY), ca.pem);
    const checks = await doctor(soon.config, undefined);
    const cert = checks.find((c) => c.name === "certificate");
    expect(cert).toMatchObject({ ok: true, warn: true });
    expect(cert?.detail).toMatch(
      /serial 01a2b3 for tls-node and this node's key, chains to the fleet CA, .*\(10 days left\)/,
    );
    expect(cert?.next).toMatch(/glance-agent renew --config .*add apiUrl/);

    const old = await tlsNode((k) => ca.issue("tls-node", k, Date.now() - 91 * DAY, Date.now() - DAY), ca.pem);
    const failed = await doctor(old.config, undefined);
    expect(failed.find((c) => c.name === "certificate")).toMatchObject({
      ok: false,
      next: expect.stringMatching(/renew/),
    });
    // the broker is not tried with an unusable certificate
    expect(failed.find((c) => c.name === "broker")).toMatchObject({
      ok: false,
      detail: expect.stringMatching(/unusable/),
    });
    expect(keyFile(old.config.dataDir)).toMatch(/node-signing-key\.json$/);
  }, 60_000);
});
