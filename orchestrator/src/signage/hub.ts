import { z } from "zod";

/** What a screen receives as the SSE event "promotion". */
export const PromotionEvent = z.object({
  playId: z.string(),
  promotionId: z.string(),
  title: z.string(),
  message: z.string(),
  durationMs: z.number().int().positive(),
  audience: z.enum(["member", "unknown"]),
});
export type PromotionEvent = z.infer<typeof PromotionEvent>;

type Listener = (event: PromotionEvent) => void;

/** Fan-out of promotions to the screens connected to this orchestrator instance. */
export class ScreenHub {
  private readonly listeners = new Map<string, Set<Listener>>();

  subscribe(screenId: string, listener: Listener): () => void {
    const set = this.listeners.get(screenId) ?? new Set<Listener>();
    set.add(listener);
    this.listeners.set(screenId, set);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(screenId);
    };
  }

  /** Returns how many connections the event reached (0 when the screen is offline). */
  push(screenId: string, event: PromotionEvent): number {
    const set = this.listeners.get(screenId);
    if (!set) return 0;
    for (const listener of set) listener(event);
    return set.size;
  }

  connected(screenId: string): number {
    return this.listeners.get(screenId)?.size ?? 0;
  }
}
