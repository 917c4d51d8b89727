// @peculiar/x509 2.x resolves its ASN.1 providers through tsyringe, which needs the Reflect metadata API first.
import "reflect-metadata";
import { createPrivateKey, createPublicKey, KeyObject, randomBytes, webcrypto } from "node:crypto";
import { appendFile, chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { GlanceError, type KeyPair } from "@glance/shared";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

/** CA and server keys: ECDSA P-256, understood by every TLS stack a chain's brokers run (OpenSSL, Node). */
const EC = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const ED25519 = { name: "Ed25519" } as const;

/** SAN URI that names a node in its certificate; the broker takes the node's identity from it. */
export const NODE_URI_PREFIX = "urn:glance:node:";
/** SAN URI of the orchestrator's own client certificate (never issued through the API). */
export const ORCHESTRATOR_URI = "urn:glance:orchestrator";

const DAY_MS = 86_400_000;
/** short enough that a lost node's certificate dies on its own, long enough to survive a quarter offline */
export const DEFAULT_NODE_VALIDITY_DAYS = 90;

type KeyPairOf = { publicKey: CryptoKey; privateKey: CryptoKey };

export interface IssuedCertificate {
  certPem: string;
  /** hex, as recorded in `<dataDir>/pki/issued.jsonl` */
  serial: string;
  notAfter: Date;
}

export interface TlsMaterial {
  ca: string;
  cert: string;
  key: string;
}

export interface FleetCa {
  /** the self-signed root, PEM: the whole chain a node or broker needs */
  caPem: string;
  /** `<dataDir>/pki/crl.pem`, kept current by `startCrlPublisher` (mosquitto's `crlfile`) */
  crlFile: string;
  /**
   * A client certificate for a node's own Ed25519 signing key: the key that signs its templates is the key that
   * authenticates its TLS connection. CN = nodeId, SAN URI `urn:glance:node:<nodeId>`.
   */
  issueNodeCertificate(nodeId: string, signingPublicKey: string): Promise<IssuedCertificate>;
  /** Same, from a PKCS#10 request signed by the node (proof of possession); its key must be `signingPublicKey`. */
  issueNodeCertificateFromCsr(nodeId: string, csrPem: string, signingPublicKey: string): Promise<IssuedCertificate>;
  /** A broker server certificate (fresh key) for 127.0.0.1, localhost and `hostnames`. */
  issueServerCertificate(hostnames: readonly string[]): Promise<TlsMaterial>;
  /** The orchestrator's own client certificate (fresh key), CN `commonName` (its broker user name). */
  issueOrchestratorCertificate(commonName: string): Promise<TlsMaterial>;
  /** serials (hex) of every certificate this CA issued to CN `commonName`, from the ledger */
  issuedTo(commonName: string): Promise<string[]>;
  /** how many certificates this CA issued to CN `commonName` since `since`, from the ledger */
  issuedSince(commonName: string, since: Date): Promise<number>;
  /** the newest client certificate issued to each CN (serial, expiry), from the ledger */
  latestClientCertificates(): Promise<Map<string, { serial: string; notAfter: string }>>;
  /**
   * A CRL (PEM) of the fleet CA listing `revoked`, valid `validityDays` (default 7): what a broker that checks CRLs
   * (mosquitto's `crlfile`) needs to refuse a revoked node's certificate while it has not expired.
   */
  createCrl(revoked: readonly { serial: string; revokedAt: Date }[], validityDays?: number): Promise<string>;
}

export interface FleetCaOptions {
  /** node certificate lifetime; default 90 days (nodes renew with `glance-agent renew`, a CSR signed by their key) */
  nodeValidityDays?: number;
}

function pem(label: string, der: ArrayBuffer | Buffer): string {
  const b64 = Buffer.from(der as ArrayBuffer).toString("base64");
  return `-----BEGIN ${label}-----\n${b64.match(/.{1,64}/g)?.join("\n") ?? ""}\n-----END ${label}-----\n`;
}

function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] as number) & 0x7f) | 0x01; // positive and without a leading zero byte
  return bytes.toString("hex");
}

/** The node's raw base64url Ed25519 public key as a WebCrypto key. */
async function ed25519PublicKey(signingPublicKey: string): Promise<CryptoKey> {
  let spki: Buffer;
  try {
    spki = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: signingPublicKey }, format: "jwk" }).export({
      format: "der",
      type: "spki",
    });
  } catch {
    throw new GlanceError("VALIDATION_FAILED", "signingPublicKey is not a base64url Ed25519 public key.");
  }
  return (await webcrypto.subtle.importKey("spki", new Uint8Array(spki), ED25519, true, ["verify"])) as CryptoKey;
}

