/**
 * One error class with stable codes. Codes are part of the public contract (API responses, ingest metrics,
 * logs), so they never change meaning; messages say what to do next.
 */
export const ErrorCodes = [
  // ingest / envelope
  "PAYLOAD_NOT_JSON",
  "PAYLOAD_INVALID",
  "PAYLOAD_TOO_LARGE",
  "TOPIC_UNKNOWN",
  "TOPIC_MISMATCH",
  "NODE_UNKNOWN",
  "NODE_REVOKED",
  "SIGNATURE_INVALID",
  "DECRYPT_FAILED",
  "REPLAYED_SEQUENCE",
  "SPACE_UNKNOWN",
  "KEY_UNKNOWN",
  // models
  "MODEL_NOT_FOUND",
  "MODEL_CORRUPT",
  "MODEL_SIGNATURE_INVALID",
  "MODEL_SHAPE_MISMATCH",
  // images / enrolment
  "IMAGE_UNREADABLE",
  "NO_FACE_FOUND",
  "MULTIPLE_FACES",
  "FACE_QUALITY_LOW",
  "CONSENT_REQUIRED",
  // api
  "NOT_FOUND",
  "UNAUTHORIZED",
  "FORBIDDEN",
  "VALIDATION_FAILED",
  "CONFLICT",
  // config / runtime
  "CONFIG_INVALID",
  "CAMERA_UNAVAILABLE",
  "INTERNAL",
] as const;
export type ErrorCode = (typeof ErrorCodes)[number];

export class GlanceError extends Error {
  override readonly name = "GlanceError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  toJSON(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details
      ? { code: this.code, message: this.message, details: this.details }
      : { code: this.code, message: this.message };
  }
}

export function isGlanceError(e: unknown, code?: ErrorCode): e is GlanceError {
  return e instanceof GlanceError && (code === undefined || e.code === code);
}
