-- hq-admin tokens issued before migration 0011 were left without an expiry, because the bootstrap admin token
-- (dataDir/admin-token, which never expires) could not be told apart from them. Its row is labelled
-- 'bootstrap admin', a label the API now refuses for tokens it issues; every other live hq-admin token without an
-- expiry gets the role's default lifetime (30 days) counted from the upgrade, so none stops working at once.
UPDATE "api_tokens" SET "expires_at" = now() + interval '30 days'
WHERE "role" = 'hq-admin' AND "expires_at" IS NULL AND "revoked_at" IS NULL AND "label" <> 'bootstrap admin';
