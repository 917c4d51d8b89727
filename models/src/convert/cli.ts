/**
 * Convert one TF.js graph model to ONNX:
 *   tsx models/src/convert/cli.ts <model.json> <out.onnx> [--batch N] [--outputs a:0,b:0]
 * Prints the input/output names and the op lists as JSON on stdout.
 */
import { writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { convertTfjsModel } from "./convert.ts";

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { batch: { type: "string" }, outputs: { type: "string" } },
});
const [modelJson, out] = positionals;
if (!modelJson || !out) {
  process.stderr.write(
    "usage: tsx models/src/convert/cli.ts <model.json> <out.onnx> [--batch N] [--outputs a:0,b:0]\n",
  );
  process.exit(2);
}
const converted = await convertTfjsModel(modelJson, {
  batch: values.batch ? Number(values.batch) : undefined,
  outputs: values.outputs ? values.outputs.split(",") : undefined,
});
await writeFile(out, converted.onnx);
const { onnx: bytes, ...report } = converted;
process.stdout.write(`${JSON.stringify({ file: out, bytes: bytes.byteLength, ...report }, null, 2)}\n`);