/** base64url raw Ed25519 key of a certificate or request (SPKI DER), or undefined when its key is of another kind. */
export function rawEd25519Key(spki: ArrayBuffer | Buffer | KeyObject): string | undefined {
  try {
    const key =
      spki instanceof KeyObject
        ? spki
        : createPublicKey({ key: Buffer.from(spki as ArrayBuffer), format: "der", type: "spki" });
    const jwk = key.export({ format: "jwk" });
    return jwk.crv === "Ed25519" ? (jwk.x as string) : undefined;
  } catch {
    return undefined;
  }
}

/** The node's signing key as PKCS#8 PEM: the `key` of its TLS client (its certificate is for this very key). */
export function signingKeyPem(pair: KeyPair): string {
  return createPrivateKey({ key: { kty: "OKP", crv: "Ed25519", x: pair.publicKey, d: pair.privateKey }, format: "jwk" })
    .export({ format: "pem", type: "pkcs8" })
    .toString();
}

/** Who a verified client certificate (DER) names: a node (from its SAN URI, which must agree with its CN) or us. */
export function certificateIdentity(
  der: Buffer,
): { role: "orchestrator" } | { role: "node"; nodeId: string } | undefined {
  const cert = new x509.X509Certificate(der);
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const uris = san?.names.items.filter((n) => n.type === "url").map((n) => n.value) ?? [];
  if (uris.length !== 1) return undefined;
  const uri = uris[0] as string;
  if (uri === ORCHESTRATOR_URI) return { role: "orchestrator" };
  if (!uri.startsWith(NODE_URI_PREFIX)) return undefined;
  const nodeId = uri.slice(NODE_URI_PREFIX.length);
  const cn = cert.subjectName.getField("CN");
  return cn.length === 1 && cn[0] === nodeId ? { role: "node", nodeId } : undefined;
}

/**
 * Loads the fleet CA from `<dataDir>/pki`, creating it at the first start: an ECDSA P-256 key (file mode 0600) and a
 * self-signed root valid for ten years. Every certificate issued is appended to `issued.jsonl` (serial, node,
 * expiry, SHA-256 fingerprint) so that it can be traced and, later, revoked.
 */
