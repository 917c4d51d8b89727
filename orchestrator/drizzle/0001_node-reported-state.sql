ALTER TABLE "nodes" ADD COLUMN "reported" jsonb;--> statement-breakpoint
ALTER TABLE "nodes" ADD COLUMN "last_seen_at" timestamp with time zone;