-- Members-only edge galleries follow the consented members of each store (edge/edge-galleries.ts). Every instance
-- listens here instead of re-reading every template id in scope on a timer: a statement that changes templates,
-- consents, person keys (erasure) or stores (privacy mode) announces it once per statement, after commit, to every
-- instance on the same database. Not on nodes: those rows change with every template (last_seq, last_seen_at).
CREATE OR REPLACE FUNCTION glance_edge_gallery_changed() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('glance_edge_gallery_changed', TG_TABLE_NAME);
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER templates_edge_gallery_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON templates FOR EACH STATEMENT EXECUTE FUNCTION glance_edge_gallery_changed();
--> statement-breakpoint
CREATE TRIGGER consents_edge_gallery_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON consents FOR EACH STATEMENT EXECUTE FUNCTION glance_edge_gallery_changed();
--> statement-breakpoint
CREATE TRIGGER person_keys_edge_gallery_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON person_keys FOR EACH STATEMENT EXECUTE FUNCTION glance_edge_gallery_changed();
--> statement-breakpoint
CREATE TRIGGER stores_edge_gallery_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON stores FOR EACH STATEMENT EXECUTE FUNCTION glance_edge_gallery_changed();
