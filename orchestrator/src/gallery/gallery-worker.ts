/**
 * The worker side of GalleryThread (gallery-thread.ts): owns one Gallery and applies the requests it is sent, each
 * in turn, replying with the result and the gallery's state after it.
 */
import { parentPort } from "node:worker_threads";
import { Gallery } from "./gallery.ts";
import type { GalleryRequest, GalleryState, ThreadMessage } from "./gallery-thread.ts";

const port = parentPort;
if (!port) throw new Error("gallery-worker.ts runs as a worker thread (GalleryThread)");
let gallery: Gallery | undefined;

const post = (message: ThreadMessage, transfer: ArrayBuffer[] = []) => port.postMessage(message, transfer);

function state(g: Gallery): GalleryState {
  return { openSet: g.openSet, size: g.size, graphTuning: g.graphTuning, graphRepaired: g.graphRepaired };
}

/** Tells the main thread when a background tuning of the graph's breadth ends, so its getters show the result. */
let watching = false;
function watchTuning(g: Gallery): void {
  if (watching || !g.graphTuning?.pending) return;
  watching = true;
  void g.graphTuned().finally(() => {
    watching = false;
    post({ kind: "state", state: state(g) });
    watchTuning(g);
  });
}

async function apply(req: GalleryRequest): Promise<unknown> {
  if (req.op === "build") {
    const { space, threshold, indexOptions, members, counts, vectors } = req;
    gallery = Gallery.fromRows(space, threshold, members, counts, vectors, {
      ...indexOptions,
      warn: (message) => post({ kind: "warn", message }),
    });
    return undefined;
  }
  const g = gallery;
  if (!g) throw new Error("the gallery thread has no gallery yet");
  switch (req.op) {
    case "add":
      return g.add(req.member, req.embeddings);
    case "remove":
      return g.remove(req.personId);
    case "match": {
      let at = 0;
      const probes = req.lengths.map((length, i) => {
        const probe = req.probes.subarray(at, at + length);
        at += length;
        return { probe, storeId: req.storeIds[i] as string };
      });
      return g.matchMany(probes, new Date(req.now));
    }
    case "tuned":
      return g.graphTuned();
  }
}

port.on("message", (req: GalleryRequest) => {
  apply(req).then(
    (result) => {
      const g = gallery;
      post({ kind: "reply", id: req.id, result, ...(g ? { state: state(g) } : {}) });
      if (g) watchTuning(g);
    },
    (error: unknown) => post({ kind: "reply", id: req.id, error, ...(gallery ? { state: state(gallery) } : {}) }),
  );
});
