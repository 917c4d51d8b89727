-- Erasure and consent withdrawal now de-identify the person's visits and plays (privacy/erase.ts): person_id is
-- emptied and the subject they were deduplicated on ("person:<id>") becomes "erased:<row id>", so the rows keep their
-- counts but no longer link one visit of the person to another. Rows of people erased before this kept their
-- "person:<id>" subject (only person_id was emptied, by the foreign key): they are de-identified here.
UPDATE "visits" SET "subject" = 'erased:' || "id" WHERE "person_id" IS NULL AND "subject" LIKE 'person:%';
--> statement-breakpoint
UPDATE "plays" SET "subject" = 'erased:' || "id" WHERE "person_id" IS NULL AND "subject" LIKE 'person:%';
