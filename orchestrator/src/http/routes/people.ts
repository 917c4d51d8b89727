import { GlanceError } from "@glance/shared";
import { count, eq, inArray } from "drizzle-orm";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { z } from "zod";
import { actorOf } from "../../audit/http.ts";
import { appendAudit } from "../../audit/log.ts";
import { consents, edgeErasures, people, templates } from "../../db/schema.ts";
import { enrolPerson } from "../../enrolment/enrol.ts";
import { erasePerson } from "../../privacy/erase.ts";
import { exportPerson } from "../../privacy/export.ts";
import type { Services } from "../../services.ts";
import { type Env, requireRole } from "../auth.ts";
import { valid } from "../validate.ts";

const Photo = z.instanceof(File);

export const EnrolForm = z
  .object({
    displayName: z.string().trim().min(1).max(200),
    /** your own key for the person (membership number, CRM id): enrolling the same key again answers 409 CONFLICT */
    personKey: z.string().trim().min(1).max(128).optional(),
    /** how consent was collected ("demo", "store-counter", "app"); without it nobody is enrolled */
    consentSource: z.string().trim().max(100).optional(),
    consentEvidence: z.string().trim().max(500).optional(),
    /** "all-stores" (default) or one store id */
    consentScope: z.string().trim().min(1).max(64).optional(),
    /** when recognition stops; must be in the future: nobody is enrolled on a consent that has already run out */
    consentExpiresAt: z.iso
      .datetime({ offset: true })
      .refine(
        (v) => new Date(v).getTime() > Date.now(),
        "consentExpiresAt is in the past: this consent no longer holds",
      )
      .optional(),
    /** when consent was given, if not now (a signed form entered later, a bulk import); never in the future */
    consentGrantedAt: z.iso
      .datetime({ offset: true })
      .refine((v) => new Date(v).getTime() <= Date.now() + 60_000, "consentGrantedAt is in the future")
      .optional(),
    photos: z.union([Photo, z.array(Photo).min(1).max(10)]).transform((v) => (Array.isArray(v) ? v : [v])),
  })
  .refine(
    (f) => !f.consentGrantedAt || !f.consentExpiresAt || new Date(f.consentGrantedAt) < new Date(f.consentExpiresAt),
    { message: "consentExpiresAt is not after consentGrantedAt", path: ["consentExpiresAt"] },
  );
export type EnrolForm = z.infer<typeof EnrolForm>;

const MAX_UPLOAD_BYTES = 40 * 1024 * 1024;

const PersonParam = z.object({ personId: z.string().min(1).max(64) });
export const WithdrawConsent = z.object({ reason: z.string().trim().max(500).optional() });

