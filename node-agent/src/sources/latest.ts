/**
 * Latest-value semantics for a live source: the producer is drained as fast as it produces, and the consumer
 * always gets the newest item. An item the consumer had no time for is dropped (and counted), never queued, so a
 * slow pipeline works on what the camera sees now rather than on an ever older backlog.
 */
export interface Latest<T> extends AsyncIterable<T> {
  readonly dropped: number;
}

export function latest<T>(source: AsyncIterable<T>): Latest<T> {
  let slot: { value: T } | undefined;
  let done = false;
  let failure: { error: unknown } | undefined;
  let dropped = 0;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };

  void (async () => {
    try {
      for await (const value of source) {
        if (slot) dropped++;
        slot = { value };
        notify();
      }
    } catch (error) {
      failure = { error };
    } finally {
      done = true;
      notify();
    }
  })();

  return {
    get dropped() {
      return dropped;
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        if (slot) {
          const { value } = slot;
          slot = undefined;
          yield value;
          continue;
        }
        if (done) {
          if (failure) throw failure.error;
          return;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
    },
  };
}
