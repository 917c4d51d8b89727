import { readdir, stat } from "node:fs/promises";
import { extname, isAbsolute, join, relative, resolve } from "node:path";
import { GlanceError } from "@glance/shared";
import { CsvError, parse } from "csv-parse/sync";
import { z } from "zod";

/**
 * Bulk enrolment, step one: read the CSV and find every photo it names, without touching the orchestrator. Each row
 * either becomes a planned enrolment or is reported with its line number and what to fix, so an operator sees every
 * problem of a file before anything is written.
 */

/** The CSV header, in the order a template file lists it. */
export const IMPORT_COLUMNS = [
  "person_key",
  "display_name",
  "consent_source",
  "consent_purpose",
  "consent_scope",
  "consent_evidence",
  "consent_granted",
  "consent_expires",
  "photos",
] as const;
const REQUIRED_COLUMNS = ["person_key", "display_name", "consent_source"] as const;

/** The only purpose the orchestrator records consent for (enrolment writes it); a form for anything else is not ours. */
export const SUPPORTED_PURPOSE = "recognition-promotions";

const PHOTO_EXTENSIONS = new Set([".jpg", ".jpeg", ".png", ".webp"]);
/** the enrolment endpoint's limit per person */
export const MAX_PHOTOS_PER_PERSON = 10;

const optional = <T extends z.ZodType>(schema: T) =>
  z.preprocess((v) => (typeof v === "string" && v.trim() === "" ? undefined : v), schema.optional());

const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/;

/** One CSV line as written by the operator; empty cells mean "not given". */
export const ImportRow = z.object({
  person_key: z
    .string()
    .trim()
    .min(1, "person_key is empty: give each person a stable key (membership number, CRM id)")
    .max(128),
  display_name: z.string().trim().min(1, "display_name is empty").max(200),
  consent_source: z
    .string()
    .trim()
    .min(1, "consent_source is empty: say how consent was collected (store-counter, app, …)")
    .max(100),
  consent_purpose: optional(
    z.literal(SUPPORTED_PURPOSE, { error: `consent_purpose must be ${SUPPORTED_PURPOSE} (or empty)` }),
  ),
  consent_scope: optional(
    z
      .string()
      .trim()
      .regex(/^[A-Za-z0-9_-]{1,64}$/, "consent_scope must be all-stores or a store id"),
  ),
  consent_evidence: optional(z.string().trim().max(500)),
  /** when the person signed: a date (taken as 00:00 UTC) or an ISO date-time with offset; empty = at import */
  consent_granted: optional(
    z
      .string()
      .trim()
      .refine((v) => DATE_ONLY.test(v) || z.iso.datetime({ offset: true }).safeParse(v).success, {
        error: "consent_granted must be a date (2026-03-31) or an ISO date-time with offset",
      })
      .transform((v) => new Date(DATE_ONLY.test(v) ? `${v}T00:00:00Z` : v))
      .refine((d) => !Number.isNaN(d.getTime()), { error: "consent_granted is not a real date" }),
  ),
  /** a date (consent holds through the end of that day, UTC) or an ISO date-time with offset */
  consent_expires: optional(
    z
      .string()
      .trim()
      .refine((v) => DATE_ONLY.test(v) || z.iso.datetime({ offset: true }).safeParse(v).success, {
        error: "consent_expires must be a date (2027-12-31) or an ISO date-time with offset",
      })
      .transform((v) => (DATE_ONLY.test(v) ? new Date(`${v}T23:59:59.999Z`) : new Date(v)))
      .refine((d) => !Number.isNaN(d.getTime()), { error: "consent_expires is not a real date" }),
  ),
  /** `;`-separated photo files or folders under the photos folder; empty: the folder named like person_key */
  photos: optional(z.string().trim().max(4000)),
});
export type ImportRow = z.infer<typeof ImportRow>;

export interface PlannedPerson {
  line: number;
  personKey: string;
  displayName: string;
  consent: {
    source: string;
    purpose: string;
    scope: string | undefined;
    evidenceRef: string | undefined;
    expiresAt: Date | undefined;
    grantedAt: Date | undefined;
  };
  /** absolute paths, in the order given (folders sorted by name) */
  photos: string[];
}

export interface InvalidRow {
  line: number;
  personKey?: string;
  problems: string[];
}

export interface ImportPlan {
  people: PlannedPerson[];
  invalid: InvalidRow[];
}

/**
 * Parses and checks the whole CSV: header, every row against `ImportRow`, duplicate keys, expiry in the past, and
 * that each named photo exists under `photosDir` (and stays inside it). Throws CONFIG_INVALID only when the file
 * as a whole cannot be read as this CSV (unbalanced quotes, unknown or missing columns).
 */
