import { encodeEmbedding, type SealedTemplate, type TemplateHeader, type TemplateSealer } from "@glance/shared";
import type { SequenceStore } from "../sequence.ts";
import type { TrackEnded } from "./best-shot.ts";
import type { Embedded } from "./embed.ts";
import type { StageTimer } from "./metrics.ts";

export interface SealContext {
  nodeId: string;
  cameraId: string;
  /** embedding space of the embedder, from its manifest */
  space: string;
  /** the node's template sessions (ephemeral key in memory only, rotated by the sealer), one per agent process */
  sealer: TemplateSealer;
  sequence: SequenceStore;
  /** the orchestrator key to seal to, from the desired state; undefined when templates are off */
  recipient: () => { kid: string; publicKey: string } | undefined;
}

export interface Sealed {
  kind: "template";
  template: SealedTemplate;
}

/**
 * Stage: encrypts each embedding to the orchestrator under the node's current session (v2 envelope: one signature
 * per session, AES-GCM per template, every message still self-contained). The clear embedding is wiped once sealed;
 * nothing downstream can see it.
 */
export async function* sealTemplates(
  input: AsyncIterable<Embedded | TrackEnded>,
  ctx: SealContext,
  timer: StageTimer,
): AsyncGenerator<Sealed | TrackEnded> {
  for await (const item of input) {
    if (item.kind !== "embedding") {
      yield item;
      continue;
    }
    const recipient = ctx.recipient();
    if (!recipient) {
      // templates were switched off (count-only, or the desired state withdrawn) while this face was embedded
      item.embedding.fill(0);
      continue;
    }
    const template = await timer.time("seal", () => {
      const header: TemplateHeader = {
        v: 2,
        nodeId: ctx.nodeId,
        seq: ctx.sequence.next(),
        ts: Math.round(item.ts),
        space: ctx.space,
        kid: recipient.kid,
        cameraId: ctx.cameraId,
        trackId: item.trackId,
        quality: Math.min(1, Math.max(0, Math.round(item.quality * 1000) / 1000)),
      };
      const plaintext = encodeEmbedding(item.embedding);
      try {
        return { ...header, ...ctx.sealer.seal(plaintext, header, recipient.publicKey) };
      } finally {
        plaintext.fill(0);
        item.embedding.fill(0);
      }
    });
    yield { kind: "template", template };
  }
}
