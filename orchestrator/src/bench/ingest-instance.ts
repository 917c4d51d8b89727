/**
 * Child process for `bench:ingest --instances N`: one orchestrator instance behind mosquitto, in a process of its own
 * so that N instances can use N cores (startMosquittoFleet starts them in the test's process, which measures one
 * core however many instances there are). The parent (bench/ingest.ts) forks it with tsx's loader and talks over
 * the IPC channel: it sends `InstanceStart`, gets `ready`, then the instance forwards its "recognition" and
 * "rejection" events in batches stamped with this process's clock (epoch ms, as the publisher stamps its publishes),
 * and answers each `phase-end` with the CPU this process used since the matching `phase-start`.
 */
import { pino } from "pino";
import { type Orchestrator, type Recognition, startOrchestrator } from "../index.ts";
import type { MosquittoReload } from "../mosquitto/revocation.ts";

export interface InstanceStart {
  kind: "start";
  dataDir: string;
  databaseUrl: string;
  brokerUrl: string;
  /** this instance's name (`broker.external.instance`), one of the generated config's `orchestratorInstances` */
  instance: string;
  reload: MosquittoReload;
}

export type InstanceRequest = InstanceStart | { kind: "phase-start" } | { kind: "phase-end" } | { kind: "stop" };

export type InstanceMessage =
  | {
      kind: "ready";
      httpUrl: string;
      adminToken: string;
      sealingKey: { kid: string; publicKey: string };
      startSeconds: number;
    }
  /** recognitions: [epoch ms, nodeId, member?]; rejections: epoch ms */
  | { kind: "events"; recognitions: [number, string, boolean][]; rejections: number[] }
  | { kind: "cpu"; user: number; system: number }
  | { kind: "failed"; error: string };

/** how often events go to the parent: often enough for the phase end, rarely enough to cost the instance little */
const FLUSH_MS = 20;

const now = () => performance.timeOrigin + performance.now();
const send = (m: InstanceMessage) => process.send?.(m);

let orch: Orchestrator | undefined;
let recognitions: [number, string, boolean][] = [];
let rejections: number[] = [];
let cpu0 = process.cpuUsage();

const flush = () => {
  if (recognitions.length === 0 && rejections.length === 0) return;
  send({ kind: "events", recognitions, rejections });
  recognitions = [];
  rejections = [];
};
const flusher = setInterval(flush, FLUSH_MS);

let stopping = false;
async function stop(code: number) {
  if (stopping) return;
  stopping = true;
  clearInterval(flusher);
  await orch?.stop().catch(() => {});
  process.disconnect?.();
  process.exit(code);
}

async function start(req: InstanceStart) {
  const t = performance.now();
  orch = await startOrchestrator({
    dataDir: req.dataDir,
    databaseUrl: req.databaseUrl,
    httpPort: 0,
    logger: pino({ level: "warn" }),
    broker: { external: { url: req.brokerUrl, instance: req.instance, reload: req.reload } },
  });
  orch.events.on("recognition", (r: Recognition) => {
    recognitions.push([now(), r.nodeId, r.visitor === "member"]);
  });
  orch.events.on("rejection", () => {
    rejections.push(now());
  });
  send({
    kind: "ready",
    httpUrl: orch.httpUrl,
    adminToken: orch.adminToken,
    sealingKey: orch.sealingKey,
    startSeconds: (performance.now() - t) / 1000,
  });
}

process.on("message", (req: InstanceRequest) => {
  switch (req.kind) {
    case "start":
      start(req).catch((e: unknown) => {
        send({ kind: "failed", error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
        void stop(1);
      });
      break;
    case "phase-start":
      cpu0 = process.cpuUsage();
      break;
    case "phase-end": {
      const cpu = process.cpuUsage(cpu0);
      // the events of the phase go first, so the parent has them all when it reads the CPU figure
      flush();
      send({ kind: "cpu", user: cpu.user, system: cpu.system });
      break;
    }
    case "stop":
      void stop(0);
      break;
  }
});
// the parent died or closed the channel: never outlive it
process.on("disconnect", () => void stop(0));
