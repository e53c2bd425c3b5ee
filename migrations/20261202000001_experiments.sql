-- Model experiments (docs/experiments.md): a champion (the active version)
-- against challengers that serve a share of the games, and shadows that
-- score every game without serving any.

CREATE TABLE experiments (
    id           bigserial PRIMARY KEY,
    model_name   text        NOT NULL,
    mode         text        NOT NULL CHECK (mode IN ('split', 'shadow', 'canary')),
    status       text        NOT NULL
        CHECK (status IN ('running', 'paused', 'promoted', 'stopped', 'inconclusive')),
    -- The canary's current step (an index into settings.canary_steps).
    stage        integer     NOT NULL DEFAULT 0 CHECK (stage >= 0),
    -- alpha, min_outcomes, max_outcomes, canary steps, guards, auto_promote.
    settings     jsonb       NOT NULL,
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    ended_at     timestamptz,
    -- Outcomes seen when the current canary step began.
    stage_started_outcomes bigint NOT NULL DEFAULT 0
);
-- One experiment per model name at a time, enforced by the database.
CREATE UNIQUE INDEX experiments_one_live ON experiments (model_name)
    WHERE status IN ('running', 'paused');

CREATE TABLE experiment_variants (
    experiment_id bigint NOT NULL REFERENCES experiments (id),
    -- The name a client sees in `variant` (`champion`, `challenger`, ...).
    variant       text   NOT NULL,
    model_version text   NOT NULL,
    role          text   NOT NULL CHECK (role IN ('champion', 'challenger', 'shadow')),
    -- The share of games it serves, in [0, 1]; the champion serves the rest.
    weight        double precision NOT NULL CHECK (weight >= 0 AND weight <= 1),
    -- A challenger the test stopped serves no more games.
    dropped       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (experiment_id, variant),
    UNIQUE (experiment_id, model_version)
);

-- Every variant's prediction for each game of a running experiment: the
-- one served, and what the others would have said. Paired on the same
-- games, they are what the trainer judges the experiment on.
CREATE TABLE experiment_predictions (
    experiment_id bigint      NOT NULL REFERENCES experiments (id),
    game_id       text        NOT NULL,
    variant       text        NOT NULL,
    model_version text        NOT NULL,
    home_win_prob real        NOT NULL CHECK (home_win_prob >= 0 AND home_win_prob <= 1),
    served        boolean     NOT NULL,
    predicted_at  timestamptz NOT NULL,
    PRIMARY KEY (experiment_id, game_id, variant)
);
CREATE INDEX experiment_predictions_game ON experiment_predictions (game_id);

-- What the sequential test decided, and on what evidence.
CREATE TABLE experiment_decisions (
    id            bigserial PRIMARY KEY,
    experiment_id bigint      NOT NULL REFERENCES experiments (id),
    -- promote, stop, step, drop, pause, resume, inconclusive, create.
    action        text        NOT NULL,
    variant       text,
    reason        text        NOT NULL,
    -- n, effect size, interval, per-variant scores.
    evidence      jsonb       NOT NULL DEFAULT '{}',
    decided_by    text        NOT NULL,
    decided_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX experiment_decisions_experiment ON experiment_decisions (experiment_id, id);

-- Which variant of an experiment served a prediction (NULL outside one).
ALTER TABLE predictions ADD COLUMN variant text;
