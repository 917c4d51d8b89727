import mqttPacket from "mqtt-packet";
import { describe, expect, it } from "vitest";
import { PacketGuard } from "./packet-guard.ts";

const publish = (bytes: number) =>
  mqttPacket.generate({
    cmd: "publish",
    topic: "glance/v1/node/a/template",
    payload: Buffer.alloc(bytes),
    qos: 0,
    retain: false,
    dup: false,
  });

describe("MQTT packet size guard", () => {
  it("lets a stream of normal packets through, however it is chunked", () => {
    const stream = Buffer.concat([
      mqttPacket.generate({ cmd: "pingreq" }),
      publish(1000),
      publish(0),
      publish(60_000),
      mqttPacket.generate({ cmd: "pingreq" }),
    ]);
    for (const size of [1, 3, 7, 1500, stream.length]) {
      const guard = new PacketGuard(64 * 1024);
      const flagged: number[] = [];
      for (let i = 0; i < stream.length; i += size) {
        const declared = guard.feed(stream.subarray(i, i + size));
        if (declared !== undefined) flagged.push(declared);
      }
      expect(flagged).toEqual([]);
    }
  });

  it("flags a packet that announces more than the limit, from its header alone", () => {
    const guard = new PacketGuard(64 * 1024);
    expect(guard.feed(publish(100))).toBeUndefined();
    const big = publish(200_000);
    expect(guard.feed(big.subarray(0, 5))).toBeGreaterThan(64 * 1024);
  });
});
