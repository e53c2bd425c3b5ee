-- What only the simulator knows: each simulated game's true home-win
-- probability (the logistic model that drew its result). A model's Brier
-- score on these games can be compared with the oracle's, the best possible.
CREATE TABLE game_truth (
    game_id       text PRIMARY KEY,
    source        text             NOT NULL,
    home_win_prob double precision NOT NULL CHECK (home_win_prob >= 0 AND home_win_prob <= 1),
    recorded_at   timestamptz      NOT NULL DEFAULT now()
);
