import { join, resolve } from "node:path";
import { isGlanceError } from "@glance/shared";
import cliProgress from "cli-progress";
import { BUILD_STEPS, type BuildStep, buildModels } from "./build.ts";
import { defaultModelsDir } from "./inference/manifest.ts";
import { recipes } from "./recipes.ts";
import { devSigningKey, generateHqKey, HQ_KEY_FILE, KEYS_DIR, readSigningKey, signerLabel } from "./signing/keys.ts";
import { modelDirs, signModelDir } from "./signing/sign.ts";

const usage = `usage: tsx models/src/cli.ts build [--force] [--only name,name]
       tsx models/src/cli.ts keygen [--out <dir>]                    (default ${KEYS_DIR})
       tsx models/src/cli.ts sign <model dir>... | --all [--key <key file> | --dev]
models: ${recipes.map((r) => (r.candidate ? `${r.name} (candidate: built only with --only)` : r.name)).join(", ")}`;

const flag = (args: string[], name: string): string | undefined => {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : undefined;
};

async function keygen(args: string[]): Promise<number> {
  const { key, keyFile, trustFile } = await generateHqKey(resolve(flag(args, "--out") ?? KEYS_DIR));
  console.error(`models: HQ model-signing key ${key.keyId}
  private key : ${keyFile} (mode 0600; keep it off nodes and out of git)
  trust file  : ${trustFile} (give this to nodes and orchestrators: GLANCE_MODEL_TRUST=<path>)
  sign models : npm run models:sign -- --all --key ${keyFile}`);
  console.log(JSON.stringify(key));
  return 0;
}

async function sign(args: string[]): Promise<number> {
  const valued = new Set(["--key"]);
  const dirs = args.filter((a, i) => !a.startsWith("--") && !valued.has(args[i - 1] ?? ""));
  const all = args.includes("--all");
  if (all ? dirs.length > 0 : dirs.length === 0) {
    console.error(usage);
    return 2;
  }
  const key = args.includes("--dev")
    ? await devSigningKey()
    : await readSigningKey(resolve(flag(args, "--key") ?? join(KEYS_DIR, HQ_KEY_FILE)));
  const targets = all ? await modelDirs(defaultModelsDir()) : dirs.map((d) => resolve(d));
  for (const dir of targets) {
    const m = await signModelDir(dir, key);
    console.error(
      `models: ${m.name}@${m.version} ${signerLabel(key.keyId)} by ${key.keyId} → ${join(dir, "manifest.json")}`,
    );
  }
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === "keygen") return await keygen(rest);
    if (command === "sign") return await sign(rest);
  } catch (e) {
    if (isGlanceError(e)) {
      console.error(`models: ${e.code}: ${e.message}`);
      return 1;
    }
    throw e;
  }
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
    for (const r of results) {
      console.error(
        `models: ${r.name}@${r.version} ${r.status}, ${signerLabel(r.signedBy)} (${r.signedBy}) → ${r.dir}`,
      );
    }
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
