import { rename, writeFile } from "node:fs/promises";
import { isNotNull } from "drizzle-orm";
import type { Logger } from "pino";
import type { Db } from "../db/client.ts";
import { nodes } from "../db/schema.ts";
import type { FleetCa } from "./fleet-ca.ts";

/** The CRL lives this long; it is re-signed daily and at every revocation, so it never lapses while we run. */
const CRL_VALIDITY_DAYS = 30;
const CRL_REFRESH_MS = 86_400_000;

/**
 * Writes the fleet CRL (`FleetCa.crlFile`): every certificate ever issued to a revoked node. Atomic (temporary file,
 * then rename) because a broker may read it at any moment. Returns how many serials it lists.
 */
export async function writeFleetCrl(db: Db, ca: FleetCa): Promise<number> {
  const revoked = await db
    .select({ id: nodes.id, revokedAt: nodes.revokedAt })
    .from(nodes)
    .where(isNotNull(nodes.revokedAt));
  const entries: { serial: string; revokedAt: Date }[] = [];
  for (const node of revoked) {
    for (const serial of await ca.issuedTo(node.id)) {
      entries.push({ serial, revokedAt: node.revokedAt ?? new Date() });
    }
  }
  const pem = await ca.createCrl(entries, CRL_VALIDITY_DAYS);
  const tmp = `${ca.crlFile}.${process.pid}.tmp`;
  await writeFile(tmp, pem, { mode: 0o644 });
  await rename(tmp, ca.crlFile);
  return entries.length;
}

/**
 * Keeps the CRL current: written now, re-signed daily (an expired CRL makes OpenSSL-based brokers refuse every
 * client), and on demand after a revocation. mosquitto reads `crlfile` only when its TLS context is (re)built, so
 * `onWritten` (mosquitto/revocation.ts: SIGHUP or a reload command) follows every write: the daily one too, or the
 * copy mosquitto holds would lapse after 30 days. `refresh` throws if the write or `onWritten` fails; the daily and
 * start-time writes log instead.
 */
export async function startCrlPublisher(opts: {
  db: Db;
  ca: FleetCa;
  logger: Logger;
  refreshMs?: number;
  onWritten?: () => Promise<void>;
}): Promise<{ refresh(): Promise<number>; stop(): void }> {
  const write = async () => {
    const serials = await writeFleetCrl(opts.db, opts.ca);
    opts.logger.info({ file: opts.ca.crlFile, serials }, "fleet CRL written");
    return serials;
  };
  const refresh = async () => {
    const serials = await write();
    await opts.onWritten?.();
    return serials;
  };
  await write();
  // a broker that cannot be told now reads the file at its next start or reload
  await opts.onWritten?.().catch((err: unknown) => opts.logger.error({ err }, "broker not told to reload the CRL"));
  const timer = setInterval(() => {
    refresh().catch((err: unknown) => opts.logger.error({ err }, "fleet CRL not re-signed or not reloaded"));
  }, opts.refreshMs ?? CRL_REFRESH_MS);
  timer.unref();
  return { refresh, stop: () => clearInterval(timer) };
}
