-- The one schema of the stack. Every table is keyed by its natural key so that
-- every writer can upsert: a redelivered Kafka message never adds a row.

-- Games as the collector last saw them, with their feature vectors.
CREATE TABLE games (
    game_id           text PRIMARY KEY,
    sport             text        NOT NULL,
    league            text        NOT NULL,
    season            text        NOT NULL,
    home_team         text        NOT NULL,
    away_team         text        NOT NULL,
    scheduled_at      timestamptz NOT NULL,
    status            text        NOT NULL
        CHECK (status IN ('scheduled', 'in_progress', 'final', 'postponed')),
    features          real[]      NOT NULL,
    feature_set       text        NOT NULL,
    source            text        NOT NULL,
    source_updated_at timestamptz NOT NULL,
    produced_at       timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX games_scheduled_at ON games (scheduled_at);
CREATE INDEX games_sport_scheduled_at ON games (sport, scheduled_at);

-- Final results: the labels.
CREATE TABLE outcomes (
    game_id     text PRIMARY KEY,
    home_score  integer     NOT NULL CHECK (home_score >= 0),
    away_score  integer     NOT NULL CHECK (away_score >= 0),
    home_win    boolean     NOT NULL,
    final_at    timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outcomes_final_at ON outcomes (final_at);

-- The latest prediction of each model version for each game.
CREATE TABLE predictions (
    game_id           text        NOT NULL,
    model_version     text        NOT NULL,
    sport             text        NOT NULL,
    league            text        NOT NULL,
    home_team         text        NOT NULL,
    away_team         text        NOT NULL,
    scheduled_at      timestamptz NOT NULL,
    home_win_prob     real        NOT NULL CHECK (home_win_prob >= 0 AND home_win_prob <= 1),
    predicted_at      timestamptz NOT NULL,
    event_produced_at timestamptz,
    PRIMARY KEY (game_id, model_version)
);
CREATE INDEX predictions_game_latest ON predictions (game_id, predicted_at DESC);
CREATE INDEX predictions_model_version ON predictions (model_version, predicted_at);

-- The model registry: every version the trainer produced, and which is active.
CREATE TABLE models (
    model_name   text        NOT NULL,
    version      text        NOT NULL,
    artifact_uri text        NOT NULL,
    sha256       text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    feature_set  text        NOT NULL,
    n_features   integer     NOT NULL CHECK (n_features > 0),
    status       text        NOT NULL
        CHECK (status IN ('candidate', 'active', 'rejected', 'retired')),
    metrics      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz,
    PRIMARY KEY (model_name, version)
);
-- At most one active version per model name, enforced by the database.
CREATE UNIQUE INDEX models_one_active ON models (model_name) WHERE status = 'active';

-- Rolling evaluation of model versions, one row per evaluation.
CREATE TABLE model_metrics (
    model_name    text             NOT NULL,
    model_version text             NOT NULL,
    evaluated_at  timestamptz      NOT NULL,
    window_size   integer          NOT NULL,
    sample_count  bigint           NOT NULL,
    accuracy      double precision NOT NULL,
    brier         double precision NOT NULL,
    log_loss      double precision NOT NULL,
    calibration   jsonb            NOT NULL,
    PRIMARY KEY (model_name, model_version, evaluated_at)
);

-- Training runs, for the trainer's single-flight guard and its history.
CREATE TABLE training_runs (
    id                bigserial PRIMARY KEY,
    model_name        text        NOT NULL,
    trigger           text        NOT NULL,
    status            text        NOT NULL
        CHECK (status IN ('running', 'promoted', 'rejected', 'failed')),
    candidate_version text,
    details           jsonb       NOT NULL DEFAULT '{}',
    started_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz
);

-- Team ratings behind the features (Elo-style), updated once per outcome.
CREATE TABLE team_ratings (
    sport        text             NOT NULL,
    league       text             NOT NULL,
    team         text             NOT NULL,
    rating       double precision NOT NULL,
    games_played integer          NOT NULL DEFAULT 0,
    last_game_at timestamptz,
    updated_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (sport, league, team)
);
-- Which outcomes the ratings have absorbed: makes the update idempotent.
CREATE TABLE ratings_applied (
    game_id    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Where each collector source resumes after a restart.
CREATE TABLE source_checkpoints (
    source     text PRIMARY KEY,
    cursor     text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The exact store behind the bloom filter: a bloom hit is confirmed here
-- before a record is dropped as a duplicate.
CREATE TABLE dedup_keys (
    key     bytea PRIMARY KEY,
    seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dedup_keys_seen_at ON dedup_keys (seen_at);
