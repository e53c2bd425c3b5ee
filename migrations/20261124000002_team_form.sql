-- The form feature needs each team's last results (1 win, 0.5 draw, 0 loss,
-- oldest first), kept with its rating so a restarted collector computes the
-- same features. Existing rows start with no recent results (form 0.5).
ALTER TABLE team_ratings ADD COLUMN recent real[] NOT NULL DEFAULT '{}';
