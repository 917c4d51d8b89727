CREATE TABLE "footfall" (
	"store_id" text NOT NULL,
	"camera_id" text NOT NULL,
	"hour" timestamp with time zone NOT NULL,
	"tracks" integer NOT NULL,
	"dwell_ms" bigint NOT NULL,
	CONSTRAINT "footfall_store_id_camera_id_hour_pk" PRIMARY KEY("store_id","camera_id","hour")
);
--> statement-breakpoint
CREATE TABLE "footfall_attributes" (
	"store_id" text NOT NULL,
	"hour" timestamp with time zone NOT NULL,
	"attribute" text NOT NULL,
	"value" text NOT NULL,
	"tracks" integer NOT NULL,
	CONSTRAINT "footfall_attributes_store_id_hour_attribute_value_pk" PRIMARY KEY("store_id","hour","attribute","value")
);
--> statement-breakpoint
ALTER TABLE "stores" ADD COLUMN "attributes" boolean DEFAULT false NOT NULL;