import { createPublicKey } from "node:crypto";
import { GlanceError } from "@glance/shared";
import { and, eq, isNull } from "drizzle-orm";
import { Hono } from "hono";
import { z } from "zod";
import { appendAudit } from "../../audit/log.ts";
import { hashSecret, newSecret } from "../../auth/secrets.ts";
import { nodes, stores } from "../../db/schema.ts";
import type { Services } from "../../services.ts";
import { type Env, requireRole } from "../auth.ts";
import { Id } from "../ids.ts";
import { valid } from "../validate.ts";

function isEd25519PublicKey(x: string): boolean {
  try {
    createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" });
    return true;
  } catch {
    return false;
  }
}

export const RegisterNode = z.object({
  nodeId: Id,
  storeId: z.string().min(1),
  cameraId: Id,
  signingPublicKey: z
    .string()
    .regex(/^[A-Za-z0-9_-]{43}$/, "base64url raw 32-byte Ed25519 public key")
    .refine(isEd25519PublicKey, "not a valid Ed25519 public key"),
  /** optional PKCS#10 request (PEM) signed with the signing key: proof that the node holds it */
  csr: z.string().max(8192).optional(),
});
export type RegisterNode = z.infer<typeof RegisterNode>;

/** A PKCS#10 request (PEM) for the node's registered Ed25519 key, signed with it: the proof of possession. */
export const RenewCertificate = z.object({ csr: z.string().min(1).max(8192) });
export type RenewCertificate = z.infer<typeof RenewCertificate>;

const NodeParam = z.object({ nodeId: Id });

/**
 * Certificates a node may be issued in 24 hours, its claim included: renewal needs no token, so a captured request
 * replayed in a loop must not flood the CA ledger and the audit log. A node renews every 60 days.
 */
export const MAX_NODE_CERTIFICATES_PER_DAY = 10;

/**
 * A technician registers a node with its signing key and receives its MQTT credentials (password shown once) and a
 * fleet-CA client certificate for that same key (from `csr` when given), with the CA chain.
 * The node's desired state is then waiting for it, retained, on its desired topic.
 */
