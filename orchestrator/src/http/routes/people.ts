import { GlanceError } from "@glance/shared";
import { count, eq } from "drizzle-orm";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { z } from "zod";
import { consents, people, templates } from "../../db/schema.ts";
import { enrolPerson } from "../../enrolment/enrol.ts";
import type { Services } from "../../services.ts";
import { type Env, requireRole } from "../auth.ts";
import { valid } from "../validate.ts";

const Photo = z.instanceof(File);

export const EnrolForm = z.object({
  displayName: z.string().trim().min(1).max(200),
  /** how consent was collected ("demo", "store-counter", "app"); without it nobody is enrolled */
  consentSource: z.string().trim().max(100).optional(),
  consentEvidence: z.string().trim().max(500).optional(),
  /** "all-stores" (default) or one store id */
  consentScope: z.string().trim().min(1).max(64).optional(),
  consentExpiresAt: z.iso.datetime({ offset: true }).optional(),
  photos: z.union([Photo, z.array(Photo).min(1).max(10)]).transform((v) => (Array.isArray(v) ? v : [v])),
});
export type EnrolForm = z.infer<typeof EnrolForm>;

const MAX_UPLOAD_BYTES = 40 * 1024 * 1024;

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
          consent: {
            source: form.consentSource,
            evidenceRef: form.consentEvidence ?? null,
            purpose: "recognition-promotions",
            scope,
            expiresAt: form.consentExpiresAt ? new Date(form.consentExpiresAt) : null,
          },
          photos,
        });
        s.logger.info({ personId: result.personId, templates: result.templates.length }, "person enrolled");
        return c.json(result, 201);
      },
    )
    .get("/", requireRole(s.db, ["hq-admin", "auditor", "store-manager"]), async (c) => {
      const rows = await s.db
        .select({
          id: people.id,
          displayName: people.displayName,
          createdAt: people.createdAt,
          templates: count(templates.id),
        })
        .from(people)
        .leftJoin(templates, eq(templates.personId, people.id))
        .groupBy(people.id)
        .orderBy(people.displayName);
      const consentRows = await s.db.select().from(consents);
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
    .delete(
      "/:personId",
      requireRole(s.db, ["hq-admin"]),
      valid("param", z.object({ personId: z.string().min(1).max(64) })),
      async (c) => {
        const { personId } = c.req.valid("param");
        // templates and consents go with the person (cascade); visits and plays keep only their counts (set null)
        const deleted = await s.db.delete(people).where(eq(people.id, personId)).returning({ id: people.id });
        if (deleted.length === 0) throw new GlanceError("NOT_FOUND", `Person ${personId} does not exist.`);
        s.gallery.remove(personId);
        s.logger.info({ personId }, "person erased");
        return c.body(null, 204);
      },
    );
}
