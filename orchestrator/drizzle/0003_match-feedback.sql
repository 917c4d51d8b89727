CREATE TABLE "match_feedback" (
	"id" text PRIMARY KEY NOT NULL,
	"visit_id" text NOT NULL,
	"person_id" text NOT NULL,
	"store_id" text NOT NULL,
	"node_id" text NOT NULL,
	"track_id" text NOT NULL,
	"actor" text NOT NULL,
	"note" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "visits" ADD COLUMN "track_id" text;--> statement-breakpoint
ALTER TABLE "match_feedback" ADD CONSTRAINT "match_feedback_person_id_people_id_fk" FOREIGN KEY ("person_id") REFERENCES "public"."people"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "match_feedback_person_idx" ON "match_feedback" USING btree ("person_id");