-- Every orchestrator instance holds the live visitor templates of its space in memory (visitors/visitors.ts). A
-- visitor key deleted by any instance (an erasure's look-alikes, a store leaving visitor mode, retention) or by hand
-- is announced, after commit, so each instance drops that template at once instead of matching it until restart.
-- One trigger function serves every such announcement: the channel is its first argument, the column whose value
-- is sent its second. Person keys (migration 0007, recognition/key-cache.ts) move onto it.
CREATE OR REPLACE FUNCTION glance_row_deleted() RETURNS trigger AS $$
BEGIN PERFORM pg_notify(TG_ARGV[0], to_jsonb(OLD) ->> TG_ARGV[1]); RETURN OLD; END;
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER visitor_keys_deleted AFTER DELETE ON visitor_keys
  FOR EACH ROW EXECUTE FUNCTION glance_row_deleted('glance_visitor_deleted', 'visitor_id');
--> statement-breakpoint
DROP TRIGGER person_keys_deleted ON person_keys;
--> statement-breakpoint
CREATE TRIGGER person_keys_deleted AFTER DELETE ON person_keys
  FOR EACH ROW EXECUTE FUNCTION glance_row_deleted('glance_person_key_deleted', 'person_id');
--> statement-breakpoint
DROP FUNCTION glance_person_key_deleted();
