import { writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { cpuTemperatureC, Rates } from "./telemetry.ts";

describe("telemetry", () => {
  it("reads the SoC temperature from a thermal zone in millidegrees, and none where there is none", async () => {
    const file = join(await mkdtemp(join(tmpdir(), "glance-thermal-")), "temp");
    writeFileSync(file, "48312\n");
    expect(cpuTemperatureC(file)).toBe(48.3);
    expect(cpuTemperatureC("/nonexistent/thermal")).toBeUndefined();
  });

  it("frames per second since the last heartbeat, faces per hour over the last hour", () => {
    const t0 = 1_000_000;
    const rates = new Rates(t0);
    expect(rates.sample(300, 2, t0 + 30_000)).toEqual({ fps: 10, facesPerHour: 240 });
    // an hour later, only the last hour's tracks count
    const late = t0 + 3_600_000 + 30_000;
    rates.sample(600, 10, t0 + 3_600_000);
    expect(rates.sample(900, 12, late).facesPerHour).toBe(10);
  });
});
