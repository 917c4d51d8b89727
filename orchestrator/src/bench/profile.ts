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
