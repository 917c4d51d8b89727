/**
 * Test fixture: a producer that queues sealed templates as fast as the disk allows and reports each one once it is
 * durable ("queued <seq>"), until it is killed. Used to kill a node mid-queue.
 *   tsx enqueue-child.fixture.ts <queue dir> <nodeId>
 */
import { encodeMessage } from "@glance/shared";
import { DiskQueue } from "./disk-queue.ts";
import { sealedTemplate } from "./test-helpers.ts";

const [dir, nodeId] = process.argv.slice(2) as [string, string];
const queue = DiskQueue.open(dir, { segmentBytes: 16 * 1024 });
for (let seq = 0; ; seq++) {
  await queue.append("template", encodeMessage("template", sealedTemplate(nodeId, seq)));
  process.stdout.write(`queued ${seq}\n`);
}
