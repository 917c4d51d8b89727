ALTER TABLE "people" ADD COLUMN "external_key" text;--> statement-breakpoint
CREATE UNIQUE INDEX "people_external_key_idx" ON "people" USING btree ("external_key");