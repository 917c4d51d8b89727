import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Orchestrator, type OrchestratorOptions, startOrchestrator } from "@glance/orchestrator";
import { pino } from "pino";

/**
 * For the provisioning tests: an orchestrator on its mutual-TLS broker in a temp dir, with the store "soho" a
 * technician claims nodes into. `stop` removes everything.
 */
export async function startTlsOrchestrator(
  prefix: string,
  options: Partial<OrchestratorOptions> = {},
): Promise<{ dir: string; orch: Orchestrator; stop(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const orch = await startOrchestrator({
    dataDir: join(dir, "orchestrator"),
    httpPort: 0,
    mqttPort: 0,
    mqttTls: {},
    logger: pino({ level: "silent" }),
    ...options,
  });
  const res = await fetch(new URL("/api/stores", orch.httpUrl), {
    method: "POST",
    headers: { authorization: `Bearer ${orch.adminToken}`, "content-type": "application/json" },
    body: JSON.stringify({ id: "soho", name: "Glance Soho" }),
  });
  if (res.status !== 201) throw new Error(`store soho not created: HTTP ${res.status} ${await res.text()}`);
  return {
    dir,
    orch,
    async stop() {
      await orch.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
