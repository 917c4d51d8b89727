export { type DemoSeed, enrolFolder, seedDemo } from "../scripts/demo-seed.ts";

export interface SseEvent {
  event: string;
  data: string;
}

/**
 * Read a server-sent-event stream the way a browser's EventSource does, until `signal` aborts or `timeoutMs`
 * passes; resolves with every event received.
 */
export async function readSse(url: string, signal: AbortSignal, timeoutMs: number): Promise<SseEvent[]> {
  const events: SseEvent[] = [];
  const timeout = AbortSignal.timeout(timeoutMs);
  const both = AbortSignal.any([signal, timeout]);
  const res = await fetch(url, { headers: { accept: "text/event-stream" }, signal: both });
  if (!res.ok || !res.body) throw new Error(`SSE ${url} → ${res.status}`);
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for await (const chunk of res.body) {
      buffer += decoder.decode(chunk as Uint8Array, { stream: true });
      let end = buffer.indexOf("\n\n");
      while (end >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data: string[] = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length > 0) events.push({ event, data: data.join("\n") });
        end = buffer.indexOf("\n\n");
      }
    }
  } catch (e) {
    if (!both.aborted) throw e;
  }
  return events;
}
