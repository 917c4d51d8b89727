CREATE TABLE "visitor_keys" (
	"visitor_id" text PRIMARY KEY NOT NULL,
	"wrapped_key" "bytea" NOT NULL,
	"iv" "bytea" NOT NULL,
	"master_key_id" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "visitors" (
	"id" text PRIMARY KEY NOT NULL,
	"store_id" text NOT NULL,
	"space" text NOT NULL,
	"ciphertext" "bytea" NOT NULL,
	"iv" "bytea" NOT NULL,
	"first_seen_at" timestamp with time zone NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "stores" ADD COLUMN "privacy_mode" text DEFAULT 'visitor' NOT NULL;--> statement-breakpoint
ALTER TABLE "stores" ADD COLUMN "visitor_retention_days" integer;--> statement-breakpoint
ALTER TABLE "visits" ADD COLUMN "visitor_id" text;--> statement-breakpoint
ALTER TABLE "visits" ADD COLUMN "visitor" text;--> statement-breakpoint
ALTER TABLE "visits" ADD COLUMN "subject" text;--> statement-breakpoint
ALTER TABLE "visits" ADD COLUMN "dedupe_window" bigint;--> statement-breakpoint
ALTER TABLE "visitor_keys" ADD CONSTRAINT "visitor_keys_visitor_id_visitors_id_fk" FOREIGN KEY ("visitor_id") REFERENCES "public"."visitors"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "visitors" ADD CONSTRAINT "visitors_store_id_stores_id_fk" FOREIGN KEY ("store_id") REFERENCES "public"."stores"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "visitors_store_idx" ON "visitors" USING btree ("store_id");--> statement-breakpoint
CREATE INDEX "visitors_expires_idx" ON "visitors" USING btree ("expires_at");--> statement-breakpoint
ALTER TABLE "visits" ADD CONSTRAINT "visits_visitor_id_visitors_id_fk" FOREIGN KEY ("visitor_id") REFERENCES "public"."visitors"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "visits_visitor_idx" ON "visits" USING btree ("visitor_id");--> statement-breakpoint
CREATE UNIQUE INDEX "visits_dedupe_idx" ON "visits" USING btree ("store_id","subject","dedupe_window");