import { type ErrorCode, GlanceError, isGlanceError } from "@glance/shared";
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Logger } from "pino";

const statusOf: Partial<Record<ErrorCode, ContentfulStatusCode>> = {
  NOT_FOUND: 404,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  VALIDATION_FAILED: 400,
  CONFLICT: 409,
  CONSENT_REQUIRED: 422,
  IMAGE_UNREADABLE: 422,
  NO_FACE_FOUND: 422,
  MULTIPLE_FACES: 422,
  FACE_QUALITY_LOW: 422,
  PAYLOAD_TOO_LARGE: 413,
};

/** GlanceError → {code, message, details?} with its status; anything unexpected → 500 INTERNAL, logged. */
export function errorResponse(logger: Logger) {
  return (error: Error, c: Context) => {
    if (isGlanceError(error)) return c.json(error.toJSON(), statusOf[error.code] ?? 500);
    if (error instanceof HTTPException) {
      const code: ErrorCode =
        error.status === 413 ? "PAYLOAD_TOO_LARGE" : error.status === 401 ? "UNAUTHORIZED" : "VALIDATION_FAILED";
      return c.json({ code, message: error.message || "Request rejected." }, error.status as ContentfulStatusCode);
    }
    logger.error({ err: error, path: c.req.path }, "request failed");
    return c.json(new GlanceError("INTERNAL", "Something went wrong on our side; it has been logged.").toJSON(), 500);
  };
}