export function peopleRouter(s: Services) {
  return new Hono<Env>()
    .post(
      "/",
      requireRole(s.db, ["hq-admin", "store-manager"]),
      bodyLimit({
        maxSize: MAX_UPLOAD_BYTES,
        onError: () => {
          throw new GlanceError(
            "PAYLOAD_TOO_LARGE",
            `Upload exceeds ${MAX_UPLOAD_BYTES / 1024 / 1024} MB; send fewer or smaller photos.`,
          );
        },
      }),
      valid("form", EnrolForm),
      async (c) => {
        const form = c.req.valid("form");
        const p = c.get("principal");
        if (!form.consentSource) {
          throw new GlanceError(
            "CONSENT_REQUIRED",
            "Record how consent was given (consentSource) before enrolling anyone.",
          );
        }
        // a store manager collects consent for their own store only
        const scope = p.role === "store-manager" ? (p.storeId ?? "") : (form.consentScope ?? "all-stores");
        const photos = await Promise.all(
          form.photos.map(async (f) => ({ name: f.name, bytes: new Uint8Array(await f.arrayBuffer()) })),
        );
        const result = await enrolPerson(s, {
          displayName: form.displayName,
          externalKey: form.personKey ?? null,
          consent: {
            source: form.consentSource,
            evidenceRef: form.consentEvidence ?? null,
            purpose: "recognition-promotions",
            scope,
            expiresAt: form.consentExpiresAt ? new Date(form.consentExpiresAt) : null,
            grantedAt: form.consentGrantedAt ? new Date(form.consentGrantedAt) : null,
          },
          photos,
        });
        await appendAudit(s.db, {
          actor: actorOf(p),
          action: "person.enrol",
          subject: `person:${result.personId}`,
          details: {
            templates: result.templates.length,
            space: s.faces.space,
            consent: { source: form.consentSource, scope, evidenceRef: form.consentEvidence ?? null },
          },
        });
        s.logger.info({ personId: result.personId, templates: result.templates.length }, "person enrolled");
        return c.json(result, 201);
      },
    )
    .get("/", requireRole(s.db, ["hq-admin", "auditor", "store-manager"]), async (c) => {
      const p = c.get("principal");
      // a store manager sees the people who consented at their store (whom they enrol and may record a withdrawal
      // for), not the chain's whole membership
      const atStore =
        p.role === "store-manager"
          ? inArray(
              people.id,
              s.db
                .select({ id: consents.personId })
                .from(consents)
                .where(eq(consents.scope, p.storeId ?? "")),
            )
          : undefined;
      const rows = await s.db
        .select({
          id: people.id,
          displayName: people.displayName,
          personKey: people.externalKey,
          createdAt: people.createdAt,
          templates: count(templates.id),
        })
        .from(people)
        .leftJoin(templates, eq(templates.personId, people.id))
        .where(atStore)
        .groupBy(people.id)
        .orderBy(people.displayName);
      const consentRows = await s.db
        .select()
        .from(consents)
        .where(
          atStore
            ? inArray(
                consents.personId,
                rows.map((r) => r.id),
              )
            : undefined,
        );
      // template metadata of everyone is a biometric read, even without embeddings
      await appendAudit(s.db, {
        actor: actorOf(p),
        action: "people.read",
        details: { people: rows.length },
      });
      return c.json(
        rows.map((r) => ({
          ...r,
          consents: consentRows
            .filter((k) => k.personId === r.id)
            .map(({ purpose, scope, source, evidenceRef, grantedAt, expiresAt, withdrawnAt }) => ({
              purpose,
              scope,
              source,
              evidenceRef,
              grantedAt,
              expiresAt,
              withdrawnAt,
            })),
        })),
      );
    })
    .get("/:personId/export", requireRole(s.db, ["hq-admin", "auditor"]), valid("param", PersonParam), async (c) => {
      const { personId } = c.req.valid("param");
      const body = await exportPerson(s.db, personId);
      await appendAudit(s.db, {
        actor: actorOf(c.get("principal")),
        action: "person.export",
        subject: `person:${personId}`,
        details: { templates: body.templates.length, visits: body.visits.length },
      });
      c.header("Content-Disposition", `attachment; filename="glance-person-${personId}.json"`);
      return c.json(body);
    })
    .get("/:personId/erasure", requireRole(s.db, ["hq-admin", "auditor"]), valid("param", PersonParam), async (c) => {
      const { personId } = c.req.valid("param");
      const rows = await s.db
        .select({
          commandId: edgeErasures.id,
          nodeId: edgeErasures.nodeId,
          sentAt: edgeErasures.sentAt,
          ackedAt: edgeErasures.ackedAt,
          ok: edgeErasures.ok,
          error: edgeErasures.error,
        })
        .from(edgeErasures)
        .where(eq(edgeErasures.personId, personId));
      return c.json({ personId, nodes: rows, pending: rows.filter((r) => !r.ackedAt).map((r) => r.nodeId) });
    })
    .post(
      "/:personId/withdraw-consent",
      requireRole(s.db, ["hq-admin", "store-manager"]),
      valid("param", PersonParam),
      valid("json", WithdrawConsent),
      async (c) => {
        const { personId } = c.req.valid("param");
        const p = c.get("principal");
        if (p.role === "store-manager") {
          // a store manager may record a withdrawal for someone enrolled at their store
          const scopes = await s.db
            .select({ scope: consents.scope })
            .from(consents)
            .where(eq(consents.personId, personId));
          if (!scopes.some((k) => k.scope === p.storeId)) {
            throw new GlanceError("FORBIDDEN", "This person did not consent at your store; ask HQ to record it.");
          }
        }
        const erasure = await erasePerson(s, personId, {
          mode: "withdraw",
          actor: actorOf(p),
          reason: c.req.valid("json").reason,
        });
        return c.json(erasure);
      },
    )
    .delete("/:personId", requireRole(s.db, ["hq-admin"]), valid("param", PersonParam), async (c) => {
      const { personId } = c.req.valid("param");
      // crypto-shred: key and templates destroyed, person and consents deleted (cascade); visits and plays remain
      // without the person
      await erasePerson(s, personId, { mode: "erase", actor: actorOf(c.get("principal")) });
      return c.body(null, 204);
    });
}
