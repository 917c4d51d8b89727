import type { FacePipeline } from "@glance/models";
import type { Command, DesiredState } from "@glance/shared";
import type { Logger } from "pino";
import type { Db } from "./db/client.ts";
import type { Suppressions } from "./feedback/suppressions.ts";
import type { GalleryPort } from "./gallery/gallery.ts";
import type { IngestMetrics } from "./ingest/ingest.ts";
import type { FleetCa } from "./pki/fleet-ca.ts";
import type { MasterKey } from "./privacy/keyring.ts";
import type { PersonKeyCache } from "./recognition/key-cache.ts";
import type { ScreenHub } from "./signage/hub.ts";
import type { Visitors } from "./visitors/visitors.ts";

/** What the HTTP routers need from the running orchestrator; built once in index.ts. */
export interface Services {
  db: Db;
  hub: ScreenHub;
  gallery: GalleryPort;
  /** which people still hold a data key, as recognition caches it (an erasure drops the person from it) */
  personKeys: PersonKeyCache;
  faces: FacePipeline;
  sealingKey: { kid: string; publicKey: string };
  mqttUrl: string;
  /** issues node certificates at registration */
  fleetCa: FleetCa;
  /** publishes (retained) and returns the desired state of a registered node */
  publishDesired(nodeId: string): Promise<DesiredState>;
  metrics(): IngestMetrics;
  /** wraps every person's data key (templates are encrypted at rest) */
  masterKey: MasterKey;
  /** "not this person" pairings the recognizer skips */
  suppressions: Suppressions;
  /** store privacy policies and pseudonymous visitor templates the recognizer uses */
  visitors: Visitors;
  /** publishes a contract `command` to one node (erase-member on erasure) */
  sendCommand(nodeId: string, command: Command): Promise<void>;
  /** after a node's revocation: drops its live broker session and rewrites the fleet CRL (node certificates) */
  nodeRevoked?(nodeId: string): Promise<void>;
  logger: Logger;
  /** SSE keep-alive interval */
  pingIntervalMs: number;
}
