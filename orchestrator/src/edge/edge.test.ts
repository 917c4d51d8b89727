import {
  attestSealingKey,
  type Command,
  type DesiredState,
  decodeEdgeGallery,
  decodeEmbedding,
  decodeMessage,
  type EdgeGallery,
  edgeGalleryHeader,
  encodeMessage,
  generateSigningKeyPair,
  type KeyPair,
  nodeSealingKeyPair,
  open,
  parseTopic,
  topicFor,
} from "@glance/shared";
import { eq } from "drizzle-orm";
import type { MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase } from "../db/client.ts";
import { edgeErasures, personKeys, templates } from "../db/schema.ts";
import type { Recognition } from "../index.ts";
import {
  connectNode,
  createStore,
  databaseBackends,
  enrolDemoPerson,
  expectJson,
  type Harness,
  nextEvent,
  registerNode,
  sealTemplate,
  startHarness,
  type TestNode,
} from "../testing/harness.ts";

const enrol = (h: Harness, displayName: string, photos: string[], consentScope: string) =>
  enrolDemoPerson(h, displayName, photos, { consentScope });

/** What a members-only node sees on its own topics, in arrival order. */
interface Seen {
  desired: DesiredState | undefined;
  /** undefined: withdrawn (empty retained payload) */
  galleries: (EdgeGallery | undefined)[];
  commands: Command[];
  order: string[];
}

async function nodeSession(
  node: TestNode,
  identity: KeyPair = node.signingKey,
): Promise<{ client: MqttClient; seen: Seen }> {
  const client = await connectNode(node);
  const seen: Seen = { desired: undefined, galleries: [], commands: [], order: [] };
  client.on("message", (topic, payload) => {
    const t = parseTopic(topic);
    if (t?.name === "desired" && payload.length > 0) seen.desired = decodeMessage("desired", topic, payload);
    if (t?.name === "gallery") {
      seen.galleries.push(payload.length === 0 ? undefined : decodeMessage("gallery", topic, payload));
      seen.order.push("gallery");
    }
    if (t?.name === "command") {
      seen.commands.push(decodeMessage("command", topic, payload));
      seen.order.push("command");
    }
  });
  await client.subscribeAsync(
    [topicFor("desired", node.nodeId), topicFor("gallery", node.nodeId), topicFor("command", node.nodeId)],
    { qos: 1 },
  );
  // the node's retained status with its sealing key, attested by `identity`
  const sealing = nodeSealingKeyPair(node.signingKey);
  await client.publishAsync(
    topicFor("status", node.nodeId),
    encodeMessage("status", {
      nodeId: node.nodeId,
      online: true,
      ts: Date.now(),
      sealingKey: { publicKey: sealing.publicKey, sig: attestSealingKey(node.nodeId, sealing.publicKey, identity) },
    }),
    { qos: 1, retain: true },
  );
  return { client, seen };
}

/** Opens a gallery the way the node does: orchestrator signature from the desired state, the node's own key. */
function openGallery(g: EdgeGallery, node: TestNode, desired: DesiredState | undefined): string[] {
  const plaintext = open(
    g,
    edgeGalleryHeader(g),
    nodeSealingKeyPair(node.signingKey),
    desired?.gallerySigningKey ?? "",
  );
  return [...new Set(decodeEdgeGallery(plaintext).map((e) => e.personId))].sort();
}

const backends = databaseBackends;

