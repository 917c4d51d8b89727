import type { ModelManifest, TensorSpec } from "@glance/shared";
import { GlanceError } from "@glance/shared";
import ort from "onnxruntime-node";

export { ort };

/**
 * Session options for one model on the CPU; `threads` is intra-op parallelism (one core per stage on a node).
 *
 * With more than one thread, the pool's workers do not spin-wait. ORT's default lets them busy-wait for the next
 * parallel section, which only pays on cores nobody else needs: on a 2-core node (or dev box) the detector's idle
 * worker spins while the embedder runs, and both fight the camera decoder and anything else for the same cores.
 * Measured (models/README.md, "Threads"; bench/threads.ts, load ~10 on 2 cores): detect + embed of one face took
 * 30.19 ms at 1 thread, 96.35 ms at 2 spinning threads, 25.89 ms at 2 threads without spinning. On an idle machine
 * spinning does pay (dlib-resnet 8.45 → 5.18 ms at 2 threads; 8.56 without), but a node's cores are never idle.
 */
export function sessionOptions(threads = 1): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: ["cpu"],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    // converters leave unused initialisers behind; ORT warns about each one at load
    logSeverityLevel: 3,
    ...(threads > 1 ? { extra: { session: { intra_op: { allow_spinning: "0" } } } } : {}),
  };
}

/** Opens an ONNX model on the CPU with sessionOptions(threads). */
export async function openSession(modelPath: string, threads = 1): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(modelPath, sessionOptions(threads)).catch((cause: unknown) => {
    throw new GlanceError(
      "MODEL_CORRUPT",
      `onnxruntime cannot load ${modelPath}: ${(cause as Error).message}. Rebuild with \`npm run models:build -- --force\`.`,
      { modelPath },
      { cause },
    );
  });
}

/** The model's I/O as the manifest records it, read from the session itself. */
export function sessionIo(session: ort.InferenceSession): { inputs: TensorSpec[]; outputs: TensorSpec[] } {
  const spec = (m: ort.InferenceSession.ValueMetadata): TensorSpec =>
    m.isTensor
      ? { name: m.name, type: m.type, shape: m.shape.map((d) => (typeof d === "number" && d >= 0 ? d : String(d))) }
      : { name: m.name, type: "non-tensor", shape: [] };
  return { inputs: session.inputMetadata.map(spec), outputs: session.outputMetadata.map(spec) };
}

/** Throws MODEL_SHAPE_MISMATCH unless the session's I/O is exactly what the manifest promises. */
export function checkIo(session: ort.InferenceSession, manifest: ModelManifest): void {
  const actual = sessionIo(session);
  const key = (ts: TensorSpec[]) => JSON.stringify(ts.map((t) => [t.name, t.type, t.shape.map(String)]));
  for (const side of ["inputs", "outputs"] as const) {
    if (key(actual[side]) !== key(manifest[side])) {
      throw new GlanceError(
        "MODEL_SHAPE_MISMATCH",
        `Model ${manifest.name}@${manifest.version} ${side} do not match its manifest: run \`npm run models:build\` to rebuild it.`,
        { expected: manifest[side], actual: actual[side] },
      );
    }
  }
}