export function nodesRouter(s: Services) {
  return (
    new Hono<Env>()
      .post("/", requireRole(s.db, ["technician", "hq-admin"]), valid("json", RegisterNode), async (c) => {
        const body = c.req.valid("json");
        const store = await s.db.select({ id: stores.id }).from(stores).where(eq(stores.id, body.storeId));
        if (store.length === 0)
          throw new GlanceError("NOT_FOUND", `Store ${body.storeId} does not exist; create it first.`);
        const existing = await s.db.select({ id: nodes.id }).from(nodes).where(eq(nodes.id, body.nodeId));
        if (existing.length > 0) throw new GlanceError("CONFLICT", `Node ${body.nodeId} is already registered.`);
        // issued before the row is written: a refused CSR registers nothing
        const issued = body.csr
          ? await s.fleetCa.issueNodeCertificateFromCsr(body.nodeId, body.csr, body.signingPublicKey)
          : await s.fleetCa.issueNodeCertificate(body.nodeId, body.signingPublicKey);
        const password = newSecret();
        await s.db.insert(nodes).values({
          id: body.nodeId,
          storeId: body.storeId,
          cameraId: body.cameraId,
          signingPublicKey: body.signingPublicKey,
          mqttPasswordHash: hashSecret(password),
        });
        const desired = await s.publishDesired(body.nodeId);
        s.logger.info({ nodeId: body.nodeId, storeId: body.storeId, certSerial: issued.serial }, "node registered");
        const tls = {
          cert: issued.certPem,
          ca: s.fleetCa.caPem,
          serial: issued.serial,
          notAfter: issued.notAfter.toISOString(),
        };
        return c.json(
          { nodeId: body.nodeId, mqtt: { url: s.mqttUrl, username: body.nodeId, password }, tls, desired },
          201,
        );
      })
      /**
       * Certificate renewal by the node itself (`glance-agent renew`): no API token, the request is signed by the
       * node's registered signing key, and the certificate issued is only usable with that key, so a replayed request
       * gains nothing. A revoked node gets nothing. Audited with the new serial.
       */
      .post("/:nodeId/certificate", valid("param", NodeParam), valid("json", RenewCertificate), async (c) => {
        const { nodeId } = c.req.valid("param");
        const { csr } = c.req.valid("json");
        const [node] = await s.db
          .select({ key: nodes.signingPublicKey, revokedAt: nodes.revokedAt })
          .from(nodes)
          .where(eq(nodes.id, nodeId));
        if (!node) throw new GlanceError("NOT_FOUND", `Node ${nodeId} is not registered; claim it first.`);
        if (node.revokedAt) {
          throw new GlanceError(
            "FORBIDDEN",
            `Node ${nodeId} was revoked at ${node.revokedAt.toISOString()}; claim the device again under a new node id.`,
          );
        }
        const today = await s.fleetCa.issuedSince(nodeId, new Date(Date.now() - 86_400_000));
        if (today >= MAX_NODE_CERTIFICATES_PER_DAY) {
          throw new GlanceError(
            "CONFLICT",
            `Node ${nodeId} was issued ${today} certificates in the last 24 hours; its current one is still good, try tomorrow.`,
          );
        }
        const issued = await s.fleetCa.issueNodeCertificateFromCsr(nodeId, csr, node.key);
        await appendAudit(s.db, {
          actor: `node:${nodeId}`,
          action: "node certificate renewed",
          subject: nodeId,
          details: { serial: issued.serial, notAfter: issued.notAfter.toISOString() },
        });
        s.logger.info({ nodeId, certSerial: issued.serial }, "node certificate renewed");
        return c.json({
          nodeId,
          tls: {
            cert: issued.certPem,
            ca: s.fleetCa.caPem,
            serial: issued.serial,
            notAfter: issued.notAfter.toISOString(),
          },
        });
      })
      /**
       * Revokes a node for good (stolen, replaced, decommissioned): its live broker session is dropped at once,
       * reconnects and certificate renewals are refused, its templates are rejected (NODE_REVOKED) and its
       * certificates enter the fleet CRL. Audited as an admin action.
       */
      .post("/:nodeId/revoke", requireRole(s.db, ["hq-admin", "technician"]), valid("param", NodeParam), async (c) => {
        const { nodeId } = c.req.valid("param");
        const [revoked] = await s.db
          .update(nodes)
          .set({ revokedAt: new Date() })
          .where(and(eq(nodes.id, nodeId), isNull(nodes.revokedAt)))
          .returning({ revokedAt: nodes.revokedAt });
        if (!revoked) {
          const [node] = await s.db.select({ revokedAt: nodes.revokedAt }).from(nodes).where(eq(nodes.id, nodeId));
          if (!node) throw new GlanceError("NOT_FOUND", `Node ${nodeId} is not registered.`);
          throw new GlanceError("CONFLICT", `Node ${nodeId} was already revoked at ${node.revokedAt?.toISOString()}.`);
        }
        await s.nodeRevoked?.(nodeId);
        s.logger.warn({ nodeId }, "node revoked");
        return c.json({ nodeId, revokedAt: revoked.revokedAt?.toISOString() });
      })
      .get("/", requireRole(s.db, ["hq-admin", "technician", "auditor", "store-manager"]), async (c) => {
        const p = c.get("principal");
        const rows = await s.db
          .select({
            id: nodes.id,
            reported: nodes.reported,
            lastSeenAt: nodes.lastSeenAt,
            storeId: nodes.storeId,
            cameraId: nodes.cameraId,
            lastSeq: nodes.lastSeq,
            createdAt: nodes.createdAt,
            revokedAt: nodes.revokedAt,
          })
          .from(nodes)
          .orderBy(nodes.id);
        // the newest certificate of each node: HQ sees which nodes fail to renew before they drop off
        const certificates = await s.fleetCa.latestClientCertificates();
        return c.json(
          rows
            .filter((r) => p.role !== "store-manager" || r.storeId === p.storeId)
            .map((r) => ({ ...r, certificate: certificates.get(r.id) ?? null })),
        );
      })
  );
}
