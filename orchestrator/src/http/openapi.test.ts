import { describe, expect, it } from "vitest";
import type { Services } from "../services.ts";
import { createApp } from "./app.ts";
import { openApiDocument } from "./openapi.ts";

/** `METHOD /path/{param}` for every handler hono has mounted (middleware entries are method ALL). */
function mountedRoutes(): string[] {
  // building the app only wires handlers; no service is touched until a request arrives
  const app = createApp({} as Services);
  const routes = app.routes
    .filter((r) => r.method !== "ALL")
    .map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, "{$1}")}`)
    .filter((r) => r !== "GET /api/openapi.json");
  return [...new Set(routes)].sort();
}

function documentedRoutes(): string[] {
  const doc = openApiDocument() as { paths: Record<string, Record<string, unknown>> };
  return Object.entries(doc.paths)
    .flatMap(([path, ops]) => Object.keys(ops).map((method) => `${method.toUpperCase()} ${path}`))
    .sort();
}

describe("OpenAPI document", () => {
  it("lists exactly the routes the server answers, so an integrator never meets an undocumented one", () => {
    expect(documentedRoutes()).toEqual(mountedRoutes());
  });
});
