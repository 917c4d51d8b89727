import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const UNIT = new URL("../deploy/glance-agent.service", import.meta.url).pathname;

function hasSystemdAnalyze(): boolean {
  try {
    execFileSync("systemd-analyze", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

describe("systemd unit", () => {
  const unit = readFileSync(UNIT, "utf8");
  const values = (key: string) =>
    unit
      .split("\n")
      .filter((l) => l.startsWith(`${key}=`))
      .map((l) => l.slice(key.length + 1));

  it("runs the agent as the unprivileged glance user, restarts it forever, and keeps its state owner-only", () => {
    expect(values("User")).toEqual(["glance"]);
    expect(values("Restart")).toEqual(["always"]);
    expect(values("StartLimitIntervalSec")).toEqual(["0"]);
    expect(values("StateDirectoryMode")).toEqual(["0700"]);
    expect(values("UMask")).toEqual(["0077"]);
    expect(values("NoNewPrivileges")).toEqual(["yes"]);
    expect(values("CapabilityBoundingSet")).toEqual([""]);
    expect(values("ProtectSystem")).toEqual(["strict"]);
    expect(values("ExecStart")[0]).toMatch(/cli\.ts run --config \/etc\/glance\/node\.json$/);
  });

  it.runIf(hasSystemdAnalyze())("is a unit systemd accepts without warnings", async () => {
    const dir = await mkdtemp(join(tmpdir(), "glance-unit-"));
    const copy = join(dir, "glance-agent.service");
    // the checkout is not installed under /opt here: only the binary path differs
    writeFileSync(copy, unit.replace(/^ExecStart=.*$/m, "ExecStart=/bin/true run --config /etc/glance/node.json"));
    const r = spawnSync("systemd-analyze", ["verify", copy], { encoding: "utf8" });
    expect(`${r.stdout}${r.stderr}`.trim()).toBe("");
    expect(r.status).toBe(0);
  });
});
