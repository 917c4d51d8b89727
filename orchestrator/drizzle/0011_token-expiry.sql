-- API tokens get a lifetime (auth/token-lifetime.ts): refused from expires_at on, like a revoked token; null never
-- expires. Tokens issued before this get their role's default lifetime counted from the upgrade, so none stops
-- working at once and none is left unbounded. hq-admin rows stay null: the bootstrap admin token (dataDir/admin-token)
-- cannot be told apart from an issued one here; revoke issued hq-admin tokens by hand and issue new ones.
ALTER TABLE "api_tokens" ADD COLUMN "expires_at" timestamp with time zone;
--> statement-breakpoint
UPDATE "api_tokens" SET "expires_at" = now() + CASE "role"
  WHEN 'signage-screen' THEN interval '365 days'
  WHEN 'store-manager' THEN interval '90 days'
  ELSE interval '30 days'
END
WHERE "role" <> 'hq-admin' AND "revoked_at" IS NULL;
