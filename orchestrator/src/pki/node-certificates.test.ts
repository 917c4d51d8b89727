import "reflect-metadata";
import { webcrypto } from "node:crypto";
import { readFile } from "node:fs/promises";
import { generateSigningKeyPair, type KeyPair } from "@glance/shared";
import * as x509 from "@peculiar/x509";
import mqtt, { type MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createStore, databaseBackends, expectJson, type Harness, startHarness } from "../testing/harness.ts";
import { signingKeyPem } from "./fleet-ca.ts";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

interface Tls {
  ca: string;
  cert: string;
  serial: string;
  notAfter: string;
}

/** A PKCS#10 request signed with `key` (what `glance-agent renew` sends). */
async function csrFor(nodeId: string, key: KeyPair): Promise<string> {
  const alg = { name: "Ed25519" };
  const privateKey = await webcrypto.subtle.importKey(
    "jwk",
    { kty: "OKP", crv: "Ed25519", x: key.publicKey, d: key.privateKey },
    alg,
    false,
    ["sign"],
  );
  const publicKey = await webcrypto.subtle.importKey(
    "jwk",
    { kty: "OKP", crv: "Ed25519", x: key.publicKey },
    alg,
    true,
    ["verify"],
  );
  const req = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${nodeId}`,
    keys: { publicKey, privateKey } as never,
    signingAlgorithm: alg,
  });
  return req.toString("pem");
}

function connect(url: string, key: KeyPair, tls: Tls, nodeId: string): Promise<MqttClient> {
  return mqtt.connectAsync(url, {
    ca: tls.ca,
    cert: tls.cert,
    key: signingKeyPem(key),
    clientId: `glance-node-${nodeId}`,
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5000,
  });
}

const backends = databaseBackends;

for (const backend of backends)
  describe(`node certificates: renewal and revocation on ${backend.name}`, () => {
    let h: Harness;
    let storeId: string;
    const clients: MqttClient[] = [];

    const claim = async () => {
      const key = generateSigningKeyPair();
      const nodeId = `node-${Math.random().toString(36).slice(2, 10)}`;
      const body = await expectJson<{ tls: Tls }>(
        await h.api("/api/nodes", {
          method: "POST",
          json: { nodeId, storeId, cameraId: "entrance", signingPublicKey: key.publicKey },
        }),
        201,
      );
      return { nodeId, key, tls: body.tls };
    };
    const renew = (nodeId: string, csr: string) =>
      h.api(`/api/nodes/${nodeId}/certificate`, { method: "POST", token: null, json: { csr } });

    beforeAll(async () => {
      h = await startHarness({ mqttTls: {}, databaseUrl: backend.url() });
      storeId = await createStore(h);
    });

    afterAll(async () => {
      await Promise.all(clients.map((c) => c.endAsync(true).catch(() => {})));
      await h?.close();
    });

    it("node certificates live 90 days by default", async () => {
      const node = await claim();
      const days = (new Date(node.tls.notAfter).getTime() - Date.now()) / 86_400_000;
      expect(days).toBeGreaterThan(89.9);
      expect(days).toBeLessThan(90.1);
    });

    it("a node renews its certificate with a request signed by its own key, without a token; audited", async () => {
      const node = await claim();
      const renewed = await expectJson<{ tls: Tls }>(
        await renew(node.nodeId, await csrFor(node.nodeId, node.key)),
        200,
      );
      expect(renewed.tls.serial).not.toBe(node.tls.serial);
      expect(renewed.tls.ca).toBe(node.tls.ca);
      const cert = new x509.X509Certificate(renewed.tls.cert);
      expect(cert.subject).toBe(`CN=${node.nodeId}`);
      // the renewed certificate opens the broker
      const c = await connect(h.orch.mqttUrl, node.key, renewed.tls, node.nodeId);
      clients.push(c);
      expect(c.connected).toBe(true);

      // HQ's node list shows the newest certificate, to spot nodes that stopped renewing
      const list = await expectJson<{ id: string; certificate: { serial: string; notAfter: string } | null }[]>(
        await h.api("/api/nodes"),
        200,
      );
      expect(list.find((n) => n.id === node.nodeId)?.certificate).toEqual({
        serial: renewed.tls.serial,
        notAfter: renewed.tls.notAfter,
      });

      const audit = await expectJson<{ actor: string; action: string; subject: string; details: { serial: string } }[]>(
        await h.api("/api/audit?limit=20"),
        200,
      );
      expect(audit).toContainEqual(
        expect.objectContaining({
          actor: `node:${node.nodeId}`,
          action: "node certificate renewed",
          subject: node.nodeId,
          details: expect.objectContaining({ serial: renewed.tls.serial }),
        }),
      );
    });

    it("a node gets at most 10 certificates a day, its claim included: a replayed request cannot flood the ledger", async () => {
      const node = await claim();
      const csr = await csrFor(node.nodeId, node.key);
      for (let i = 1; i < 10; i++) expect((await renew(node.nodeId, csr)).status).toBe(200);
      const refused = await renew(node.nodeId, csr);
      expect(refused.status).toBe(409);
      expect(((await refused.json()) as { message: string }).message).toMatch(/10 certificates in the last 24 hours/);
      // another node is not held back by it
      const other = await claim();
      expect((await renew(other.nodeId, await csrFor(other.nodeId, other.key))).status).toBe(200);
    });

    it("a request signed by another key gets no certificate", async () => {
      const node = await claim();
      const stranger = generateSigningKeyPair();
      const res = await renew(node.nodeId, await csrFor(node.nodeId, stranger));
      expect(res.status).toBe(400);
      expect(((await res.json()) as { message: string }).message).toMatch(/signing key/);
      expect((await renew("no-such-node", await csrFor("no-such-node", node.key))).status).toBe(404);
    });

    it("revoking a node drops its live session at once and refuses reconnects and renewals", async () => {
      const node = await claim();
      const c = await connect(h.orch.mqttUrl, node.key, node.tls, node.nodeId);
      clients.push(c);
      const gone = new Promise<number>((resolve) => c.once("close", () => resolve(Date.now())));
      const t0 = Date.now();
      const res = await h.api(`/api/nodes/${node.nodeId}/revoke`, { method: "POST" });
      const body = await expectJson<{ revokedAt: string }>(res, 200);
      expect(new Date(body.revokedAt).getTime()).toBeGreaterThanOrEqual(t0 - 1000);
      // "at once": the session is closed before (or right after) the API answers
      expect((await gone) - t0).toBeLessThan(2000);

      await expect(connect(h.orch.mqttUrl, node.key, node.tls, node.nodeId)).rejects.toThrow(/Bad username/i);
      const refused = await renew(node.nodeId, await csrFor(node.nodeId, node.key));
      expect(refused.status).toBe(403);
      expect(((await refused.json()) as { message: string }).message).toMatch(/revoked/);
      // revoking twice says so; an unknown node is not found; no token, no revocation
      expect((await h.api(`/api/nodes/${node.nodeId}/revoke`, { method: "POST" })).status).toBe(409);
      expect((await h.api("/api/nodes/nobody/revoke", { method: "POST" })).status).toBe(404);
      expect((await h.api(`/api/nodes/${node.nodeId}/revoke`, { method: "POST", token: null })).status).toBe(401);

      const audit = await expectJson<{ action: string; subject: string }[]>(await h.api("/api/audit?limit=50"), 200);
      expect(audit).toContainEqual(
        expect.objectContaining({
          action: "admin POST /api/nodes/:nodeId/revoke",
          subject: `/api/nodes/${node.nodeId}/revoke`,
        }),
      );
    });

    it("the fleet CRL lists every certificate of a revoked node and none of the others", async () => {
      const kept = await claim();
      const lost = await claim();
      const renewed = await expectJson<{ tls: Tls }>(
        await renew(lost.nodeId, await csrFor(lost.nodeId, lost.key)),
        200,
      );
      await expectJson(await h.api(`/api/nodes/${lost.nodeId}/revoke`, { method: "POST" }), 200);

      const crl = new x509.X509Crl(await readFile(h.orch.fleetCa.crlFile, "utf8"));
      const ca = new x509.X509Certificate(h.orch.fleetCa.caPem);
      expect(await crl.verify({ publicKey: ca })).toBe(true);
      expect(crl.nextUpdate?.getTime()).toBeGreaterThan(Date.now() + 7 * 86_400_000);
      const serials = crl.entries.map((e) => e.serialNumber.toLowerCase());
      expect(serials).toEqual(expect.arrayContaining([lost.tls.serial, renewed.tls.serial]));
      expect(serials).not.toContain(kept.tls.serial);
    });
  });
