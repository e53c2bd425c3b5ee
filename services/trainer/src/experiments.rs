//! Judging experiments (docs/experiments.md): each variant's scores on the
//! games every variant scored, the sequential test of each challenger or
//! shadow against the champion, and what follows from it (promote, stop a
//! variant, step a canary up, give up), each recorded with its evidence and
//! announced on `models` so that every predictor replica follows.

use std::sync::Arc;

use anyhow::Context as _;
use fantasy_messages::{ComparisonStanding, ExperimentStanding, SchemaVersion, VariantStanding};
use fantasy_model::Scores;
use fantasy_model::sequential::{self, Interval, Verdict};
use fantasy_registry::experiments::{Decision, PairedGame, Role, Status};
use fantasy_registry::{Experiment, ExperimentError, Experiments};
use serde::Serialize;

use crate::config::CALIBRATION_BUCKETS;
use crate::eval::calibration_table;
use crate::train::Trainer;

/// Who the test's decisions are recorded as.
pub const DECIDED_BY: &str = "trainer";

/// A challenger or shadow against the champion, on the games both scored.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Comparison {
    pub variant: String,
    /// Paired games.
    pub n: u64,
    /// The confidence sequence of the mean per-game log-loss difference
    /// (variant minus champion: below zero, the variant is better).
    pub interval: Option<Interval>,
    pub verdict: Verdict,
    /// Brier difference on the same games (variant minus champion).
    pub brier_diff: f64,
    /// Accuracy difference on the same games.
    pub accuracy_diff: f64,
    /// A guard that broke, if one did.
    pub guard: Option<String>,
}

/// Where an experiment stands now.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Standing {
    pub experiment_id: i64,
    /// Finished games the champion scored.
    pub outcomes: u64,
    /// Each variant's weight and scores on its finished games (log loss,
    /// Brier, accuracy, expected calibration error over 10 buckets, the
    /// reliability table).
    #[schema(value_type = Vec<Object>)]
    pub variants: Vec<VariantStanding>,
    pub comparisons: Vec<Comparison>,
}

fn scores_of(games: &[&PairedGame], variant: &str) -> Option<Scores> {
    Scores::of(
        games
            .iter()
            .filter_map(|g| prob(g, variant).map(|p| (p, g.home_win))),
        CALIBRATION_BUCKETS,
    )
}

fn prob(g: &PairedGame, variant: &str) -> Option<f64> {
    g.probs.iter().find(|(v, _)| v == variant).map(|(_, p)| *p)
}

/// The standing of `e` on `games` (its finished games, in order).
pub fn standing(e: &Experiment, games: &[PairedGame]) -> Standing {
    let champion = e.champion().map_or("champion", |c| c.name.as_str());
    let all: Vec<&PairedGame> = games.iter().collect();
    let variants = e
        .variants
        .iter()
        .filter_map(|v| {
            let s = scores_of(&all, &v.name)?;
            Some(VariantStanding {
                variant: v.name.clone(),
                version: v.version.clone(),
                role: v.role.as_str().into(),
                weight: v.weight,
                dropped: v.dropped,
                outcomes: s.count,
                accuracy: s.accuracy,
                brier: s.brier,
                log_loss: s.log_loss,
                calibration_error: s.calibration_error(),
                calibration: calibration_table(&s),
            })
        })
        .collect();
    // Bonferroni: the error rate is shared by every comparison made.
    let k = e
        .variants
        .iter()
        .filter(|v| v.role != Role::Champion)
        .count()
        .max(1);
    let alpha = e.settings.alpha / k as f64;
    let comparisons = e
        .variants
        .iter()
        .filter(|v| v.role != Role::Champion)
        .map(|v| {
            let paired: Vec<(f64, f64, bool)> = games
                .iter()
                .filter_map(|g| Some((prob(g, champion)?, prob(g, &v.name)?, g.home_win)))
                .collect();
            let d: Vec<f64> = paired
                .iter()
                .map(|(c, x, w)| sequential::loss(*x, *w) - sequential::loss(*c, *w))
                .collect();
            let interval = sequential::interval(&d, alpha, e.settings.tuned_for);
            let n = paired.len() as u64;
            let mean = |f: &dyn Fn(f64, bool) -> f64| {
                if paired.is_empty() {
                    0.0
                } else {
                    paired
                        .iter()
                        .map(|(c, x, w)| f(*x, *w) - f(*c, *w))
                        .sum::<f64>()
                        / paired.len() as f64
                }
            };
            let brier_diff = mean(&|p, w| (p - f64::from(u8::from(w))).powi(2));
            let accuracy_diff = mean(&|p, w| f64::from(u8::from((p >= 0.5) == w)));
            let guard = (n >= e.settings.guard_min_outcomes)
                .then(|| {
                    let own: Vec<&PairedGame> = games
                        .iter()
                        .filter(|g| prob(g, &v.name).is_some() && prob(g, champion).is_some())
                        .collect();
                    let ece = scores_of(&own, &v.name).map_or(0.0, |s| s.calibration_error());
                    if ece > e.settings.max_calibration_error {
                        Some(format!(
                            "calibration error {ece:.4} > {} over {n} games",
                            e.settings.max_calibration_error
                        ))
                    } else if accuracy_diff < -e.settings.max_accuracy_drop {
                        Some(format!(
                            "accuracy {:.4} below the champion's over {n} games (limit {})",
                            -accuracy_diff, e.settings.max_accuracy_drop
                        ))
                    } else {
                        None
                    }
                })
                .flatten();
            Comparison {
                variant: v.name.clone(),
                n,
                verdict: interval.map_or(Verdict::Undecided, |i| i.verdict()),
                interval,
                brier_diff,
                accuracy_diff,
                guard,
            }
        })
        .collect();
    Standing {
        experiment_id: e.id,
        outcomes: games.iter().filter(|g| prob(g, champion).is_some()).count() as u64,
        variants,
        comparisons,
    }
}

