import { z } from "zod";
import { AuditVerifyQuery } from "../audit/http.ts";
import { defaultTokenLifetimeDays, maxTokenLifetimeDays } from "../auth/token-lifetime.ts";
import type { Role } from "../db/schema.ts";
import { NotThisPerson } from "../feedback/http.ts";
import { PromotionEvent } from "../signage/hub.ts";
import { RegisterNode, RenewCertificate } from "./routes/nodes.ts";
import { EnrolForm, WithdrawConsent } from "./routes/people.ts";
import { CreatePromotion } from "./routes/promotions.ts";
import { CreateScreen, ProofOfPlay } from "./routes/screens.ts";
import { CreateStore, StoreSettings, VisitorCountsQuery } from "./routes/stores.ts";
import { CreateToken } from "./routes/tokens.ts";
import { VisitQuery } from "./routes/visits.ts";

interface Operation {
  method: "get" | "post" | "patch" | "delete";
  path: string;
  summary: string;
  /** more than a summary holds: why a rule is what it is */
  description?: string;
  roles: readonly Role[] | "public";
  json?: z.ZodType;
  form?: z.ZodType;
  query?: z.ZodType;
}

/** The same zod schemas that validate each route, listed once more as documentation. */
const operations: Operation[] = [
  {
    method: "get",
    path: "/api/health",
    summary:
      "Liveness and the embedding space (nothing about who or how many are enrolled); 503 when the gallery thread died",
    roles: "public",
  },
  {
    method: "get",
    path: "/api/metrics",
    summary:
      "Ingest accepted/rejected by code, gallery size, open-set rule, gallery graph's search breadth and measured recall@1 (null below the ANN threshold), the gallery thread's busy and idle ms since start",
    roles: ["hq-admin", "auditor", "technician"],
  },
  {
    method: "post",
    path: "/api/tokens",
    summary: "Issue a role token (shown once) with a lifetime; answers its expiresAt",
    description: [
      `Every issued token expires: expiresInDays (whole days, 1-${maxTokenLifetimeDays}) or its role's default,`,
      `${Object.entries(defaultTokenLifetimeDays)
        .map(([role, days]) => `${role} ${days}`)
        .join(", ")} days.`,
      "hq-admin, technician and auditor tokens reach the most people's data or travel on field laptops, and audits",
      "and site visits are bounded: a month. A store manager's reaches one store: a quarter bounds a leaver nobody",
      "revoked. A screen's token sits in an unattended player's URL and renewing it means a visit: a year.",
      "From expiresAt on the token is refused exactly as a revoked one (401 UNAUTHORIZED). Only the bootstrap admin",
      "token (dataDir/admin-token, written at first start) never expires.",
    ].join(" "),
    roles: ["hq-admin"],
    json: CreateToken,
  },
  {
    method: "get",
    path: "/api/tokens",
    summary:
      "List issued tokens: id, role, label, store, screen, created, revoked, expiresAt (never the token or its hash)",
    roles: ["hq-admin", "auditor"],
  },
  {
    method: "post",
    path: "/api/tokens/{tokenId}/revoke",
    summary: "Revoke a token (lost, leaked, staff left): refused from the next request on; not the caller's own",
    roles: ["hq-admin"],
  },
  { method: "post", path: "/api/stores", summary: "Create a store", roles: ["hq-admin"], json: CreateStore },
  {
    method: "patch",
    path: "/api/stores/{id}",
    summary:
      "Store privacy settings: privacy mode (sent to its nodes; leaving visitor shreds visitor templates), visitor retention days, opt-in coarse attributes on footfall (sent to its nodes)",
    roles: ["hq-admin"],
    json: StoreSettings,
  },
  {
    method: "get",
    path: "/api/stores/{id}/visitors",
    summary: "Pseudonymous visitors per UTC day, first-time vs returning (counts only)",
    roles: ["hq-admin", "auditor", "store-manager"],
    query: VisitorCountsQuery,
  },
  {
    method: "get",
    path: "/api/stores/{id}/footfall",
    summary:
      "Anonymous footfall per day (tracks, average dwell, per camera) and, where the store opted in, coarse attribute counts (values seen on fewer than 5 tracks only as `suppressed`)",
    roles: ["hq-admin", "auditor", "store-manager"],
    query: VisitorCountsQuery,
  },
  {
    method: "get",
    path: "/api/stores",
    summary: "List stores",
    roles: ["hq-admin", "auditor", "store-manager", "technician"],
  },
  {
    method: "post",
    path: "/api/screens",
    summary: "Create a signage screen; returns its token once and when it expires (tokenExpiresAt, a year on)",
    roles: ["hq-admin", "store-manager"],
    json: CreateScreen,
  },
  {
    method: "get",
    path: "/api/screens/{screenId}/events",
    summary: `Server-Sent Events: hello, ping, promotion ${JSON.stringify(z.toJSONSchema(PromotionEvent).properties)}`,
    roles: ["signage-screen", "hq-admin"],
  },
  {
    method: "get",
    path: "/api/screens/{screenId}/plays",
    summary: "Proof-of-play history of a screen, newest first",
    roles: ["hq-admin", "store-manager", "auditor"],
  },
  {
    method: "post",
    path: "/api/screens/{screenId}/plays",
    summary: "Proof of play",
    roles: ["signage-screen"],
    json: ProofOfPlay,
  },
  {
    method: "post",
    path: "/api/nodes",
    summary: "Register a node; returns its MQTT credentials once",
    roles: ["technician", "hq-admin"],
    json: RegisterNode,
  },
  {
    method: "post",
    path: "/api/nodes/{nodeId}/certificate",
    summary: "Renew the node's TLS certificate from a CSR signed by its registered key (no token; audited)",
    roles: "public",
    json: RenewCertificate,
  },
  {
    method: "post",
    path: "/api/nodes/{nodeId}/revoke",
    summary: "Revoke a node: drops its broker session, refuses reconnects and renewals, adds it to the fleet CRL",
    roles: ["hq-admin", "technician"],
  },
  {
    method: "get",
    path: "/api/nodes",
    summary: "List nodes",
    roles: ["hq-admin", "technician", "auditor", "store-manager"],
  },
  {
    method: "post",
    path: "/api/people",
    summary: "Enrol a consenting person from photos",
    roles: ["hq-admin", "store-manager"],
    form: EnrolForm,
  },
  {
    method: "get",
    path: "/api/people",
    summary: "List people with consents",
    roles: ["hq-admin", "auditor", "store-manager"],
  },
  {
    method: "delete",
    path: "/api/people/{personId}",
    summary: "Erase a person (crypto-shred: data key and templates destroyed, edge galleries told)",
    roles: ["hq-admin"],
  },
  {
    method: "post",
    path: "/api/people/{personId}/withdraw-consent",
    summary: "Record a consent withdrawal: templates crypto-shredded, consent kept as withdrawn",
    roles: ["hq-admin", "store-manager"],
    json: WithdrawConsent,
  },
  {
    method: "get",
    path: "/api/people/{personId}/export",
    summary: "Data-subject export: everything held about a person (templates as metadata only)",
    roles: ["hq-admin", "auditor"],
  },
  {
    method: "get",
    path: "/api/people/{personId}/erasure",
    summary: "Edge erasure status: erase-member commands sent and acknowledged per node",
    roles: ["hq-admin", "auditor"],
  },
  {
    method: "post",
    path: "/api/visits/{visitId}/not-this-person",
    summary: "Staff feedback: this member visit was someone else; suppresses that person on that node track",
    roles: ["hq-admin", "store-manager"],
    json: NotThisPerson,
  },
  { method: "get", path: "/api/audit", summary: "Audit log, newest first", roles: ["auditor", "hq-admin"] },
  {
    method: "get",
    path: "/api/audit/verify",
    summary:
      "Verify the audit hash chain; 409 names the first broken entry. Keep `rows` and `head` and pass them back as anchorSeq/anchorHash: entries deleted from the end then fail too",
    roles: ["auditor", "hq-admin"],
    query: AuditVerifyQuery,
  },
  {
    method: "post",
    path: "/api/promotions",
    summary: "Create a promotion rule",
    roles: ["hq-admin", "store-manager"],
    json: CreatePromotion,
  },
  {
    method: "get",
    path: "/api/promotions",
    summary: "List promotion rules",
    roles: ["hq-admin", "store-manager", "auditor"],
  },
  {
    method: "get",
    path: "/api/visits",
    summary: "List visits",
    roles: ["hq-admin", "auditor", "store-manager"],
    query: VisitQuery,
  },
  {
    method: "get",
    path: "/signage/{screenId}",
    summary: "Signage player page (token in ?token=)",
    roles: ["signage-screen"],
  },
];