for (const backend of backends) {
  describe(`members-only edge galleries on ${backend.name}`, () => {
    let h: Harness;
    let storeId: string;
    let otherStore: string;
    const people: Record<string, string> = {};

    beforeAll(async () => {
      h = await startHarness({ databaseUrl: backend.url(), edgeGalleryPollMs: 300 });
      storeId = await createStore(h);
      otherStore = await createStore(h, undefined, "Glance Leeds");
      await expectJson(
        await h.api(`/api/stores/${storeId}`, { method: "PATCH", json: { privacyMode: "members-only" } }),
        200,
      );
      people.lin = (await enrol(h, "Lin-Manuel Miranda", ["enroll/lin_manuel_miranda/1.png"], storeId)).personId;
      people.obama = (
        await enrol(h, "Barack Obama", ["enroll/barack_obama/1.jpg", "enroll/barack_obama/2.jpg"], "all-stores")
      ).personId;
      people.kit = (await enrol(h, "Kit Harington", ["enroll/kit_harington/1.jpg"], otherStore)).personId;
    }, 180_000);

    afterAll(async () => {
      await h?.close();
    });

    it("sends a members-only node its store's consented members, sealed to its key, signed by the orchestrator; nothing on a forged key", async () => {
      const node = await registerNode(h, storeId);
      // a status whose sealing key is not signed by the registered identity gets no gallery
      const forged = await nodeSession(node, generateSigningKeyPair());
      await new Promise((r) => setTimeout(r, 1000));
      expect(forged.seen.galleries.filter((g) => g !== undefined)).toEqual([]);
      await forged.client.endAsync();

      const { client, seen } = await nodeSession(node);
      await expect.poll(() => seen.galleries.at(-1), { timeout: 10_000 }).toBeDefined();
      const g = seen.galleries.at(-1) as EdgeGallery;
      expect(g).toMatchObject({
        nodeId: node.nodeId,
        storeId,
        members: 3,
        recipient: nodeSealingKeyPair(node.signingKey).publicKey,
      });
      expect(seen.desired?.privacyMode).toBe("members-only");
      // Lin (this store) and Obama (all stores, two templates); Kit consented to another store only
      expect(openGallery(g, node, seen.desired)).toEqual([people.lin, people.obama].sort());
      // no name anywhere in the message
      expect(JSON.stringify(g)).not.toMatch(/Miranda|Obama|Harington/);
      // sealed to this node: another node's key opens nothing
      expect(() =>
        open(
          g,
          edgeGalleryHeader(g),
          nodeSealingKeyPair(generateSigningKeyPair()),
          seen.desired?.gallerySigningKey ?? "",
        ),
      ).toThrow(expect.objectContaining({ code: "DECRYPT_FAILED" }));

      // a new enrolment in the store reaches the node by itself
      people.rose = (await enrol(h, "Rose Leslie", ["enroll/rose_leslie/1.jpg"], storeId)).personId;
      await expect
        .poll(
          () => {
            const last = seen.galleries.at(-1);
            return last ? openGallery(last, node, seen.desired) : [];
          },
          { timeout: 10_000 },
        )
        .toEqual([people.lin, people.obama, people.rose].sort());
      expect((seen.galleries.at(-1) as EdgeGallery).version).toBeGreaterThan(g.version);

      // a consent with an end: the node is told when, so it drops the member then even if no new gallery reaches it
      const ends = new Date(Date.now() + 3_600_000);
      const biden = (
        await enrolDemoPerson(h, "Joe Biden", ["enroll/joe_biden/1.jpg"], {
          consentScope: storeId,
          consentExpiresAt: ends.toISOString(),
        })
      ).personId;
      const entries = async () => {
        const last = seen.galleries.at(-1) as EdgeGallery;
        const plaintext = open(
          last,
          edgeGalleryHeader(last),
          nodeSealingKeyPair(node.signingKey),
          seen.desired?.gallerySigningKey ?? "",
        );
        return decodeEdgeGallery(plaintext);
      };
      await expect
        .poll(async () => (await entries()).some((e) => e.personId === biden), { timeout: 10_000 })
        .toBe(true);
      const until = new Map((await entries()).map((e) => [e.personId, e.until]));
      expect(until.get(biden)).toBe(ends.getTime());
      // open-ended consents carry no end
      expect(until.get(people.lin as string)).toBeUndefined();
      expect(until.get(people.obama as string)).toBeUndefined();
      await client.endAsync();
    }, 120_000);

    it("erasure leaves no matchable or readable template anywhere: rows, index, and the edge gallery (new gallery first, then an acknowledged command)", async () => {
      const node = await registerNode(h, storeId);
      const { client, seen } = await nodeSession(node);
      await expect
        .poll(() => seen.galleries.filter((g) => g !== undefined).length, { timeout: 10_000 })
        .toBeGreaterThan(0);
      const before = seen.galleries.at(-1) as EdgeGallery;
      expect(openGallery(before, node, seen.desired)).toContain(people.lin);
      // his face as the node would send it: the template the gallery holds for him
      const linEntry = decodeEdgeGallery(
        open(
          before,
          edgeGalleryHeader(before),
          nodeSealingKeyPair(node.signingKey),
          seen.desired?.gallerySigningKey ?? "",
        ),
      ).find((e) => e.personId === people.lin);
      const linFace = decodeEmbedding(linEntry?.embedding ?? new Uint8Array());
      let seq = 0;
      const probe = async (): Promise<Recognition> => {
        seq++;
        const t = sealTemplate({ node, seq, embedding: linFace, recipient: h.orch.sealingKey, space: before.space });
        const seenBy = nextEvent<Recognition>(h.orch.events, "recognition", (r) => r.nodeId === node.nodeId);
        await client.publishAsync(topicFor("template", node.nodeId), encodeMessage("template", t), { qos: 1 });
        return seenBy;
      };
      expect((await probe()).personId).toBe(people.lin);

      expect((await h.api(`/api/people/${people.lin}`, { method: "DELETE" })).status).toBe(204);
      await expect.poll(() => seen.commands.length, { timeout: 10_000 }).toBe(1);
      const command = seen.commands[0] as Command;
      expect(command).toMatchObject({ kind: "erase-member", personId: people.lin });
      // the gallery without him arrived before the command
      const galleryAt = seen.order.lastIndexOf("gallery");
      expect(galleryAt).toBeGreaterThanOrEqual(0);
      expect(galleryAt).toBeLessThan(seen.order.indexOf("command"));
      // no index hit any more
      expect((await probe()).personId).toBeNull();
      const after = seen.galleries.at(-1) as EdgeGallery;
      expect(after.version).toBeGreaterThan(before.version);
      expect(openGallery(after, node, seen.desired)).not.toContain(people.lin);
      expect(after.ts).toBeLessThanOrEqual(command.ts + 1000);

      // the node acknowledges; the erasure is complete on it (the first test's node, offline, still owes its ack)
      await client.publishAsync(
        topicFor("ack", node.nodeId),
        encodeMessage("ack", { commandId: command.id, nodeId: node.nodeId, ts: Date.now(), ok: true }),
        { qos: 1 },
      );
      await expect
        .poll(
          async () =>
            (await expectJson<{ pending: string[] }>(await h.api(`/api/people/${people.lin}/erasure`), 200)).pending,
          {
            timeout: 5000,
          },
        )
        .not.toContain(node.nodeId);
      await h.orch.stop();
      const database = await openDatabase({ dataDir: h.dataDir, databaseUrl: h.databaseUrl });
      try {
        const { db } = database;
        expect(
          await db
            .select()
            .from(templates)
            .where(eq(templates.personId, people.lin as string)),
        ).toEqual([]);
        expect(
          await db
            .select()
            .from(personKeys)
            .where(eq(personKeys.personId, people.lin as string)),
        ).toEqual([]);
        const acks = await db
          .select()
          .from(edgeErasures)
          .where(eq(edgeErasures.personId, people.lin as string));
        expect(acks.find((a) => a.nodeId === node.nodeId)).toMatchObject({ ok: true, ackedAt: expect.any(Date) });
      } finally {
        await database.close();
        await h.restart();
      }
      // after a restart the node is sent a gallery again (from its recorded key), still without him
      await client.endAsync();
      // the restarted broker listens on a new port
      const again = await nodeSession({ ...node, mqtt: { ...node.mqtt, url: h.orch.mqttUrl } });
      await expect
        .poll(() => again.seen.galleries.filter((g) => g !== undefined).length, { timeout: 10_000 })
        .toBeGreaterThan(0);
      expect(openGallery(again.seen.galleries.at(-1) as EdgeGallery, node, again.seen.desired)).not.toContain(
        people.lin,
      );
      await again.client.endAsync();
    }, 120_000);

    it("withdraws the gallery when the store leaves members-only", async () => {
      const node = await registerNode(h, storeId);
      const { client, seen } = await nodeSession(node);
      await expect
        .poll(() => seen.galleries.filter((g) => g !== undefined).length, { timeout: 10_000 })
        .toBeGreaterThan(0);
      await expectJson(
        await h.api(`/api/stores/${storeId}`, { method: "PATCH", json: { privacyMode: "visitor" } }),
        200,
      );
      await expect.poll(() => seen.desired?.privacyMode, { timeout: 10_000 }).toBe("visitor");
      await expect
        .poll(() => seen.galleries.length > 0 && seen.galleries.at(-1) === undefined, { timeout: 10_000 })
        .toBe(true);
      await client.endAsync();
    }, 60_000);
  });
}
