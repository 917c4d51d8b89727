/**
 * ROC curves as a PNG: a Vega-Lite spec rendered headless by Vega to SVG, rasterised by sharp. FAR on a log axis,
 * so points at FAR 0 (nothing accepted) are left out; the lowest measurable FAR is 1 / impostor pairs.
 */
import sharp from "sharp";
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import type { RocPoint } from "./metrics.ts";

export interface RocSeries {
  label: string;
  roc: readonly RocPoint[];
}

/** keep the curve's shape but not thousands of collinear points: one point per distinct (far, tar) step */
function thin(roc: readonly RocPoint[]): { far: number; tar: number }[] {
  const out: { far: number; tar: number }[] = [];
  for (const p of roc) {
    if (p.far <= 0) continue;
    const last = out[out.length - 1];
    if (last && last.tar === p.tar) {
      last.far = p.far;
      continue;
    }
    out.push({ far: p.far, tar: p.tar });
  }
  return out;
}

export function rocSpec(
  series: readonly RocSeries[],
  title: string | { text: string; subtitle: string },
  fars: readonly number[] = [1e-2, 1e-3],
): TopLevelSpec {
  const values = series.flatMap((s) => thin(s.roc).map((p) => ({ ...p, model: s.label })));
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title,
    width: 640,
    height: 420,
    background: "white",
    layer: [
      {
        data: { values },
        mark: { type: "line", interpolate: "step-after", strokeWidth: 2 },
        encoding: {
          x: {
            field: "far",
            type: "quantitative",
            scale: { type: "log", domain: [1e-4, 1] },
            title: "false accept rate (log)",
            axis: { format: "~e" },
          },
          y: { field: "tar", type: "quantitative", scale: { domain: [0, 1] }, title: "true accept rate" },
          color: {
            field: "model",
            type: "nominal",
            legend: { title: null, orient: "bottom-right", labelFontSize: 13, labelLimit: 600 },
          },
        },
      },
      {
        data: { values: fars.map((far) => ({ far })) },
        mark: { type: "rule", color: "#999", strokeDash: [2, 3] },
        encoding: { x: { field: "far", type: "quantitative" } },
      },
    ],
  };
}

export async function rocSvg(
  series: readonly RocSeries[],
  title: string | { text: string; subtitle: string },
): Promise<string> {
  const { spec } = compile(rocSpec(series, title));
  const view = new vega.View(vega.parse(spec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

export async function rocPng(
  series: readonly RocSeries[],
  title: string | { text: string; subtitle: string },
): Promise<Buffer> {
  const svg = await rocSvg(series, title);
  return sharp(Buffer.from(svg), { density: 144 }).png().toBuffer();
}