/// What one look at an experiment did.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Nothing,
    Promoted(String),
    Dropped(String),
    Stopped,
    Stepped(u32),
    Inconclusive,
    Verdict(String),
}

/// Judges the live experiment of the trainer's model.
#[derive(Debug)]
pub struct Judge {
    pub store: Experiments,
    pub trainer: Arc<Trainer>,
}

impl Judge {
    /// Looks at the running experiment, if any, and acts on what the test
    /// says. Registry errors fail it (the outcomes batch is retried).
    pub async fn look(&self) -> anyhow::Result<Action> {
        let Some(e) = self.store.live(&self.trainer.model_name).await? else {
            return Ok(Action::Nothing);
        };
        if e.status != Status::Running {
            return Ok(Action::Nothing);
        }
        let games = self.store.paired(e.id).await?;
        let s = standing(&e, &games);
        report(&e, &s);
        let action = self.decide(&e, &s).await?;
        // What the dashboard shows: the standing, with the experiment as it
        // is after the decision.
        let after = match action {
            Action::Nothing => e.clone(),
            _ => self.store.get(e.id).await?.unwrap_or_else(|| e.clone()),
        };
        let last = self.store.decisions(e.id).await?.pop();
        self.trainer
            .producer
            .publish(&to_message(&after, &s, last.as_ref()))
            .await
            .context("publishing the experiment's standing on `metrics`")?;
        if action != Action::Nothing {
            tracing::info!(
                experiment = e.id,
                ?action,
                outcomes = s.outcomes,
                "experiment decision"
            );
            metrics::counter!("trainer_experiment_decisions_total",
                "action" => action_name(&action))
            .increment(1);
        }
        Ok(action)
    }

