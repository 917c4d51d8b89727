import { createHash } from "node:crypto";
import { decodeImage, type FacePipeline } from "@glance/models";
import { type ErrorCode, GlanceError, isGlanceError } from "@glance/shared";
import { eq } from "drizzle-orm";
import type { Db } from "../db/client.ts";
import { consents, erasedKeys, people } from "../db/schema.ts";
import type { GalleryPort } from "../gallery/gallery.ts";
import { newId } from "../http/ids.ts";
import type { MasterKey } from "../privacy/keyring.ts";
import { storeSealedTemplates } from "../privacy/templates.ts";

export interface Photo {
  name: string;
  bytes: Uint8Array;
}

export interface EnrolRequest {
  displayName: string;
  /** the caller's own key for the person (bulk import); a second enrolment with the same key is refused */
  externalKey?: string | null;
  consent: {
    source: string;
    evidenceRef: string | null;
    purpose: string;
    scope: string;
    expiresAt: Date | null;
    /** when the person gave it (a signed form imported later); default now */
    grantedAt?: Date | null;
  };
  photos: Photo[];
}

/** Per-photo answer, so the person at the counter knows which photo to retake and why. */
export interface PhotoFeedback {
  photo: string;
  accepted: boolean;
  code?: ErrorCode;
  message: string;
  quality?: { score: number; sizePx: number; reasons: string[] };
}

export interface Enrolment {
  personId: string;
  templates: { id: string; space: string; quality: number; sourceSha256: string }[];
  feedback: PhotoFeedback[];
}

/**
 * Consent first, then one template per photo that shows exactly one face. The photo itself is dropped as soon as
 * it is embedded; only its sha256 is kept, as evidence of which photo a template came from. Templates are stored
 * sealed with a fresh data key of the person (privacy/templates.ts), never in the clear.
 */
export async function enrolPerson(
  deps: { db: Db; faces: FacePipeline; gallery: GalleryPort; masterKey: MasterKey },
  req: EnrolRequest,
): Promise<Enrolment> {
  const erasedTag = req.externalKey ? deps.masterKey.keyTag(req.externalKey) : null;
  if (req.externalKey && erasedTag) {
    await assertKeyFree(deps.db, req.externalKey);
    await assertNotErased(deps.db, req.externalKey, erasedTag, req.consent.grantedAt ?? null);
  }
  const feedback: PhotoFeedback[] = [];
  const accepted: { embedding: Float32Array; quality: number; sourceSha256: string }[] = [];

  for (const photo of req.photos) {
    const sourceSha256 = createHash("sha256").update(photo.bytes).digest("hex");
    let faces: Awaited<ReturnType<FacePipeline["process"]>>;
    try {
      faces = await deps.faces.process(await decodeImage(Buffer.from(photo.bytes)));
    } catch (error) {
      const code: ErrorCode = isGlanceError(error) ? error.code : "IMAGE_UNREADABLE";
      feedback.push({
        photo: photo.name,
        accepted: false,
        code,
        message: "The photo could not be read; send a JPEG or PNG.",
      });
      continue;
    }
    if (faces.length === 0) {
      feedback.push({
        photo: photo.name,
        accepted: false,
        code: "NO_FACE_FOUND",
        message: "No face found; retake facing the camera, well lit.",
      });
      continue;
    }
    if (faces.length > 1) {
      feedback.push({
        photo: photo.name,
        accepted: false,
        code: "MULTIPLE_FACES",
        message: `${faces.length} faces found; retake with only the person being enrolled in frame.`,
      });
      continue;
    }
    const face = faces[0] as (typeof faces)[number];
    const quality = { score: face.quality.score, sizePx: face.quality.sizePx, reasons: [...face.quality.reasons] };
    accepted.push({ embedding: face.embedding, quality: quality.score, sourceSha256 });
    feedback.push({
      photo: photo.name,
      accepted: true,
      message:
        quality.reasons.length > 0 ? `Accepted, but consider retaking: ${quality.reasons.join(", ")}.` : "Accepted.",
      quality,
    });
  }

  if (accepted.length === 0) {
    const first = feedback.find((f) => f.code)?.code ?? "NO_FACE_FOUND";
    throw new GlanceError(first, "No photo could be enrolled; see details.feedback for each photo.", { feedback });
  }

  const personId = newId();
  const space = deps.faces.space;
  const rows = accepted.map((a) => ({
    id: newId(),
    space,
    embedding: a.embedding,
    quality: a.quality,
    sourceSha256: a.sourceSha256,
  }));
  const stored = await deps.db.transaction(async (tx) => {
    // the unique index settles two imports of one key racing past assertKeyFree
    const inserted = await tx
      .insert(people)
      .values({ id: personId, displayName: req.displayName, externalKey: req.externalKey ?? null })
      .onConflictDoNothing({ target: people.externalKey })
      .returning({ id: people.id });
    if (inserted.length === 0) await assertKeyFree(tx, req.externalKey ?? "");
    // a consent newer than the erasure: the person came back, the tombstone has done its job
    if (erasedTag) await tx.delete(erasedKeys).where(eq(erasedKeys.keyTag, erasedTag));
    await tx.insert(consents).values({
      id: newId(),
      personId,
      purpose: req.consent.purpose,
      scope: req.consent.scope,
      source: req.consent.source,
      evidenceRef: req.consent.evidenceRef,
      grantedAt: req.consent.grantedAt ?? new Date(),
      expiresAt: req.consent.expiresAt,
    });
    return storeSealedTemplates(tx, deps.masterKey, personId, rows);
  });
  // index what a restart would load: the stored, quantised form
  await deps.gallery.add(
    {
      personId,
      displayName: req.displayName,
      consents: [{ scope: req.consent.scope, expiresAt: req.consent.expiresAt }],
    },
    stored,
  );

  return {
    personId,
    templates: rows.map((r) => ({ id: r.id, space: r.space, quality: r.quality, sourceSha256: r.sourceSha256 })),
    feedback,
  };
}

/** Checked before any photo is processed, so a re-run of an import costs one query per person already enrolled. */
async function assertKeyFree(db: Pick<Db, "select">, externalKey: string): Promise<void> {
  const [row] = await db.select({ id: people.id }).from(people).where(eq(people.externalKey, externalKey)).limit(1);
  if (row) {
    throw new GlanceError("CONFLICT", `Person key ${externalKey} is already enrolled; nothing was changed.`, {
      personId: row.id,
    });
  }
}

/**
 * A person who was erased asked to be forgotten: their key (an old CSV, a CRM sync) enrols again only with a consent
 * they gave after the erasure, stated explicitly (consentGrantedAt), never with the default "now".
 */
async function assertNotErased(
  db: Pick<Db, "select">,
  externalKey: string,
  keyTag: string,
  grantedAt: Date | null,
): Promise<void> {
  const [erased] = await db.select().from(erasedKeys).where(eq(erasedKeys.keyTag, keyTag)).limit(1);
  if (erased && (!grantedAt || grantedAt <= erased.erasedAt)) {
    throw new GlanceError(
      "CONFLICT",
      `Person key ${externalKey} was erased at the person's request on ${erased.erasedAt.toISOString()}; enrol them again only with a consent given after that (consentGrantedAt).`,
      { erasedAt: erased.erasedAt.toISOString() },
    );
  }
}
