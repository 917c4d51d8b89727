import { filterFor, topicFor } from "@glance/shared";
import mqtt, { type MqttClient } from "mqtt";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { newSecret } from "../auth/secrets.ts";
import { type Broker, ORCHESTRATOR_USERNAME, startBroker } from "./broker.ts";
import { aedesSource, clientSource } from "./source.ts";

describe("message sources", () => {
  const passwords = new Map([
    ["node-a", newSecret()],
    ["node-b", newSecret()],
  ]);
  const orchestratorSecret = newSecret();
  let broker: Broker;
  let orchestrator: MqttClient;
  const clients: MqttClient[] = [];

  const connect = async (nodeId: string) => {
    const c = await mqtt.connectAsync(broker.url, {
      username: nodeId,
      password: passwords.get(nodeId) as string,
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    broker = await startBroker({
      host: "127.0.0.1",
      port: 0,
      orchestratorSecret,
      logger: pino({ level: "silent" }),
      verifyNode: async (nodeId, password) => passwords.get(nodeId) === password,
    });
    orchestrator = await mqtt.connectAsync(broker.url, {
      username: ORCHESTRATOR_USERNAME,
      password: orchestratorSecret,
      protocolVersion: 4,
    });
  });

  afterAll(async () => {
    for (const c of clients) await c.endAsync(true);
    await orchestrator?.endAsync();
    await broker?.close();
  });

  it("the embedded broker hands a node's own template over in process, byte for byte, and only while subscribed", async () => {
    const got: { topic: string; payload: Buffer }[] = [];
    const unsubscribe = await aedesSource(broker.aedes).subscribe(filterFor("template"), (topic, payload) =>
      got.push({ topic, payload }),
    );
    const a = await connect("node-a");
    const payload = Buffer.from('{"sealed":"\u00e9t\u00e9"}');
    await a.publishAsync(topicFor("template", "node-a"), payload, { qos: 1 });
    // the QoS 1 PUBACK comes after the in-process handler took it
    expect(got).toEqual([{ topic: topicFor("template", "node-a"), payload }]);
    // another filter's topic is not delivered
    await a.publishAsync(topicFor("status", "node-a"), Buffer.from("{}"), { qos: 1 });
    expect(got).toHaveLength(1);

    await unsubscribe();
    await a.publishAsync(topicFor("template", "node-a"), payload, { qos: 1 });
    expect(got).toHaveLength(1);
  });

  it("a publish the broker refuses (another node's topic) never reaches the in-process subscriber", async () => {
    const got: string[] = [];
    const unsubscribe = await aedesSource(broker.aedes).subscribe(filterFor("template"), (topic) => got.push(topic));
    const b = await connect("node-b");
    const closed = new Promise<void>((resolve) => b.once("close", () => resolve()));
    b.publish(topicFor("template", "node-a"), Buffer.from("{}"), { qos: 1 });
    await closed;
    const a = await connect("node-a");
    await a.publishAsync(topicFor("template", "node-a"), Buffer.from("{}"), { qos: 1 });
    expect(got).toEqual([topicFor("template", "node-a")]);
    await unsubscribe();
  });

  it("the orchestrator's client hands over only its filter's messages", async () => {
    const got: string[] = [];
    const unsubscribe = await clientSource(orchestrator).subscribe(filterFor("template"), (topic) => got.push(topic));
    // another subscription on the same client: its messages are not this source's
    await orchestrator.subscribeAsync(filterFor("status"), { qos: 1 });
    const a = await connect("node-a");
    await a.publishAsync(topicFor("status", "node-a"), Buffer.from("{}"), { qos: 1 });
    await a.publishAsync(topicFor("template", "node-a"), Buffer.from("{}"), { qos: 1 });
    await vi.waitFor(() => expect(got).toEqual([topicFor("template", "node-a")]));
    await unsubscribe();
  });
  // a shared filter (`$share/<group>/…`, which aedes does not offer) is tested on mosquitto: two-instances.test.ts
});
