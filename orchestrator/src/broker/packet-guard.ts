import type { Socket } from "node:net";

/**
 * Watches the MQTT fixed headers going past on a socket and reports the first packet whose declared length exceeds
 * `maxBytes`, before its body is buffered (aedes/mqtt-packet would otherwise accumulate up to 256 MB per packet).
 * It only observes: the broker still reads the socket itself.
 */
export class PacketGuard {
  private state: "header" | "length" | "body" = "header";
  private length = 0;
  private multiplier = 1;
  private lengthBytes = 0;
  private remaining = 0;

  constructor(private readonly maxBytes: number) {}

  /** Feeds the next chunk; returns the offending declared length, or undefined while everything is within bounds. */
  feed(chunk: Uint8Array): number | undefined {
    let i = 0;
    while (i < chunk.length) {
      if (this.state === "header") {
        i += 1;
        this.state = "length";
        this.length = 0;
        this.multiplier = 1;
        this.lengthBytes = 0;
      } else if (this.state === "length") {
        const b = chunk[i++] as number;
        this.length += (b & 0x7f) * this.multiplier;
        this.multiplier *= 128;
        this.lengthBytes += 1;
        if (this.length > this.maxBytes || (b & 0x80 && this.lengthBytes >= 4)) return this.length;
        if (!(b & 0x80)) {
          this.remaining = this.length;
          this.state = this.remaining > 0 ? "body" : "header";
        }
      } else {
        const take = Math.min(this.remaining, chunk.length - i);
        i += take;
        this.remaining -= take;
        if (this.remaining === 0) this.state = "header";
      }
    }
    return undefined;
  }
}

/** Destroys the socket as soon as a packet larger than `maxBytes` is announced. */
export function guardSocket(socket: Socket, maxBytes: number, onViolation: (declared: number) => void): void {
  const guard = new PacketGuard(maxBytes);
  // with the broker's 'readable' reader attached, 'data' fires for exactly the chunks it reads, without changing flow
  socket.on("data", (chunk: Buffer) => {
    const declared = guard.feed(chunk);
    if (declared !== undefined) {
      onViolation(declared);
      socket.destroy();
    }
  });
}
