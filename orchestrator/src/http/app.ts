import { Hono } from "hono";
import { z } from "zod";
import { auditAdminActions, auditRouter } from "../audit/http.ts";
import { feedbackRouter } from "../feedback/http.ts";
import type { GraphTuning } from "../gallery/space-index.ts";
import type { Services } from "../services.ts";
import { signagePage } from "../signage/page.ts";
import { assertScreenAccess, type Env, requireRole } from "./auth.ts";
import { errorResponse } from "./errors.ts";
import { openApiDocument } from "./openapi.ts";
import { nodesRouter } from "./routes/nodes.ts";
import { peopleRouter } from "./routes/people.ts";
import { promotionsRouter } from "./routes/promotions.ts";
import { findScreen, screensRouter } from "./routes/screens.ts";
import { storesRouter } from "./routes/stores.ts";
import { tokensRouter } from "./routes/tokens.ts";
import { visitsRouter } from "./routes/visits.ts";
import { valid } from "./validate.ts";

/** What /api/metrics says about the gallery graph: its breadth, how it was chosen, what it measured. */
function graphHealth(t: GraphTuning | undefined) {
  if (!t) return null;
  const { ef, source, templates, recall, target, reached, probes, ms, pending } = t;
  return {
    ef,
    source,
    templates,
    recall,
    target,
    reached,
    probes,
    ms: ms === undefined ? undefined : Math.round(ms),
    // a measurement is running in the background: `ef` is the previous one's (or the widest) until it ends
    pending: pending ?? false,
  };
}

/** Every route, mounted in one place. */
export function createApp(s: Services) {
  const app = new Hono<Env>();
  app.onError(errorResponse(s.logger));
  app.notFound((c) => c.json({ code: "NOT_FOUND", message: `No route ${c.req.method} ${c.req.path}.` }, 404));

  const openapi = openApiDocument();
  app.get("/api/openapi.json", (c) => c.json(openapi));
  // liveness and the embedding space only: how many people are enrolled and the thresholds they are matched at are
  // for the roles that read metrics, not for whoever can reach the port
  // a gallery whose thread died recognises nobody: unhealthy, so that a supervisor restarts the orchestrator
  app.get("/api/health", (c) =>
    s.gallery.failure
      ? c.json({ ok: false, space: s.gallery.space, reason: "gallery unavailable" }, 503)
      : c.json({ ok: true, space: s.gallery.space }),
  );
  app.get("/api/metrics", requireRole(s.db, ["hq-admin", "auditor", "technician"]), (c) => {
    const { threshold, margin, targetFar, expectedFar, scale, clamped, identities } = s.gallery.openSet;
    return c.json({
      ingest: s.metrics(),
      gallery: s.gallery.size,
      // the open-set rule in force: what a stranger's chance of being taken for some member is at this size
      openSet: { threshold, margin, scale, targetFar, expectedFar, clamped, identities },
      // the gallery graph's search breadth and the recall@1 it measured (null: below the ANN threshold, exact search)
      graph: graphHealth(s.gallery.graphTuning),
      // the gallery's own thread (null when it runs on the main thread): busy and idle ms since start
      galleryThread: s.gallery.utilization?.() ?? null,
    });
  });
  app.use("/api/*", auditAdminActions(s));
  app.route("/api/audit", auditRouter(s));
  app.route("/api/stores", storesRouter(s));
  app.route("/api/screens", screensRouter(s));
  app.route("/api/nodes", nodesRouter(s));
  app.route("/api/people", peopleRouter(s));
  app.route("/api/promotions", promotionsRouter(s));
  app.route("/api/visits", visitsRouter(s));
  app.route("/api/visits", feedbackRouter(s));
  app.route("/api/tokens", tokensRouter(s));

  app.get(
    "/signage/:screenId",
    requireRole(s.db, ["signage-screen"], { allowQueryToken: true }),
    valid("param", z.object({ screenId: z.string().min(1).max(64) })),
    async (c) => {
      const { screenId } = c.req.valid("param");
      assertScreenAccess(c.get("principal"), screenId);
      const screen = await findScreen(s.db, screenId);
      c.header("Cache-Control", "no-store");
      c.header("Referrer-Policy", "no-referrer");
      return c.html(signagePage(screen));
    },
  );
  return app;
}
