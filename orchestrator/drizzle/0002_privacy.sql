CREATE TABLE "audit_log" (
	"seq" bigint PRIMARY KEY NOT NULL,
	"at" timestamp with time zone NOT NULL,
	"actor" text NOT NULL,
	"action" text NOT NULL,
	"subject" text,
	"details" jsonb NOT NULL,
	"prev_hash" text NOT NULL,
	"hash" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "edge_erasures" (
	"id" text PRIMARY KEY NOT NULL,
	"person_id" text NOT NULL,
	"node_id" text NOT NULL,
	"sent_at" timestamp with time zone NOT NULL,
	"acked_at" timestamp with time zone,
	"ok" boolean,
	"error" text
);
--> statement-breakpoint
CREATE TABLE "person_keys" (
	"person_id" text PRIMARY KEY NOT NULL,
	"version" integer DEFAULT 1 NOT NULL,
	"wrapped_key" "bytea" NOT NULL,
	"iv" "bytea" NOT NULL,
	"master_key_id" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "templates" ALTER COLUMN "embedding" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "templates" ADD COLUMN "ciphertext" "bytea";--> statement-breakpoint
ALTER TABLE "templates" ADD COLUMN "iv" "bytea";--> statement-breakpoint
ALTER TABLE "templates" ADD COLUMN "key_version" integer;--> statement-breakpoint
ALTER TABLE "person_keys" ADD CONSTRAINT "person_keys_person_id_people_id_fk" FOREIGN KEY ("person_id") REFERENCES "public"."people"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "edge_erasures_person_idx" ON "edge_erasures" USING btree ("person_id");