const schema = (s: z.ZodType) => {
  const { $schema: _drop, ...rest } = z.toJSONSchema(s, { io: "input", unrepresentable: "any" }) as Record<
    string,
    unknown
  >;
  return rest;
};

export function openApiDocument(): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const op of operations) {
    const params = [...op.path.matchAll(/\{(\w+)\}/g)].map((m) => ({
      name: m[1],
      in: "path",
      required: true,
      schema: { type: "string" },
    }));
    if (op.query) {
      const q = schema(op.query) as { properties?: Record<string, unknown>; required?: string[] };
      for (const [name, s] of Object.entries(q.properties ?? {})) {
        params.push({
          name,
          in: "query",
          required: q.required?.includes(name) ?? false,
          schema: s as { type: string },
        });
      }
    }
    const body = op.json
      ? { required: true, content: { "application/json": { schema: schema(op.json) } } }
      : op.form
        ? { required: true, content: { "multipart/form-data": { schema: schema(op.form) } } }
        : undefined;
    paths[op.path] ??= {};
    (paths[op.path] as Record<string, unknown>)[op.method] = {
      summary: op.summary,
      ...(op.roles === "public"
        ? { security: [], ...(op.description ? { description: op.description } : {}) }
        : { description: [`Roles: ${op.roles.join(", ")}`, op.description].filter(Boolean).join("\n\n") }),
      ...(params.length > 0 ? { parameters: params } : {}),
      ...(body ? { requestBody: body } : {}),
      responses: { default: { description: "Success, or {code, message, details?} with the error's status" } },
    };
  }
  return {
    openapi: "3.1.0",
    info: { title: "Glance orchestrator", version: "0.1.0" },
    components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
    security: [{ bearer: [] }],
    paths,
  };
}
