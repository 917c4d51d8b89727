import type { Aedes } from "aedes";
import type { MqttClient } from "mqtt";

/** One message handler on a subscription; the payload is a view the handler may keep. */
export type OnMessage = (topic: string, payload: Buffer) => void;

/**
 * Where a subscriber's messages come from. The embedded broker hands them over in this process (`aedesSource`); an
 * external broker delivers them to the orchestrator's MQTT client (`clientSource`). `subscribe` resolves with the
 * function that ends the subscription.
 */
export interface MessageSource {
  subscribe(filter: string, onMessage: OnMessage): Promise<() => Promise<void>>;
}

/**
 * Messages as the embedded broker routes them, without the loopback connection: no second MQTT encoding and
 * parse, no QoS 1 handshake, and no TLS on the way back in. The broker still authorised the publish (the node's
 * ACL), and it acknowledges the publisher once every in-process handler has taken the message, as it does once
 * the orchestrator's client has.
 */
export function aedesSource(aedes: Aedes): MessageSource {
  return {
    subscribe(filter, onMessage) {
      const deliver = (packet: { topic: string; payload: string | Buffer }, done: () => void) => {
        onMessage(packet.topic, typeof packet.payload === "string" ? Buffer.from(packet.payload) : packet.payload);
        done();
      };
      return new Promise((resolve) =>
        aedes.subscribe(filter, deliver, () =>
          resolve(() => new Promise<void>((unsubscribed) => aedes.unsubscribe(filter, deliver, () => unsubscribed()))),
        ),
      );
    },
  };
}

/** MQTT single-level wildcard match (`+`), enough for the contract's filters. */
export function matchesFilter(filter: string, topic: string): boolean {
  // every handler on the orchestrator's client asks this of every message: compiled once per filter, not split each time
  let pattern = compiledFilters.get(filter);
  if (!pattern) {
    const levels = filter
      .split("/")
      .map((part) => (part === "+" ? "[^/]*" : part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
    pattern = new RegExp(`^${levels.join("/")}$`);
    compiledFilters.set(filter, pattern);
  }
  return pattern.test(topic);
}
const compiledFilters = new Map<string, RegExp>();

/** Messages the orchestrator's MQTT client receives on `filter` (QoS 1), for an external broker. */
export function clientSource(client: MqttClient): MessageSource {
  return {
    async subscribe(filter, onMessage) {
      // the client carries other subscriptions too: only this filter's messages (a shared subscription's topics
      // are those of the filter without its `$share/<group>/`)
      const topics = filter.replace(/^\$share\/[^/]+\//, "");
      const handler = (topic: string, payload: Buffer) => {
        if (matchesFilter(topics, topic)) onMessage(topic, payload);
      };
      client.on("message", handler);
      await client.subscribeAsync(filter, { qos: 1 });
      // the subscription itself ends with the client (an unsubscribe on a reconnecting client would wait for it)
      return async () => {
        client.off("message", handler);
      };
    },
  };
}