export async function loadOrCreateFleetCa(dataDir: string, opts: FleetCaOptions = {}): Promise<FleetCa> {
  const dir = join(dataDir, "pki");
  const keyFile = join(dir, "ca-key.pem");
  const certFile = join(dir, "ca-cert.pem");
  const ledger = join(dir, "issued.jsonl");
  await mkdir(dir, { recursive: true, mode: 0o700 });

  let caKey: CryptoKey;
  let caCert: x509.X509Certificate;
  try {
    const [keyPem, certPem] = await Promise.all([readFile(keyFile, "utf8"), readFile(certFile, "utf8")]);
    const der = createPrivateKey(keyPem).export({ format: "der", type: "pkcs8" });
    caKey = (await webcrypto.subtle.importKey("pkcs8", der, EC, false, ["sign"])) as CryptoKey;
    caCert = new x509.X509Certificate(certPem);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    const keys = (await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as KeyPairOf;
    caCert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serialNumber(),
      name: `CN=Glance fleet CA ${randomBytes(4).toString("hex")}`,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3650 * DAY_MS),
      keys,
      signingAlgorithm: EC,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    await writeFile(keyFile, pem("PRIVATE KEY", await webcrypto.subtle.exportKey("pkcs8", keys.privateKey)), {
      mode: 0o600,
    });
    await chmod(keyFile, 0o600);
    await writeFile(certFile, caCert.toString("pem"), { mode: 0o644 });
    caKey = keys.privateKey;
  }
  const caPem = caCert.toString("pem");
  const authorityKeyId = await x509.AuthorityKeyIdentifierExtension.create(caCert);
  const nodeValidityMs = (opts.nodeValidityDays ?? DEFAULT_NODE_VALIDITY_DAYS) * DAY_MS;

  const issue = async (args: {
    cn: string;
    san: x509.JsonGeneralName[];
    publicKey: CryptoKey;
    validityMs: number;
    usage: "client" | "server";
  }): Promise<IssuedCertificate> => {
    const serial = serialNumber();
    const notAfter = new Date(Date.now() + args.validityMs);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      subject: [{ CN: [args.cn] }],
      issuer: caCert.subject,
      notBefore: new Date(Date.now() - 60_000),
      notAfter,
      publicKey: args.publicKey,
      signingKey: caKey,
      signingAlgorithm: EC,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension(
          [args.usage === "client" ? x509.ExtendedKeyUsage.clientAuth : x509.ExtendedKeyUsage.serverAuth],
          false,
        ),
        new x509.SubjectAlternativeNameExtension(args.san, false),
        authorityKeyId,
      ],
    });
    const fingerprint = Buffer.from(await cert.getThumbprint("SHA-256")).toString("hex");
    await appendFile(
      ledger,
      `${JSON.stringify({ serial, cn: args.cn, usage: args.usage, notAfter: notAfter.toISOString(), fingerprint, issuedAt: new Date().toISOString() })}\n`,
      { mode: 0o600 },
    );
    return { certPem: cert.toString("pem"), serial, notAfter };
  };

  const withFreshKey = async (cn: string, san: x509.JsonGeneralName[], usage: "client" | "server") => {
    const keys = (await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as KeyPairOf;
    const issued = await issue({ cn, san, publicKey: keys.publicKey, validityMs: 365 * DAY_MS, usage });
    const key = pem("PRIVATE KEY", await webcrypto.subtle.exportKey("pkcs8", keys.privateKey));
    return { ca: caPem, cert: issued.certPem, key };
  };

  type LedgerRow = { serial: string; cn: string; usage: "client" | "server"; notAfter: string; issuedAt: string };
  const readLedger = async (): Promise<LedgerRow[]> => {
    let text: string;
    try {
      text = await readFile(ledger, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw e;
    }
    return text
      .split("\n")
      .filter((line) => line)
      .map((line) => JSON.parse(line) as LedgerRow);
  };

  const nodeCertificate = async (nodeId: string, publicKey: CryptoKey) =>
    issue({
      cn: nodeId,
      san: [{ type: "url", value: `${NODE_URI_PREFIX}${nodeId}` }],
      publicKey,
      validityMs: nodeValidityMs,
      usage: "client",
    });

  return {
    caPem,
    crlFile: join(dir, "crl.pem"),
    async issueNodeCertificate(nodeId, signingPublicKey) {
      return nodeCertificate(nodeId, await ed25519PublicKey(signingPublicKey));
    },
    async issueNodeCertificateFromCsr(nodeId, csrPem, signingPublicKey) {
      let csr: x509.Pkcs10CertificateRequest;
      try {
        csr = new x509.Pkcs10CertificateRequest(csrPem);
      } catch {
        throw new GlanceError("VALIDATION_FAILED", "csr is not a PEM PKCS#10 certificate request.");
      }
      if (!(await csr.verify())) throw new GlanceError("VALIDATION_FAILED", "csr signature does not verify.");
      if (rawEd25519Key(csr.publicKey.rawData) !== signingPublicKey) {
        throw new GlanceError(
          "VALIDATION_FAILED",
          "csr must be for the node's Ed25519 signing key (signingPublicKey); create it with that key.",
        );
      }
      return nodeCertificate(nodeId, await ed25519PublicKey(signingPublicKey));
    },
    async issueServerCertificate(hostnames) {
      const names = [...new Set(["127.0.0.1", "localhost", ...hostnames])];
      const san: x509.JsonGeneralName[] = names.map((n) =>
        /^[\d.]+$|:/.test(n) ? { type: "ip", value: n } : { type: "dns", value: n },
      );
      return withFreshKey(hostnames[0] ?? "localhost", san, "server");
    },
    async issueOrchestratorCertificate(commonName) {
      return withFreshKey(commonName, [{ type: "url", value: ORCHESTRATOR_URI }], "client");
    },
    async issuedTo(commonName) {
      return (await readLedger()).filter((row) => row.cn === commonName).map((row) => row.serial);
    },
    async issuedSince(commonName, since) {
      const iso = since.toISOString();
      return (await readLedger()).filter((row) => row.cn === commonName && row.issuedAt >= iso).length;
    },
    async latestClientCertificates() {
      const latest = new Map<string, { serial: string; notAfter: string }>();
      // appended in issue order: the last one of a CN is its newest
      for (const row of await readLedger()) {
        if (row.usage === "client") latest.set(row.cn, { serial: row.serial, notAfter: row.notAfter });
      }
      return latest;
    },
    async createCrl(revoked, validityDays = 7) {
      const now = Date.now();
      const crl = await x509.X509CrlGenerator.create({
        issuer: caCert.subject,
        thisUpdate: new Date(now - 60_000),
        nextUpdate: new Date(now + validityDays * DAY_MS),
        entries: revoked.map((r) => ({
          serialNumber: r.serial,
          revocationDate: r.revokedAt,
          reason: x509.X509CrlReason.cessationOfOperation,
        })),
        extensions: [authorityKeyId],
        signingKey: caKey,
        signingAlgorithm: EC,
      });
      // OpenSSL (mosquitto's crlfile) reads only the "X509 CRL" label, not x509's "CRL"
      return pem("X509 CRL", crl.rawData);
    },
  };
}