export async function planImport(csv: string, photosDir: string, now = new Date()): Promise<ImportPlan> {
  let records: { record: string[]; info: { lines: number } }[];
  try {
    records = parse(csv, {
      bom: true,
      info: true,
      skip_empty_lines: true,
      relax_column_count: true,
      trim: true,
    }) as unknown as typeof records;
  } catch (error) {
    const line = error instanceof CsvError ? ` (line ${(error as CsvError & { lines?: number }).lines})` : "";
    throw new GlanceError("CONFIG_INVALID", `The CSV cannot be read${line}: ${(error as Error).message}`);
  }
  const [head, ...rows] = records;
  if (!head)
    throw new GlanceError(
      "CONFIG_INVALID",
      `The CSV is empty; its first line must name the columns: ${IMPORT_COLUMNS.join(",")}.`,
    );
  const header = head.record.map((h) => h.toLowerCase());
  const unknown = header.filter((h) => !(IMPORT_COLUMNS as readonly string[]).includes(h));
  const missing = REQUIRED_COLUMNS.filter((c) => !header.includes(c));
  if (unknown.length > 0 || missing.length > 0) {
    throw new GlanceError(
      "CONFIG_INVALID",
      `${[
        unknown.length > 0 ? `unknown column(s) ${unknown.join(", ")}` : "",
        missing.length > 0 ? `missing column(s) ${missing.join(", ")}` : "",
      ]
        .filter(Boolean)
        .join("; ")} on line ${head.info.lines}. Columns: ${IMPORT_COLUMNS.join(",")}.`,
    );
  }

  const root = resolve(photosDir);
  const plan: ImportPlan = { people: [], invalid: [] };
  const keyLines = new Map<string, number>();
  for (const { record, info } of rows) {
    const line = info.lines;
    const problems: string[] = [];
    if (record.length !== header.length) {
      problems.push(`expected ${header.length} fields, found ${record.length} (a comma inside a value needs quotes)`);
    }
    const raw = Object.fromEntries(header.map((h, i) => [h, record[i] ?? ""]));
    const parsed = ImportRow.safeParse(raw);
    if (!parsed.success) problems.push(...parsed.error.issues.map((i) => i.message));
    // the checks below look at single cells, so a row with a bad name still hears about its photos
    const personKey = raw.person_key?.trim() || undefined;
    if (personKey) {
      const first = keyLines.get(personKey);
      if (first !== undefined) problems.push(`person_key ${personKey} is already used on line ${first}`);
      else keyLines.set(personKey, line);
    }
    const expires = ImportRow.shape.consent_expires.safeParse(raw.consent_expires);
    if (expires.success && expires.data && expires.data <= now) {
      problems.push(`consent_expires ${expires.data.toISOString()} is in the past: nobody to enrol`);
    }
    const granted = ImportRow.shape.consent_granted.safeParse(raw.consent_granted);
    if (granted.success && granted.data && granted.data > now) {
      problems.push(`consent_granted ${granted.data.toISOString()} is in the future`);
    }
    if (granted.success && granted.data && expires.success && expires.data && granted.data >= expires.data) {
      problems.push("consent_granted is not before consent_expires");
    }
    const photoCell = raw.photos?.trim();
    const photos =
      photoCell || personKey
        ? await resolvePhotos(root, photoCell ? photoCell.split(";") : [personKey ?? ""], problems)
        : [];
    if (parsed.success && problems.length === 0) {
      const row = parsed.data;
      plan.people.push({
        line,
        personKey: row.person_key,
        displayName: row.display_name,
        consent: {
          source: row.consent_source,
          purpose: row.consent_purpose ?? SUPPORTED_PURPOSE,
          scope: row.consent_scope,
          evidenceRef: row.consent_evidence,
          expiresAt: row.consent_expires,
          grantedAt: row.consent_granted,
        },
        photos,
      });
      continue;
    }
    plan.invalid.push({ line, ...(personKey ? { personKey } : {}), problems });
  }
  return plan;
}

async function resolvePhotos(root: string, entries: string[], rowProblems: string[]): Promise<string[]> {
  const photos: string[] = [];
  const problems: string[] = [];
  for (const entry of entries.map((e) => e.trim()).filter(Boolean)) {
    const path = resolve(root, entry);
    const rel = relative(root, path);
    if (rel.startsWith("..") || isAbsolute(rel)) {
      problems.push(`photo ${entry} is outside the photos folder`);
      continue;
    }
    const info = await stat(path).catch(() => undefined);
    if (!info) {
      problems.push(`photo ${entry} not found in ${root}`);
    } else if (info.isDirectory()) {
      const files = (await readdir(path))
        .filter((f) => PHOTO_EXTENSIONS.has(extname(f).toLowerCase()))
        .sort()
        .map((f) => join(path, f));
      if (files.length === 0) problems.push(`folder ${entry} holds no .jpg, .jpeg, .png or .webp photo`);
      photos.push(...files);
    } else if (!PHOTO_EXTENSIONS.has(extname(path).toLowerCase())) {
      problems.push(`photo ${entry} is not a .jpg, .jpeg, .png or .webp file`);
    } else {
      photos.push(path);
    }
  }
  if (photos.length === 0 && problems.length === 0) problems.push("no photo given");
  if (photos.length > MAX_PHOTOS_PER_PERSON) {
    problems.push(`${photos.length} photos; at most ${MAX_PHOTOS_PER_PERSON} per person`);
  }
  rowProblems.push(...problems);
  return photos;
}
