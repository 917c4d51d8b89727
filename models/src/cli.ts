import { isGlanceError } from "@glance/shared";
import cliProgress from "cli-progress";
import { BUILD_STEPS, type BuildStep, buildModels } from "./build.ts";
import { recipes } from "./recipes.ts";

const usage = `usage: tsx models/src/cli.ts build [--force] [--only name,name]
models: ${recipes.map((r) => r.name).join(", ")}`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command !== "build") {
    console.error(usage);
    return command === undefined || command === "--help" ? 0 : 2;
  }
  const force = rest.includes("--force");
  const onlyAt = rest.indexOf("--only");
  const only = onlyAt >= 0 ? (rest[onlyAt + 1] ?? "").split(",").filter(Boolean) : undefined;

  // bars on a terminal; one line per step elsewhere (CI, npm postinstall logs)
  const tty = Boolean(process.stderr.isTTY);
  const multi = tty
    ? new cliProgress.MultiBar(
        { format: " {model} |{bar}| {step}", barsize: 24, hideCursor: true, clearOnComplete: false },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  const bars = new Map<string, cliProgress.SingleBar>();
  const onStep = (model: string, step: BuildStep, detail?: string) => {
    const label = detail ? `${step} ${detail}` : step;
    if (!multi) {
      // in logs, only steps that do work; the summary line covers up-to-date models
      if (step !== "check") console.error(`models: ${model}: ${label}`);
      return;
    }
    let bar = bars.get(model);
    if (!bar) {
      bar = multi.create(BUILD_STEPS.length, 0, { model: model.padEnd(16), step: label });
      bars.set(model, bar);
    }
    bar.update(BUILD_STEPS.indexOf(step), { step: label });
  };
  try {
    const results = await buildModels({ force, ...(only ? { only } : {}), onStep });
    for (const r of results) {
      const bar = bars.get(r.name);
      bar?.update(BUILD_STEPS.length, { step: `${r.status} (${Math.round(r.ms)} ms)` });
    }
    multi?.stop();
    for (const r of results) console.error(`models: ${r.name}@${r.version} ${r.status} → ${r.dir}`);
    return 0;
  } catch (e) {
    multi?.stop();
    if (isGlanceError(e)) {
      console.error(`models: ${e.code}: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

process.exitCode = await main(process.argv.slice(2));
