-- The latest prediction of a game is found through the primary key
-- (game_id, model_version): a game has one row per model version, so the
-- sort is over a handful of rows. A second index on (game_id, predicted_at)
-- only cost every upsert an extra index write (about a fifth of the stream
-- path's Postgres time in benches/RESULTS.md).
DROP INDEX IF EXISTS predictions_game_latest;
