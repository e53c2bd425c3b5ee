-- Cheaper writes on the collector's hot path (measured in
-- benches/RESULTS.md, 2026-11-24):
-- * games: every new version of a game updates its row. With free room in
--   each page the update is HOT (same page, no index entries: the indexed
--   columns do not change), and page pruning reclaims the old versions
--   without waiting for VACUUM. Applies to pages written from now on.
-- * dedup_keys: the purge is the one reader of seen_at, in insertion order:
--   a BRIN index serves it at a fraction of a B-tree's cost per insert.
ALTER TABLE games SET (fillfactor = 70);
DROP INDEX IF EXISTS dedup_keys_seen_at;
CREATE INDEX dedup_keys_seen_at_brin ON dedup_keys USING brin (seen_at);