    async fn decide(&self, e: &Experiment, s: &Standing) -> anyhow::Result<Action> {
        let set = &e.settings;
        let evidence = serde_json::to_value(s).context("the standing as JSON")?;
        let decision = |action: &'static str, variant: Option<&str>, reason: String| Decision {
            action,
            variant: variant.map(str::to_owned),
            reason,
            evidence: evidence.clone(),
            decided_by: DECIDED_BY.to_owned(),
        };
        let live: Vec<&Comparison> = s
            .comparisons
            .iter()
            .filter(|c| e.variant(&c.variant).is_some_and(|v| !v.dropped))
            .collect();
        // Worse, or a guard broke: the variant goes; with none left, so
        // does the experiment.
        for c in &live {
            let why = match (&c.guard, c.verdict, c.n >= set.min_outcomes) {
                (Some(g), _, _) => format!("guard: {g}"),
                (None, Verdict::Worse, true) => worse_reason(c),
                _ => continue,
            };
            let remaining = live.len() - 1;
            if remaining == 0 {
                self.apply(
                    self.store
                        .set_status(
                            e.id,
                            Status::Stopped,
                            &decision("stop", Some(&c.variant), why),
                        )
                        .await,
                )
                .await?;
                return Ok(Action::Stopped);
            }
            self.apply(
                self.store
                    .drop_variant(e.id, &c.variant, &decision("drop", Some(&c.variant), why))
                    .await,
            )
            .await?;
            return Ok(Action::Dropped(c.variant.clone()));
        }
        // Better: the best of those found better is promoted.
        let best = live
            .iter()
            .filter(|c| c.verdict == Verdict::Better && c.n >= set.min_outcomes)
            .min_by(|a, b| {
                let m = |c: &Comparison| c.interval.map_or(0.0, |i| i.mean);
                m(a).total_cmp(&m(b))
            });
        if let Some(c) = best {
            let why = better_reason(c);
            if set.auto_promote(e.mode) {
                let (_, record) = self
                    .store
                    .promote(
                        e.id,
                        &c.variant,
                        &decision("promote", Some(&c.variant), why),
                    )
                    .await
                    .map_err(anyhow::Error::from)?;
                self.trainer.announce(&record).await?;
                return Ok(Action::Promoted(c.variant.clone()));
            }
            let said = self
                .store
                .decisions(e.id)
                .await?
                .iter()
                .any(|d| d.action == "verdict" && d.variant.as_deref() == Some(&c.variant));
            if !said {
                self.store
                    .record(e.id, &decision("verdict", Some(&c.variant), why))
                    .await?;
                return Ok(Action::Verdict(c.variant.clone()));
            }
        }
        // A canary that holds steps up once its step has seen enough.
        if e.mode == fantasy_registry::experiments::Mode::Canary
            && let Some(c) = live.first()
        {
            let next = e.stage as usize + 1;
            let held = s.outcomes.saturating_sub(e.stage_started_outcomes);
            if next < set.canary_steps.len() && held >= set.step_outcomes && c.guard.is_none() {
                let weight = set.canary_steps[next];
                let why = format!(
                    "held at {:.0}% for {held} outcomes without being worse: {:.0}% next",
                    100.0 * set.canary_steps[e.stage as usize],
                    100.0 * weight
                );
                self.apply(
                    self.store
                        .step(
                            e.id,
                            next as u32,
                            weight,
                            s.outcomes,
                            &decision("step", Some(&c.variant), why),
                        )
                        .await,
                )
                .await?;
                return Ok(Action::Stepped(next as u32));
            }
        }
        if s.outcomes >= set.max_outcomes {
            let why = format!(
                "{} outcomes (max_outcomes) without a decision: the champion stays",
                s.outcomes
            );
            self.apply(
                self.store
                    .set_status(
                        e.id,
                        Status::Inconclusive,
                        &decision("inconclusive", None, why),
                    )
                    .await,
            )
            .await?;
            return Ok(Action::Inconclusive);
        }
        Ok(Action::Nothing)
    }

    /// Announces a change that went through; a change another replica made
    /// first (the experiment is no longer in the state it needs) is fine.
    async fn apply(&self, r: Result<Experiment, ExperimentError>) -> anyhow::Result<()> {
        match r {
            Ok(_) => self.trainer.wake_predictors().await,
            Err(ExperimentError::WrongState { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn worse_reason(c: &Comparison) -> String {
    let i = c.interval.unwrap_or(Interval {
        n: 0,
        mean: 0.0,
        lower: 0.0,
        upper: 0.0,
        sd: 0.0,
        alpha: 0.0,
    });
    format!(
        "worse than the champion: log loss +{:.4} per game, interval [{:.4}, {:.4}] over {} games",
        i.mean, i.lower, i.upper, c.n
    )
}

fn better_reason(c: &Comparison) -> String {
    let (mean, lower, upper) = c
        .interval
        .map_or((0.0, 0.0, 0.0), |i| (i.mean, i.lower, i.upper));
    format!(
        "better than the champion: log loss {mean:.4} per game, interval [{lower:.4}, {upper:.4}] over {} games",
        c.n
    )
}

fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Nothing => "nothing",
        Action::Promoted(_) => "promote",
        Action::Dropped(_) => "drop",
        Action::Stopped => "stop",
        Action::Stepped(_) => "step",
        Action::Inconclusive => "inconclusive",
        Action::Verdict(_) => "verdict",
    }
}

/// The standing as the `metrics` topic carries it.
pub fn to_message(
    e: &Experiment,
    s: &Standing,
    last: Option<&fantasy_registry::experiments::DecisionRecord>,
) -> ExperimentStanding {
    ExperimentStanding {
        schema_version: SchemaVersion,
        model_name: e.model_name.clone(),
        experiment_id: e.id,
        mode: e.mode.as_str().into(),
        status: e.status.as_str().into(),
        stage: e.stage,
        outcomes: s.outcomes,
        // The weights as they are after the decision.
        variants: s
            .variants
            .iter()
            .map(|x| match e.variant(&x.variant) {
                Some(v) => VariantStanding {
                    weight: v.weight,
                    dropped: v.dropped,
                    ..x.clone()
                },
                None => x.clone(),
            })
            .collect(),
        comparisons: s
            .comparisons
            .iter()
            .filter_map(|c| {
                let i = c.interval?;
                Some(ComparisonStanding {
                    variant: c.variant.clone(),
                    n: c.n,
                    mean: i.mean,
                    lower: i.lower,
                    upper: i.upper,
                    verdict: match c.verdict {
                        Verdict::Better => "better",
                        Verdict::Worse => "worse",
                        Verdict::Undecided => "undecided",
                    }
                    .into(),
                })
            })
            .collect(),
        last_decision: last.map(|d| format!("{}: {}", d.action, d.reason)),
        evaluated_at: chrono::Utc::now(),
    }
}

/// The standing as gauges (per variant), for dashboards and alerts.
fn report(e: &Experiment, s: &Standing) {
    let id = e.id.to_string();
    for v in &s.variants {
        let labels = [("experiment", id.clone()), ("variant", v.variant.clone())];
        metrics::gauge!("trainer_experiment_log_loss", &labels).set(v.log_loss);
        metrics::gauge!("trainer_experiment_brier", &labels).set(v.brier);
        metrics::gauge!("trainer_experiment_outcomes", &labels).set(v.outcomes as f64);
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use fantasy_registry::experiments::{Mode, Settings, Variant};

    use super::*;

    fn experiment(settings: Settings) -> Experiment {
        let v = |name: &str, role, weight| Variant {
            name: name.into(),
            version: format!("v-{name}"),
            role,
            weight,
            dropped: false,
        };
        Experiment {
            id: 1,
            model_name: "win-prob".into(),
            mode: Mode::Canary,
            status: Status::Running,
            stage: 0,
            stage_started_outcomes: 0,
            settings,
            variants: vec![
                v("champion", Role::Champion, 0.99),
                v("challenger", Role::Challenger, 0.01),
                v("shadow", Role::Shadow, 0.0),
            ],
            created_by: "t".into(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            ended_at: None,
        }
    }

    /// `n` games whose true probability alternates between 0.3 and 0.7;
    /// the champion says the truth, the challenger `challenger(truth)`,
    /// the shadow 0.5 (no skill, calibrated on average).
    fn games(n: usize, challenger: impl Fn(f64) -> f64) -> Vec<PairedGame> {
        (0..n)
            .map(|i| {
                let truth = if i % 2 == 0 { 0.3 } else { 0.7 };
                // Deterministic outcomes in the true proportions: 3 of
                // every 10 games of a kind go the unlikely way.
                let home_win = ((i / 2) % 10 < 7) == (truth > 0.5);
                PairedGame {
                    game_id: format!("g{i}"),
                    home_win,
                    probs: vec![
                        ("challenger".into(), challenger(truth)),
                        ("champion".into(), truth),
                        ("shadow".into(), 0.5),
                    ],
                }
            })
            .collect()
    }

    #[test]
    fn the_standing_compares_each_variant_with_the_champion_on_the_same_games() {
        let e = experiment(Settings::default());
        // A challenger that says the opposite: far worse, and its
        // calibration error breaks the guard once enough games are in.
        let g = games(600, |t| 1.0 - t);
        let s = standing(&e, &g);
        assert_eq!(s.outcomes, 600);
        let c = &s.comparisons[0];
        assert_eq!((c.variant.as_str(), c.n), ("challenger", 600));
        assert_eq!(c.verdict, Verdict::Worse);
        assert!(c.accuracy_diff < -0.3, "{c:?}");
        assert!(
            c.guard
                .as_deref()
                .is_some_and(|g| g.contains("calibration")),
            "{c:?}"
        );
        // The shadow (0.5 everywhere) loses too, by less.
        let sh = &s.comparisons[1];
        assert_eq!(sh.verdict, Verdict::Worse);
        assert!(sh.interval.unwrap().mean < c.interval.unwrap().mean);
        let champion = s.variants.iter().find(|v| v.variant == "champion").unwrap();
        assert!(champion.calibration_error < 0.01, "{champion:?}");

        // The same challenger on 100 games: the guard waits for 500.
        let s = standing(&e, &games(100, |t| 1.0 - t));
        assert!(s.comparisons[0].guard.is_none());
        // A challenger identical to the champion: undecided forever.
        let s = standing(&e, &games(600, |t| t));
        assert_eq!(s.comparisons[0].verdict, Verdict::Undecided);
        assert_eq!(s.comparisons[0].interval.unwrap().mean, 0.0);
    }
}
