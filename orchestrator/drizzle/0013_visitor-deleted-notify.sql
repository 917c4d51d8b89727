-- Every orchestrator instance holds the live visitor templates of its space in memory (visitors/visitors.ts). A
-- visitor key deleted by any instance (an erasure's look-alikes, a store leaving visitor mode, retention) or by hand
-- is announced, after commit, so each instance drops that template at once instead of matching it until restart.
CREATE OR REPLACE FUNCTION glance_visitor_deleted() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('glance_visitor_deleted', OLD.visitor_id);
  RETURN OLD;
END;
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER visitor_keys_deleted AFTER DELETE ON visitor_keys FOR EACH ROW EXECUTE FUNCTION glance_visitor_deleted();
