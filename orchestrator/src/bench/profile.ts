import type { Profiler } from "node:inspector";

export interface Hot {
  name: string;
  where: string;
  selfMs: number;
  /** % of all samples */
  share: number;
}

/** Where a frame's code lives: our workspace file, a package, or Node itself. */
function area(url: string): string {
  if (!url) return "(native / idle / gc)";
  const pkg = url.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/);
  if (pkg) return pkg[1] as string;
  const ours = url.match(/\/(shared|models|orchestrator|node-agent)\/src\/(.+)$/);
  if (ours) return `@glance/${ours[1]} ${ours[2]}`;
  if (url.startsWith("node:")) return url;
  return url.split("/").slice(-2).join("/");
}

/** Self time per function and per package from a V8 CPU profile, largest first. */
export function summariseProfile(profile: Profiler.Profile, top = 15): { functions: Hot[]; packages: Hot[] } {
  const dt = new Map<number, number>();
  const deltas = profile.timeDeltas ?? [];
  (profile.samples ?? []).forEach((id, i) => {
    dt.set(id, (dt.get(id) ?? 0) + (deltas[i] ?? 0) / 1000);
  });
  const total = [...dt.values()].reduce((a, b) => a + b, 0) || 1;
  const fns = new Map<string, Hot>();
  const pkgs = new Map<string, Hot>();
  for (const node of profile.nodes) {
    const ms = dt.get(node.id) ?? 0;
    if (ms === 0) continue;
    const f = node.callFrame;
    const where = area(f.url);
    const name = f.functionName || "(anonymous)";
    const key = `${name}@${f.url}:${f.lineNumber}`;
    const fn = fns.get(key) ?? { name, where: `${where}:${f.lineNumber + 1}`, selfMs: 0, share: 0 };
    fn.selfMs += ms;
    fns.set(key, fn);
    const pkgName = f.url
      ? where.split(" ")[0] === "@glance/orchestrator"
        ? where
        : (where.split(" ")[0] as string)
      : name;
    const pkg = pkgs.get(pkgName) ?? { name: pkgName, where: "", selfMs: 0, share: 0 };
    pkg.selfMs += ms;
    pkgs.set(pkgName, pkg);
  }
  const rank = (m: Map<string, Hot>) =>
    [...m.values()]
      .map((h) => ({ ...h, share: (100 * h.selfMs) / total }))
      .sort((a, b) => b.selfMs - a.selfMs)
      .slice(0, top);
  return { functions: rank(fns), packages: rank(pkgs) };
}

export interface Stage {
  label: string;
  /** a frame's script URL belongs to this stage */
  test(url: string, functionName: string): boolean;
  /** claims a sample only when no other stage claims any frame of its stack */
  fallback?: boolean;
}

/**
 * Self time grouped by stage: each sample goes to the first stage that claims a frame, walking from the sampled
 * (innermost) frame outwards, so a driver or crypto call is charged to itself and not to whoever awaited it. Samples
 * no frame claims are "(other)"; V8's pseudo-frames ((garbage collector), (idle), (program)) keep their names.
 */
export function stageSplit(profile: Profiler.Profile, stages: readonly Stage[]): { label: string; ms: number }[] {
  const parent = new Map<number, number>();
  const byId = new Map<number, Profiler.ProfileNode>();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const memo = new Map<number, string>();
  const label = (id: number): string => {
    const known = memo.get(id);
    if (known) return known;
    const leaf = (byId.get(id) as Profiler.ProfileNode).callFrame;
    let found = !leaf.url && leaf.functionName.startsWith("(") ? leaf.functionName : undefined;
    // the stages proper first; fallbacks (Node's own modules) only if no stage claims any frame of the stack
    for (const pass of [stages.filter((s) => !s.fallback), stages.filter((s) => s.fallback)]) {
      for (let at: number | undefined = id; at !== undefined && !found; at = parent.get(at)) {
        const f = (byId.get(at) as Profiler.ProfileNode).callFrame;
        found = pass.find((s) => s.test(f.url, f.functionName))?.label;
      }
    }
    const result = found ?? "(other)";
    memo.set(id, result);
    return result;
  };
  const ms = new Map<string, number>();
  const deltas = profile.timeDeltas ?? [];
  (profile.samples ?? []).forEach((id, i) => {
    const l = label(id);
    ms.set(l, (ms.get(l) ?? 0) + (deltas[i] ?? 0) / 1000);
  });
  return [...ms.entries()].map(([l, v]) => ({ label: l, ms: v })).sort((a, b) => b.ms - a.ms);
}

/** The stages of a template's trip through the orchestrator, for `stageSplit`. */
export const INGEST_STAGES: readonly Stage[] = [
  // Profiler.stop serialises the profile on this thread: the bench's own cost, not the orchestrator's
  { label: "(profiler itself)", test: (u) => u === "node:inspector" },
  {
    label: "database driver (PGlite wasm / postgres-js, drizzle)",
    test: (u) => /node_modules\/(@electric-sql|postgres|drizzle-orm)\//.test(u) || u.startsWith("wasm:"),
  },
  {
    label: "MQTT (embedded aedes broker + client)",
    test: (u) =>
      /node_modules\/(aedes[^/]*|mqtt[^/]*|bl|readable-stream|mqemitter[^/]*|fastq|hyperid|retimer)\//.test(u),
  },
  { label: "crypto: verify + decrypt (shared/crypto.ts)", test: (u) => u.includes("/shared/src/crypto.ts") },
  {
    label: "contract: JSON + zod (shared/contract.ts)",
    test: (u) => u.includes("/shared/src/contract.ts") || /node_modules\/zod\//.test(u),
  },
  {
    label: "replay window (ingest/replay-window.ts)",
    test: (u) => u.includes("/orchestrator/src/ingest/replay-window.ts"),
  },
  { label: "ingest batching (ingest/*.ts)", test: (u) => u.includes("/orchestrator/src/ingest/") },
  { label: "gallery search (gallery/)", test: (u) => u.includes("/orchestrator/src/gallery/") },
  {
    label: "recognition, visits, promotions",
    test: (u) => /\/orchestrator\/src\/(recognition|promotions|signage|feedback|privacy|visitors?)\//.test(u),
  },
  { label: "logging (pino)", test: (u) => /node_modules\/(pino|thread-stream|sonic-boom)/.test(u) },
  { label: "Node internals (streams, timers, events)", test: (u) => u.startsWith("node:"), fallback: true },
];
