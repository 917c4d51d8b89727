import { readFile } from "node:fs/promises";
import { basename, relative } from "node:path";
import { GlanceError } from "@glance/shared";
import type { ImportPlan, InvalidRow, PlannedPerson } from "./import-plan.ts";

/**
 * Bulk enrolment, step two: enrol the planned people through the public HTTP API (`POST /api/people`), so the
 * token's role, the store scope and the audit log apply exactly as for an enrolment at the counter. People whose
 * key is already enrolled are skipped before any photo is sent; the server refuses a duplicate key anyway
 * (409), so two imports racing each other still enrol nobody twice.
 */

export interface ImportApi {
  /** orchestrator base URL, e.g. http://127.0.0.1:8080 */
  url: string;
  token: string;
}

export interface PhotoOutcome {
  /** path relative to the photos folder */
  photo: string;
  accepted: boolean;
  code?: string;
  message: string;
  quality?: { score: number; sizePx: number; reasons: string[] };
}

export interface PersonOutcome {
  line: number;
  personKey: string;
  displayName: string;
  status: "enrolled" | "skipped" | "failed";
  personId?: string;
  templates?: number;
  code?: string;
  /** why it was skipped or failed, in words */
  reason?: string;
  photos: PhotoOutcome[];
}

export interface ImportCounts {
  rows: number;
  invalid: number;
  enrolled: number;
  skipped: number;
  failed: number;
  photosAccepted: number;
  photosRejected: number;
  /** accepted, but the quality check suggests a retake (small-face, blurry, turned-away, …) */
  photosWithWarnings: number;
  /** valid rows left untouched because the import was stopped; a re-run picks them up */
  notAttempted: number;
}

export interface ImportResult {
  counts: ImportCounts;
  invalid: InvalidRow[];
  people: PersonOutcome[];
}

export interface ImportProgress {
  done: number;
  total: number;
  outcome: PersonOutcome;
}

interface ApiError {
  code?: string;
  message?: string;
  details?: { feedback?: Feedback[]; personId?: string };
}
interface Feedback {
  photo: string;
  accepted: boolean;
  code?: string;
  message: string;
  quality?: PhotoOutcome["quality"];
}
interface ListedPerson {
  id: string;
  personKey: string | null;
  templates: number;
  consents: { withdrawnAt: string | null }[];
}

export async function runImport(
  plan: ImportPlan,
  opts: {
    api: ImportApi;
    photosDir: string;
    /** enrolments in flight at once; the server embeds each photo on its own CPU, so more than its cores is waste */
    concurrency?: number;
    onProgress?: (p: ImportProgress) => void;
    /** per request; a person with ten large photos on a busy server takes seconds */
    timeoutMs?: number;
    /** stop starting enrolments (Ctrl-C); those in flight finish and are reported */
    signal?: AbortSignal;
  },
): Promise<ImportResult> {
  const existing = await listByKey(opts.api);
  const total = plan.people.length;
  const outcomes: PersonOutcome[] = new Array(total);
  let next = 0;
  let done = 0;
  const worker = async () => {
    for (let i = next++; i < total && !opts.signal?.aborted; i = next++) {
      const person = plan.people[i] as PlannedPerson;
      const known = existing.get(person.personKey);
      const outcome = known ? skipped(person, known) : await enrolOne(person, opts);
      outcomes[i] = outcome;
      opts.onProgress?.({ done: ++done, total, outcome });
    }
  };
  const workers = Math.max(1, Math.min(opts.concurrency ?? 2, total));
  await Promise.all(Array.from({ length: workers }, worker));
  // stopped early: the rows never started leave holes
  const people = outcomes.filter(Boolean);
  return { counts: countOf(plan, people), invalid: plan.invalid, people };
}

function countOf(plan: ImportPlan, people: PersonOutcome[]): ImportCounts {
  const photos = people.flatMap((p) => p.photos);
  return {
    rows: plan.people.length + plan.invalid.length,
    invalid: plan.invalid.length,
    enrolled: people.filter((p) => p.status === "enrolled").length,
    skipped: people.filter((p) => p.status === "skipped").length,
    failed: people.filter((p) => p.status === "failed").length,
    photosAccepted: photos.filter((p) => p.accepted).length,
    photosRejected: photos.filter((p) => !p.accepted).length,
    photosWithWarnings: photos.filter((p) => p.accepted && (p.quality?.reasons.length ?? 0) > 0).length,
    notAttempted: plan.people.length - people.length,
  };
}

