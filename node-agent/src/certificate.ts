// @peculiar/x509 2.x resolves its ASN.1 providers through tsyringe, which needs the Reflect metadata API first.
import "reflect-metadata";
import { createPrivateKey, webcrypto, X509Certificate } from "node:crypto";
import { GlanceError, type KeyPair } from "@glance/shared";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const DAY_MS = 86_400_000;
/** SAN URI the fleet CA puts in a node's certificate (orchestrator/src/pki/fleet-ca.ts NODE_URI_PREFIX) */
const NODE_URI_PREFIX = "urn:glance:node:";
/** doctor warns when the node certificate has less left than this */
export const CERT_WARN_DAYS = 14;

/** The node's Ed25519 signing key as PKCS#8 PEM: its fleet certificate is for this key, so it is also its TLS key. */
export function tlsKeyPem(key: KeyPair): string {
  return createPrivateKey({ key: { kty: "OKP", crv: "Ed25519", x: key.publicKey, d: key.privateKey }, format: "jwk" })
    .export({ format: "pem", type: "pkcs8" })
    .toString();
}

export interface CertificateFacts {
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** whole days left (negative once expired) */
  daysLeft: number;
  /** what is wrong with it for this node, each a sentence; empty when it is usable */
  problems: string[];
}

/**
 * Everything a node needs to know about its certificate before using it: signed by the fleet CA it trusts, valid
 * now, for this node id (CN and SAN URI), and for this node's own key.
 */
export function inspectCertificate(
  certPem: string,
  caPem: string,
  nodeId: string,
  key: KeyPair,
  now = new Date(),
): CertificateFacts {
  let cert: X509Certificate;
  let ca: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch {
    throw new GlanceError("CONFIG_INVALID", "the node certificate is not a PEM X.509 certificate");
  }
  try {
    ca = new X509Certificate(caPem);
  } catch {
    throw new GlanceError("CONFIG_INVALID", "the fleet CA file is not a PEM X.509 certificate");
  }
  const notBefore = new Date(cert.validFrom);
  const notAfter = new Date(cert.validTo);
  const problems: string[] = [];
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) problems.push("it is not signed by this fleet CA");
  if (now < notBefore) problems.push(`it is not valid before ${notBefore.toISOString()} (check the clock)`);
  if (now > notAfter) problems.push(`it expired at ${notAfter.toISOString()}`);
  const uris = (cert.subjectAltName ?? "")
    .split(", ")
    .filter((n) => n.startsWith("URI:"))
    .map((n) => n.slice(4));
  if (!uris.includes(`${NODE_URI_PREFIX}${nodeId}`))
    problems.push(`it names ${uris.join(", ") || "no node"}, not ${nodeId}`);
  if (!cert.checkPrivateKey(createPrivateKey(tlsKeyPem(key)))) {
    problems.push("it is for another key than this node's signing key");
  }
  return {
    serial: cert.serialNumber.toLowerCase(),
    notBefore,
    notAfter,
    daysLeft: Math.floor((notAfter.getTime() - now.getTime()) / DAY_MS),
    problems,
  };
}

/** Renew once less than a third of the lifetime is left (30 days of 90): weeks of retries before it lapses. */
export function renewalDue(facts: Pick<CertificateFacts, "notBefore" | "notAfter">, now = new Date()): boolean {
  const lifetime = facts.notAfter.getTime() - facts.notBefore.getTime();
  return facts.notAfter.getTime() - now.getTime() < lifetime / 3;
}

const MAX_CHECK_MS = 6 * 3600_000;

/**
 * When a running agent should next look at its certificate: when renewal falls due (capped at 6 h, so a clock jump
 * or a re-claim is noticed), or after a failed renewal, a thirtieth of the lifetime later (3 days of 90: some ten
 * tries before expiry).
 */
export function nextRenewalCheckMs(
  facts: Pick<CertificateFacts, "notBefore" | "notAfter">,
  now = new Date(),
  failed = false,
): number {
  const lifetime = facts.notAfter.getTime() - facts.notBefore.getTime();
  const wait = failed ? lifetime / 30 : facts.notAfter.getTime() - lifetime / 3 - now.getTime();
  return Math.min(MAX_CHECK_MS, Math.max(1000, wait));
}

/** A PKCS#10 request (PEM) for the node's signing key, signed with it: the node's proof that it holds the key. */
export async function createCertificateRequest(nodeId: string, key: KeyPair): Promise<string> {
  const alg = { name: "Ed25519" };
  const pkcs8 = createPrivateKey(tlsKeyPem(key)).export({ format: "der", type: "pkcs8" });
  const privateKey = await webcrypto.subtle.importKey("pkcs8", pkcs8, alg, false, ["sign"]);
  const publicKey = await webcrypto.subtle.importKey(
    "jwk",
    { kty: "OKP", crv: "Ed25519", x: key.publicKey },
    alg,
    true,
    ["verify"],
  );
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [nodeId] }],
    keys: { privateKey: privateKey as CryptoKey, publicKey: publicKey as CryptoKey },
    signingAlgorithm: alg,
  });
  return csr.toString("pem");
}

export interface RenewedCertificate {
  cert: string;
  ca: string;
  serial: string;
  notAfter: string;
}

/**
 * Asks the orchestrator (`POST /api/nodes/:id/certificate`) for a fresh certificate, proving possession of the key
 * with a signed request; no API token is needed. Throws a GlanceError saying what to do when refused.
 */
export async function renewCertificate(opts: {
  apiUrl: string;
  nodeId: string;
  key: KeyPair;
}): Promise<RenewedCertificate> {
  const csr = await createCertificateRequest(opts.nodeId, opts.key);
  const url = new URL(`/api/nodes/${encodeURIComponent(opts.nodeId)}/certificate`, opts.apiUrl);
  let res: Response;
  try {
    res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ csr }),
      signal: AbortSignal.timeout(20_000),
    });
  } catch (err) {
    throw new GlanceError(
      "CONFIG_INVALID",
      `Cannot reach ${url.origin} to renew the certificate (${(err as Error).message}); check apiUrl and the network.`,
    );
  }
  const body = (await res.json().catch(() => ({}))) as {
    tls?: RenewedCertificate;
    code?: string;
    message?: string;
  };
  if (!res.ok || !body.tls) {
    throw new GlanceError(
      res.status === 403 ? "NODE_REVOKED" : "CONFIG_INVALID",
      `Certificate renewal refused (${res.status} ${body.code ?? ""}): ${body.message ?? "no details"}`,
    );
  }
  return body.tls;
}
