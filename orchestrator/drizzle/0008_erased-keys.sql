CREATE TABLE "erased_keys" (
	"key_tag" text PRIMARY KEY NOT NULL,
	"erased_at" timestamp with time zone NOT NULL
);