/** Who is enrolled under a key already; also proves the token works before any photo is sent. */
async function listByKey(api: ImportApi): Promise<Map<string, ListedPerson>> {
  const res = await fetch(new URL("/api/people", api.url), {
    headers: { authorization: `Bearer ${api.token}` },
    signal: AbortSignal.timeout(60_000),
  }).catch((error: unknown) => {
    throw new GlanceError("CONFIG_INVALID", `Cannot reach the orchestrator at ${api.url}: ${(error as Error).message}`);
  });
  const body = (await res.json().catch(() => ({}))) as ListedPerson[] | ApiError;
  if (!res.ok || !Array.isArray(body)) {
    const e = body as ApiError;
    throw new GlanceError(
      res.status === 403 ? "FORBIDDEN" : res.status === 401 ? "UNAUTHORIZED" : "INTERNAL",
      `GET /api/people answered ${res.status} ${e.code ?? ""}: ${e.message ?? "no message"}`,
    );
  }
  return new Map(body.filter((p) => p.personKey).map((p) => [p.personKey as string, p]));
}

function skipped(person: PlannedPerson, known: Pick<ListedPerson, "id" | "templates" | "consents">): PersonOutcome {
  const withdrawn = known.consents.find((c) => c.withdrawnAt)?.withdrawnAt;
  return {
    ...who(person),
    status: "skipped",
    personId: known.id,
    reason: withdrawn
      ? `consent withdrawn on ${withdrawn}; not enrolled again`
      : `already enrolled as ${known.id} (${known.templates} template${known.templates === 1 ? "" : "s"}); left unchanged`,
    photos: [],
  };
}

const who = (p: PlannedPerson) => ({ line: p.line, personKey: p.personKey, displayName: p.displayName });

async function enrolOne(
  person: PlannedPerson,
  opts: { api: ImportApi; photosDir: string; timeoutMs?: number },
): Promise<PersonOutcome> {
  const names = person.photos.map((p) => relative(opts.photosDir, p));
  const form = new FormData();
  form.set("displayName", person.displayName);
  form.set("personKey", person.personKey);
  form.set("consentSource", person.consent.source);
  if (person.consent.evidenceRef) form.set("consentEvidence", person.consent.evidenceRef);
  if (person.consent.scope) form.set("consentScope", person.consent.scope);
  if (person.consent.expiresAt) form.set("consentExpiresAt", person.consent.expiresAt.toISOString());
  if (person.consent.grantedAt) form.set("consentGrantedAt", person.consent.grantedAt.toISOString());
  try {
    for (const path of person.photos) form.append("photos", new Blob([await readFile(path)]), basename(path));
  } catch (error) {
    return { ...who(person), status: "failed", code: "IMAGE_UNREADABLE", reason: (error as Error).message, photos: [] };
  }
  let res: Response;
  try {
    res = await fetch(new URL("/api/people", opts.api.url), {
      method: "POST",
      headers: { authorization: `Bearer ${opts.api.token}` },
      body: form,
      signal: AbortSignal.timeout(opts.timeoutMs ?? 300_000),
    });
  } catch (error) {
    return {
      ...who(person),
      status: "failed",
      code: "UNAVAILABLE",
      reason: `request failed: ${(error as Error).message}; run the import again to retry`,
      photos: [],
    };
  }
  const body = (await res.json().catch(() => ({}))) as ApiError & {
    personId?: string;
    templates?: unknown[];
    feedback?: Feedback[];
  };
  // feedback comes back in the order the photos were sent
  const photos = (body.feedback ?? body.details?.feedback ?? []).map(
    (f, i): PhotoOutcome => ({
      photo: names[i] ?? f.photo,
      accepted: f.accepted,
      ...(f.code ? { code: f.code } : {}),
      message: f.message,
      ...(f.quality ? { quality: f.quality } : {}),
    }),
  );
  if (res.status === 201 && body.personId) {
    return {
      ...who(person),
      status: "enrolled",
      personId: body.personId,
      templates: body.templates?.length ?? 0,
      photos,
    };
  }
  if (res.status === 409 && body.code === "CONFLICT") {
    // enrolled by someone else since the list was read
    return {
      ...who(person),
      status: "skipped",
      ...(body.details?.personId ? { personId: body.details.personId } : {}),
      reason: body.message ?? "already enrolled; left unchanged",
      photos,
    };
  }
  return {
    ...who(person),
    status: "failed",
    code: body.code ?? `HTTP_${res.status}`,
    // the per-photo feedback says why; the API's pointer to details.feedback means nothing on a terminal
    reason: photos.length > 0 ? "no photo could be enrolled" : (body.message ?? `HTTP ${res.status}`),
    photos,
  };
}
