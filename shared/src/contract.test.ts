import { describe, expect, it } from "vitest";
import { decodeMessage, encodeMessage, filterFor, mayPublish, maySubscribe, parseTopic, topicFor } from "./contract.ts";

const node = { role: "node", nodeId: "cam-a" } as const;

describe("contract", () => {
  it("builds and parses every topic", () => {
    expect(topicFor("template", "cam-a")).toBe("glance/v1/node/cam-a/template");
    expect(parseTopic("glance/v1/node/cam-a/desired")).toEqual({ name: "desired", nodeId: "cam-a" });
    expect(parseTopic("glance/v1/node/cam-a/nope")).toBeUndefined();
    expect(parseTopic("glance/v1/node/../template")).toBeUndefined();
    expect(filterFor("template")).toBe("glance/v1/node/+/template");
    expect(() => topicFor("template", "a/b")).toThrow();
  });

  it("lets a node publish only its own node topics and read only its own orchestrator topics", () => {
    expect(mayPublish(node, "glance/v1/node/cam-a/template")).toBe(true);
    expect(mayPublish(node, "glance/v1/node/cam-b/template")).toBe(false);
    expect(mayPublish(node, "glance/v1/node/cam-a/desired")).toBe(false);
    expect(mayPublish({ role: "orchestrator" }, "glance/v1/node/cam-a/desired")).toBe(true);
    expect(mayPublish({ role: "orchestrator" }, "glance/v1/node/cam-a/template")).toBe(false);
    expect(maySubscribe(node, "glance/v1/node/cam-a/desired")).toBe(true);
    expect(maySubscribe(node, "glance/v1/node/+/desired")).toBe(false);
    expect(maySubscribe(node, "glance/v1/node/cam-b/command")).toBe(false);
    expect(maySubscribe(node, "glance/v1/node/cam-a/template")).toBe(false);
    expect(maySubscribe(node, "#")).toBe(false);
  });

  it("rejects non-JSON, oversized, invalid and mismatched payloads with their codes", () => {
    const topic = topicFor("event", "cam-a");
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return (e as { code?: string }).code;
      }
      return "accepted";
    };
    const ok = { nodeId: "cam-a", ts: 1, kind: "track-ended", cameraId: "c1" } as const;
    expect(code(() => decodeMessage("event", topic, encodeMessage("event", ok)))).toBe("accepted");
    expect(code(() => decodeMessage("event", topic, Buffer.from("not json")))).toBe("PAYLOAD_NOT_JSON");
    expect(code(() => decodeMessage("event", topic, Buffer.alloc(5000, 32)))).toBe("PAYLOAD_TOO_LARGE");
    expect(code(() => decodeMessage("event", topic, Buffer.from('{"nodeId":"cam-a"}')))).toBe("PAYLOAD_INVALID");
    expect(code(() => decodeMessage("event", topicFor("event", "cam-b"), encodeMessage("event", ok)))).toBe(
      "TOPIC_MISMATCH",
    );
    expect(code(() => decodeMessage("template", topic, encodeMessage("event", ok)))).toBe("TOPIC_UNKNOWN");
  });
});
