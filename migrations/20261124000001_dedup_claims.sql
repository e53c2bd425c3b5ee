-- Claims in the dedup's exact store. A collector replica claims a new key
-- before publishing its record and confirms it after: a pending claim has a
-- lease (claimed_until), a confirmed key has none. When a replica dies between
-- claim and publish, its lease runs out and the record can be claimed again,
-- so it is not lost. Adding a nullable column without a default rewrites
-- nothing.
ALTER TABLE dedup_keys ADD COLUMN claimed_until timestamptz;
