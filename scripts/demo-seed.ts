import { readdir, readFile } from "node:fs/promises";
import { basename, extname, join } from "node:path";

/**
 * The demo seed goes through the public HTTP API, exactly as HQ would: one store, one signage screen, the six demo
 * people (consent source "demo", so it is never mistaken for real consent) and two promotion rules.
 */

export interface DemoSeed {
  storeId: string;
  screenId: string;
  screenToken: string;
  signageUrl: string;
  enrolled: Array<{ name: string; displayName: string; personId: string; templates: number; feedback: unknown[] }>;
}

export interface Api {
  url: string;
  token: string;
}

async function call<T>(api: Api, path: string, init: RequestInit = {}): Promise<T> {
  const res = await fetch(new URL(path, api.url), {
    ...init,
    headers: {
      authorization: `Bearer ${api.token}`,
      ...(init.body instanceof FormData ? {} : { "content-type": "application/json" }),
      ...init.headers,
    },
  });
  const body = (await res.json().catch(() => ({}))) as T & { code?: string; message?: string };
  if (!res.ok)
    throw new Error(`${init.method ?? "GET"} ${path} → ${res.status} ${body.code ?? ""}: ${body.message ?? ""}`);
  return body;
}

const IMAGE = new Set([".jpg", ".jpeg", ".png", ".webp"]);

/** Enrol every sub-folder of `enrollDir` as one person named after the folder. */
export async function enrolFolder(
  api: Api,
  enrollDir: string,
  onPerson?: (name: string, done: number, total: number) => void,
): Promise<DemoSeed["enrolled"]> {
  const names = (await readdir(enrollDir, { withFileTypes: true }))
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
  // optional names.json beside the folder maps folder names to display names
  const displayNames = (await readFile(join(enrollDir, "..", "names.json"), "utf8")
    .then((t) => JSON.parse(t) as Record<string, string>)
    .catch(() => ({}))) as Record<string, string>;
  const enrolled: DemoSeed["enrolled"] = [];
  for (const [i, name] of names.entries()) {
    const form = new FormData();
    form.set("displayName", displayNames[name] ?? name);
    form.set("consentSource", "demo");
    form.set("consentEvidence", "bundled demo data (demo/people/ATTRIBUTION.md)");
    for (const file of (await readdir(join(enrollDir, name))).sort()) {
      if (!IMAGE.has(extname(file).toLowerCase())) continue;
      form.append("photos", new Blob([await readFile(join(enrollDir, name, file))]), basename(file));
    }
    const r = await call<{ personId: string; templates: unknown[]; feedback: unknown[] }>(api, "/api/people", {
      method: "POST",
      body: form,
    });
    enrolled.push({
      name,
      displayName: displayNames[name] ?? name,
      personId: r.personId,
      templates: r.templates.length,
      feedback: r.feedback,
    });
    onPerson?.(name, i + 1, names.length);
  }
  return enrolled;
}

export async function seedDemo(
  api: Api,
  demoDir: string,
  onPerson?: (name: string, done: number, total: number) => void,
): Promise<DemoSeed> {
  const store = await call<{ id?: string; store?: { id: string } }>(api, "/api/stores", {
    method: "POST",
    body: JSON.stringify({ id: "demo-store", name: "Glance Demo Store" }),
  });
  const storeId = store.store?.id ?? store.id ?? "demo-store";
  const screen = await call<{ screen: { id: string }; token: string; signageUrl: string }>(api, "/api/screens", {
    method: "POST",
    body: JSON.stringify({ id: "entrance-screen", storeId, name: "Entrance screen" }),
  });
  const enrolled = await enrolFolder(api, join(demoDir, "enroll"), onPerson);
  await call(api, "/api/promotions", {
    method: "POST",
    body: JSON.stringify({
      storeId,
      audience: "member",
      title: "Member welcome",
      message: "Welcome back, {firstName} — 10% off today",
      durationMs: 8000,
      cooldownMs: 60_000,
    }),
  });
  await call(api, "/api/promotions", {
    method: "POST",
    body: JSON.stringify({
      storeId,
      audience: "unknown",
      title: "Join the club",
      message: "New here? Join our members' club for 10% off your first visit",
      durationMs: 6000,
      cooldownMs: 60_000,
    }),
  });
  return {
    storeId,
    screenId: screen.screen.id,
    screenToken: screen.token,
    signageUrl: new URL(screen.signageUrl, api.url).toString(),
    enrolled,
  };
}
