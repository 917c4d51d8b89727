-- Every orchestrator instance caches which people still hold a data key (the member-match check); a key deleted by
-- any instance, or by hand, is announced so each instance drops that person at once (recognition/key-cache.ts).
CREATE OR REPLACE FUNCTION glance_person_key_deleted() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('glance_person_key_deleted', OLD.person_id);
  RETURN OLD;
END;
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER person_keys_deleted AFTER DELETE ON person_keys FOR EACH ROW EXECUTE FUNCTION glance_person_key_deleted();
