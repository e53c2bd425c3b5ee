//! Model experiments in Postgres (`experiments`, `experiment_variants`,
//! `experiment_predictions`, `experiment_decisions`): what runs, which
//! variant serves which game, what every variant predicted, and what was
//! decided on what evidence. docs/experiments.md tells the whole story.
//!
//! An experiment puts the active version (the champion) against
//! challengers, which serve a share of the games, and shadows, which serve
//! none. Every variant scores every game of the stream; only the assigned
//! one's answer is served, the others are stored beside it, so the trainer
//! judges the variants on the very same games (paired).

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use fantasy_db::Db;
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::postgres::PgRow;

use crate::records::activate_in;
use crate::{ModelRecord, RegistryError};

/// How an experiment exposes its challengers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A/B: each challenger serves its fixed share of the games.
    Split,
    /// The challengers serve nothing: shadows only.
    Shadow,
    /// One challenger whose share ramps up `canary_steps`, a step at a time.
    Canary,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Split => "split",
            Mode::Shadow => "shadow",
            Mode::Canary => "canary",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "split" => Mode::Split,
            "shadow" => Mode::Shadow,
            "canary" => Mode::Canary,
            _ => return None,
        })
    }
}

/// Where an experiment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    /// Serves the champion only, scores nothing, decides nothing.
    Paused,
    /// A challenger won and is the active version.
    Promoted,
    /// Stopped by the test (worse, a guard broke) or by an operator.
    Stopped,
    /// `max_outcomes` seen without a decision: the champion stays.
    Inconclusive,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Promoted => "promoted",
            Status::Stopped => "stopped",
            Status::Inconclusive => "inconclusive",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Status::Running,
            "paused" => Status::Paused,
            "promoted" => Status::Promoted,
            "stopped" => Status::Stopped,
            "inconclusive" => Status::Inconclusive,
            _ => return None,
        })
    }

    /// Running or paused: the one experiment its model may have.
    pub fn is_live(self) -> bool {
        matches!(self, Status::Running | Status::Paused)
    }
}

/// A variant's part in an experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The active version; serves what the challengers do not.
    Champion,
    /// Serves its weight's share of the games.
    Challenger,
    /// Scores every game, serves none.
    Shadow,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Champion => "champion",
            Role::Challenger => "challenger",
            Role::Shadow => "shadow",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "champion" => Role::Champion,
            "challenger" => Role::Challenger,
            "shadow" => Role::Shadow,
            _ => return None,
        })
    }
}

/// How an experiment is judged: the trainer's defaults, each overridable
/// when the experiment is created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The confidence sequence's error rate (split across challengers):
    /// the chance that it ever, at any look, wrongly calls a challenger
    /// better or worse.
    pub alpha: f64,
    /// Paired outcomes before the first decision.
    pub min_outcomes: u64,
    /// Paired outcomes after which, with no decision, the experiment ends
    /// `inconclusive` and the champion stays.
    pub max_outcomes: u64,
    /// Where the sequence is tightest (its tuning; about the outcomes a
    /// decision is expected to need).
    pub tuned_for: u64,
    /// The canary's shares, ascending, each in (0, 1].
    pub canary_steps: Vec<f64>,
    /// Paired outcomes a canary step is held for before the next.
    pub step_outcomes: u64,
    /// Paired outcomes before the guards apply (a calibration table of a
    /// few games is noise).
    pub guard_min_outcomes: u64,
    /// Guard: a challenger whose expected calibration error (10 buckets)
    /// exceeds this is stopped.
    pub max_calibration_error: f64,
    /// Guard: a challenger whose accuracy falls this far below the
    /// champion's (same games) is stopped.
    pub max_accuracy_drop: f64,
    /// Promote a challenger the test finds better (else record the verdict
    /// and end the experiment as `promoted` only on an operator's call).
    /// Defaults to true, but false for `shadow` experiments.
    pub auto_promote: Option<bool>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            min_outcomes: 100,
            max_outcomes: 20_000,
            tuned_for: 1000,
            canary_steps: vec![0.01, 0.05, 0.25, 0.5, 1.0],
            step_outcomes: 100,
            guard_min_outcomes: 500,
            max_calibration_error: 0.1,
            max_accuracy_drop: 0.05,
            auto_promote: None,
        }
    }
}

impl Settings {
    /// Checks the numbers; `Err` says which is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return Err(format!("alpha is {}; expected (0, 0.5)", self.alpha));
        }
        if self.min_outcomes == 0 || self.max_outcomes < self.min_outcomes {
            return Err(format!(
                "min_outcomes {} and max_outcomes {}: expected 0 < min_outcomes <= max_outcomes",
                self.min_outcomes, self.max_outcomes
            ));
        }
        if self.tuned_for == 0 {
            return Err("tuned_for is 0".into());
        }
        let steps = &self.canary_steps;
        let ascending = steps.windows(2).all(|w| w[0] < w[1]);
        if steps.is_empty() || !ascending || steps.iter().any(|s| !(*s > 0.0 && *s <= 1.0)) {
            return Err(format!(
                "canary_steps {steps:?}: expected ascending shares in (0, 1]"
            ));
        }
        for (name, v) in [
            ("max_calibration_error", self.max_calibration_error),
            ("max_accuracy_drop", self.max_accuracy_drop),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                return Err(format!("{name} is {v}; expected (0, 1]"));
            }
        }
        Ok(())
    }

    /// Whether a challenger found better is promoted without an operator.
    pub fn auto_promote(&self, mode: Mode) -> bool {
        self.auto_promote.unwrap_or(mode != Mode::Shadow)
    }
}

/// One version in an experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Variant {
    /// The name clients see in `variant`.
    pub name: String,
    pub version: String,
    pub role: Role,
    /// The share of games it serves now (the champion: what is left).
    pub weight: f64,
    /// Stopped by the test: serves nothing more, judged no more.
    pub dropped: bool,
}

/// An experiment with its variants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Experiment {
    pub id: i64,
    pub model_name: String,
    pub mode: Mode,
    pub status: Status,
    /// The canary's current step (an index into `settings.canary_steps`).
    pub stage: u32,
    /// Paired outcomes seen when the current canary step began.
    pub stage_started_outcomes: u64,
    pub settings: Settings,
    pub variants: Vec<Variant>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// Where a game falls in an experiment, in [0, 1): a hash of the
/// experiment's id and the game's, the same on every replica and in every
/// release (FNV-1a, then SplitMix64's finaliser for an even spread).
pub fn bucket(experiment_id: i64, game_id: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in experiment_id
        .to_be_bytes()
        .iter()
        .chain(b":")
        .chain(game_id.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl Experiment {
    /// The champion.
    pub fn champion(&self) -> Option<&Variant> {
        self.variants.iter().find(|v| v.role == Role::Champion)
    }

    /// The variant by name.
    pub fn variant(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// The variants that serve games: the champion and the challengers not
    /// dropped, in the order of their ranges.
    pub fn serving(&self) -> impl Iterator<Item = &Variant> {
        self.variants
            .iter()
            .filter(|v| v.role != Role::Shadow && !v.dropped)
    }

    /// The variant that serves `game_id`: the challengers take the bottom
    /// of [0, 1) in turn, each its weight; the champion the rest. A
    /// canary's growing share keeps its games (its range only widens), and
    /// a paused experiment serves the champion everywhere.
    pub fn assign(&self, game_id: &str) -> Option<&Variant> {
        let champion = self.champion()?;
        if self.status != Status::Running {
            return Some(champion);
        }
        let b = bucket(self.id, game_id);
        let mut upper = 0.0;
        for v in self.serving().filter(|v| v.role == Role::Challenger) {
            upper += v.weight;
            if b < upper {
                return Some(v);
            }
        }
        Some(champion)
    }
}

/// A decision and its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct DecisionRecord {
    pub id: i64,
    /// `create`, `promote`, `stop`, `step`, `drop`, `pause`, `resume`,
    /// `inconclusive`, `verdict` (a shadow found better, not promoted).
    pub action: String,
    pub variant: Option<String>,
    pub reason: String,
    /// n, effect size, interval, each variant's scores.
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
    /// The trainer's test (`trainer`) or the operator's token subject.
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
}

/// A decision to record.
#[derive(Clone, Debug)]
pub struct Decision {
    pub action: &'static str,
    pub variant: Option<String>,
    pub reason: String,
    pub evidence: serde_json::Value,
    pub decided_by: String,
}

/// A version to add to a new experiment.
#[derive(Clone, Debug, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVariant {
    pub version: String,
    /// Defaults: `challenger` (`challenger-2`, ... for more), `shadow`.
    #[serde(default)]
    pub name: Option<String>,
    /// `split` only: the share of games it serves, in (0, 1].
    #[serde(default)]
    pub weight: Option<f64>,
}

/// What `POST /v1/experiments` takes.
#[derive(Clone, Debug, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewExperiment {
    pub mode: Mode,
    #[serde(default)]
    pub challengers: Vec<NewVariant>,
    #[serde(default)]
    pub shadows: Vec<NewVariant>,
    /// Overrides of the trainer's defaults.
    #[serde(default)]
    pub settings: Option<Settings>,
}

/// Why an experiment change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error("{0}")]
    Invalid(String),
    #[error("no model {model} version {version}")]
    NoSuchVersion { model: String, version: String },
    #[error("model {model} has no active version to be the champion")]
    NoChampion { model: String },
    #[error("model {model} already has a live experiment, {id}: stop it first")]
    AlreadyLive { model: String, id: i64 },
    #[error("no experiment {id}")]
    NotFound { id: i64 },
    #[error("experiment {id} is {status}: {action} needs {needs}")]
    WrongState {
        id: i64,
        status: &'static str,
        action: &'static str,
        needs: &'static str,
    },
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ExperimentError {
    fn from(e: sqlx::Error) -> Self {
        Self::Failed(e.into())
    }
}

impl From<RegistryError> for ExperimentError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NoSuchVersion { model, version } => {
                Self::NoSuchVersion { model, version }
            }
            other => Self::Failed(other.into()),
        }
    }
}

/// One variant's prediction for one game (`experiment_predictions`).
#[derive(Clone, Debug, PartialEq)]
pub struct VariantPrediction {
    pub experiment_id: i64,
    pub game_id: String,
    pub variant: String,
    pub model_version: String,
    pub home_win_prob: f32,
    pub served: bool,
    pub predicted_at: DateTime<Utc>,
}

/// A finished game's predictions by every variant that scored it.
#[derive(Clone, Debug, PartialEq)]
pub struct PairedGame {
    pub game_id: String,
    pub home_win: bool,
    /// (variant, probability), by variant name.
    pub probs: Vec<(String, f64)>,
}

const EXPERIMENT_COLUMNS: &str = "id, model_name, mode, status, stage, stage_started_outcomes, \
                                  settings, created_by, created_at, updated_at, ended_at";

fn experiment_from_row(r: &PgRow, variants: Vec<Variant>) -> anyhow::Result<Experiment> {
    let mode: String = r.try_get("mode")?;
    let status: String = r.try_get("status")?;
    Ok(Experiment {
        id: r.try_get("id")?,
        model_name: r.try_get("model_name")?,
        mode: Mode::parse(&mode).with_context(|| format!("unknown experiment mode {mode:?}"))?,
        status: Status::parse(&status)
            .with_context(|| format!("unknown experiment status {status:?}"))?,
        stage: u32::try_from(r.try_get::<i32, _>("stage")?)?,
        stage_started_outcomes: u64::try_from(r.try_get::<i64, _>("stage_started_outcomes")?)?,
        settings: serde_json::from_value(r.try_get("settings")?)
            .context("experiment settings in the database do not parse")?,
        variants,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        ended_at: r.try_get("ended_at")?,
    })
}

fn variant_from_row(r: &PgRow) -> anyhow::Result<Variant> {
    let role: String = r.try_get("role")?;
    Ok(Variant {
        name: r.try_get("variant")?,
        version: r.try_get("model_version")?,
        role: Role::parse(&role).with_context(|| format!("unknown variant role {role:?}"))?,
        weight: r.try_get("weight")?,
        dropped: r.try_get("dropped")?,
    })
}

/// A valid variant name: what a client sees, a label and a column value.
fn check_name(name: &str) -> Result<(), ExperimentError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ExperimentError::Invalid(format!(
            "variant name {name:?}: 1 to 64 of A-Z a-z 0-9 - _ ."
        )))
    }
}

/// `base`, or `base-<n>` when there are several (`n` from 1).
fn default_name(base: &str, several: bool, i: usize) -> String {
    if several {
        format!("{base}-{}", i + 1)
    } else {
        base.to_owned()
    }
}

/// The variants of `new` with their names and weights, checked (the
/// champion not among them).
fn plan_variants(
    new: &NewExperiment,
    settings: &Settings,
    champion: &str,
) -> Result<Vec<Variant>, ExperimentError> {
    let invalid = |m: String| Err(ExperimentError::Invalid(m));
    match new.mode {
        Mode::Split if new.challengers.is_empty() => {
            return invalid("a split experiment needs at least one challenger".into());
        }
        Mode::Canary if new.challengers.len() != 1 => {
            return invalid(format!(
                "a canary experiment has exactly one challenger; got {}",
                new.challengers.len()
            ));
        }
        Mode::Shadow if !new.challengers.is_empty() || new.shadows.is_empty() => {
            return invalid(
                "a shadow experiment has shadows and no challengers (challengers serve games)"
                    .into(),
            );
        }
        _ => {}
    }
    let mut out = vec![Variant {
        name: "champion".into(),
        version: champion.to_owned(),
        role: Role::Champion,
        weight: 1.0,
        dropped: false,
    }];
    let several = new.challengers.len() > 1;
    for (i, c) in new.challengers.iter().enumerate() {
        let weight = match (new.mode, c.weight) {
            (Mode::Canary, None) => settings.canary_steps[0],
            (Mode::Canary, Some(_)) => {
                return invalid(
                    "a canary's weight follows settings.canary_steps; give none".into(),
                );
            }
            (_, Some(w)) if w.is_finite() && w > 0.0 && w <= 1.0 => w,
            (_, w) => {
                return invalid(format!(
                    "challenger {} has weight {w:?}; expected a share in (0, 1]",
                    c.version
                ));
            }
        };
        let name = c
            .name
            .clone()
            .unwrap_or_else(|| default_name("challenger", several, i));
        out.push(Variant {
            name,
            version: c.version.clone(),
            role: Role::Challenger,
            weight,
            dropped: false,
        });
    }
    let several = new.shadows.len() > 1;
    for (i, s) in new.shadows.iter().enumerate() {
        if s.weight.is_some() {
            return invalid(format!(
                "shadow {} serves nothing: give no weight",
                s.version
            ));
        }
        let name = s
            .name
            .clone()
            .unwrap_or_else(|| default_name("shadow", several, i));
        out.push(Variant {
            name,
            version: s.version.clone(),
            role: Role::Shadow,
            weight: 0.0,
            dropped: false,
        });
    }
    let served: f64 = out
        .iter()
        .filter(|v| v.role == Role::Challenger)
        .map(|v| v.weight)
        .sum();
    if served > 1.0 + 1e-9 {
        return invalid(format!(
            "the challengers' weights add up to {served}; at most 1"
        ));
    }
    out[0].weight = (1.0 - served).max(0.0);
    for (i, v) in out.iter().enumerate() {
        check_name(&v.name)?;
        if out[..i].iter().any(|o| o.name == v.name) {
            return invalid(format!("two variants are named {:?}", v.name));
        }
        if out[..i].iter().any(|o| o.version == v.version) {
            return invalid(format!(
                "version {} appears twice (the champion is {champion})",
                v.version
            ));
        }
    }
    Ok(out)
}

/// The experiment tables.
#[derive(Clone, Debug)]
pub struct Experiments {
    db: Db,
}

impl Experiments {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Starts an experiment of `model_name` against its active version:
    /// every version must exist and read the champion's features; the
    /// model may have no other live experiment.
    pub async fn create(
        &self,
        model_name: &str,
        new: &NewExperiment,
        defaults: &Settings,
        created_by: &str,
    ) -> Result<Experiment, ExperimentError> {
        let settings = new.settings.clone().unwrap_or_else(|| defaults.clone());
        settings.validate().map_err(ExperimentError::Invalid)?;
        let mut tx = self.db.pool().begin().await?;
        // The champion's row, locked: a promotion cannot slip in between.
        let champion: Option<(String, String, i32)> = sqlx::query_as(
            "SELECT version, feature_set, n_features FROM models
             WHERE model_name = $1 AND status = 'active' FOR UPDATE",
        )
        .bind(model_name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((champion, feature_set, n_features)) = champion else {
            return Err(ExperimentError::NoChampion {
                model: model_name.to_owned(),
            });
        };
        let variants = plan_variants(new, &settings, &champion)?;
        for v in &variants[1..] {
            let found: Option<(String, i32)> = sqlx::query_as(
                "SELECT feature_set, n_features FROM models WHERE model_name = $1 AND version = $2",
            )
            .bind(model_name)
            .bind(&v.version)
            .fetch_optional(&mut *tx)
            .await?;
            match found {
                None => {
                    return Err(ExperimentError::NoSuchVersion {
                        model: model_name.to_owned(),
                        version: v.version.clone(),
                    });
                }
                Some((fs, n)) if fs != feature_set || n != n_features => {
                    return Err(ExperimentError::Invalid(format!(
                        "version {} reads {fs} ({n} features), the champion {champion} reads \
                         {feature_set} ({n_features}): they cannot score the same games",
                        v.version
                    )));
                }
                Some(_) => {}
            }
        }
        let inserted = sqlx::query_scalar::<_, i64>(
            "INSERT INTO experiments (model_name, mode, status, settings, created_by)
             VALUES ($1, $2, 'running', $3, $4) RETURNING id",
        )
        .bind(model_name)
        .bind(new.mode.as_str())
        .bind(serde_json::to_value(&settings).context("settings as JSON")?)
        .bind(created_by)
        .fetch_one(&mut *tx)
        .await;
        let id = match inserted {
            Ok(id) => id,
            Err(sqlx::Error::Database(e)) if e.constraint() == Some("experiments_one_live") => {
                drop(tx);
                let id = self.live(model_name).await?.map_or(0, |e| e.id);
                return Err(ExperimentError::AlreadyLive {
                    model: model_name.to_owned(),
                    id,
                });
            }
            Err(e) => return Err(e.into()),
        };
        for v in &variants {
            sqlx::query(
                "INSERT INTO experiment_variants (experiment_id, variant, model_version, role, weight)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(&v.name)
            .bind(&v.version)
            .bind(v.role.as_str())
            .bind(v.weight)
            .execute(&mut *tx)
            .await?;
        }
        record_in(
            &mut tx,
            id,
            &Decision {
                action: "create",
                variant: None,
                reason: format!(
                    "{} experiment against champion {champion}",
                    new.mode.as_str()
                ),
                evidence: serde_json::json!({ "variants": &variants, "settings": &settings }),
                decided_by: created_by.to_owned(),
            },
        )
        .await?;
        tx.commit().await.context("creating an experiment")?;
        self.get(id).await?.ok_or(ExperimentError::NotFound { id })
    }

    /// One experiment.
    pub async fn get(&self, id: i64) -> anyhow::Result<Option<Experiment>> {
        let row = sqlx::query(&format!(
            "SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await
        .context("reading an experiment")?;
        let Some(row) = row else { return Ok(None) };
        let variants = self.variants(id).await?;
        Ok(Some(experiment_from_row(&row, variants)?))
    }

    async fn variants(&self, id: i64) -> anyhow::Result<Vec<Variant>> {
        sqlx::query(
            "SELECT variant, model_version, role, weight, dropped FROM experiment_variants
             WHERE experiment_id = $1
             ORDER BY CASE role WHEN 'champion' THEN 0 WHEN 'challenger' THEN 1 ELSE 2 END, variant",
        )
        .bind(id)
        .fetch_all(self.db.pool())
        .await
        .context("reading an experiment's variants")?
        .iter()
        .map(variant_from_row)
        .collect()
    }

    /// The model's running or paused experiment, if any.
    pub async fn live(&self, model_name: &str) -> anyhow::Result<Option<Experiment>> {
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM experiments
             WHERE model_name = $1 AND status IN ('running', 'paused')",
        )
        .bind(model_name)
        .fetch_optional(self.db.pool())
        .await
        .context("reading the live experiment")?;
        match id {
            Some(id) => self.get(id).await,
            None => Ok(None),
        }
    }

    /// The model's experiments, newest first.
    pub async fn list(&self, model_name: &str, limit: i64) -> anyhow::Result<Vec<Experiment>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM experiments WHERE model_name = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(model_name)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await
        .context("listing experiments")?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.get(id).await?);
        }
        Ok(out)
    }

    /// An experiment's decisions, oldest first.
    pub async fn decisions(&self, id: i64) -> anyhow::Result<Vec<DecisionRecord>> {
        sqlx::query_as::<_, DecisionRecord>(
            "SELECT id, action, variant, reason, evidence, decided_by, decided_at
             FROM experiment_decisions WHERE experiment_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(self.db.pool())
        .await
        .context("reading an experiment's decisions")
    }

    /// Locks the experiment's row and checks that its status is one of
    /// `from`; returns its model name.
    async fn lock(
        tx: &mut sqlx::PgConnection,
        id: i64,
        action: &'static str,
        from: &[Status],
        needs: &'static str,
    ) -> Result<String, ExperimentError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT model_name, status FROM experiments WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((model, status)) = row else {
            return Err(ExperimentError::NotFound { id });
        };
        let status = Status::parse(&status).unwrap_or(Status::Stopped);
        if !from.contains(&status) {
            return Err(ExperimentError::WrongState {
                id,
                status: status.as_str(),
                action,
                needs,
            });
        }
        Ok(model)
    }

    /// Pauses, resumes, stops or ends (`inconclusive`) an experiment, with
    /// the decision that did it.
    pub async fn set_status(
        &self,
        id: i64,
        to: Status,
        decision: &Decision,
    ) -> Result<Experiment, ExperimentError> {
        let (from, needs): (&[Status], _) = match to {
            Status::Paused => (&[Status::Running], "a running experiment"),
            Status::Running => (&[Status::Paused], "a paused experiment"),
            Status::Stopped | Status::Inconclusive => {
                (&[Status::Running, Status::Paused], "a live experiment")
            }
            Status::Promoted => {
                return Err(ExperimentError::Invalid(
                    "use promote() to end an experiment with a promotion".into(),
                ));
            }
        };
        let mut tx = self.db.pool().begin().await?;
        Self::lock(&mut tx, id, decision.action, from, needs).await?;
        sqlx::query(
            "UPDATE experiments SET status = $2, updated_at = now(),
                    ended_at = CASE WHEN $2 IN ('running', 'paused') THEN NULL ELSE now() END
             WHERE id = $1",
        )
        .bind(id)
        .bind(to.as_str())
        .execute(&mut *tx)
        .await?;
        record_in(&mut tx, id, decision).await?;
        tx.commit()
            .await
            .context("changing an experiment's status")?;
        self.get(id).await?.ok_or(ExperimentError::NotFound { id })
    }

    /// Moves a running canary to `stage`, its challenger to `weight` (the
    /// champion to the rest), from `outcomes` paired outcomes on.
    pub async fn step(
        &self,
        id: i64,
        stage: u32,
        weight: f64,
        outcomes: u64,
        decision: &Decision,
    ) -> Result<Experiment, ExperimentError> {
        let mut tx = self.db.pool().begin().await?;
        Self::lock(
            &mut tx,
            id,
            "step",
            &[Status::Running],
            "a running experiment",
        )
        .await?;
        sqlx::query(
            "UPDATE experiments SET stage = $2, stage_started_outcomes = $3, updated_at = now()
             WHERE id = $1",
        )
        .bind(id)
        .bind(i32::try_from(stage).context("stage")?)
        .bind(i64::try_from(outcomes).context("outcomes")?)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE experiment_variants
             SET weight = CASE role WHEN 'challenger' THEN $2 ELSE 1 - $2 END
             WHERE experiment_id = $1 AND role IN ('champion', 'challenger')",
        )
        .bind(id)
        .bind(weight)
        .execute(&mut *tx)
        .await?;
        record_in(&mut tx, id, decision).await?;
        tx.commit().await.context("stepping a canary")?;
        self.get(id).await?.ok_or(ExperimentError::NotFound { id })
    }

    /// Drops a variant: it serves and is judged no more; the champion takes
    /// its share.
    pub async fn drop_variant(
        &self,
        id: i64,
        variant: &str,
        decision: &Decision,
    ) -> Result<Experiment, ExperimentError> {
        let mut tx = self.db.pool().begin().await?;
        Self::lock(
            &mut tx,
            id,
            "drop",
            &[Status::Running],
            "a running experiment",
        )
        .await?;
        let weight: Option<f64> = sqlx::query_scalar(
            "UPDATE experiment_variants v SET dropped = true, weight = 0
             FROM (SELECT weight FROM experiment_variants
                   WHERE experiment_id = $1 AND variant = $2 AND role <> 'champion') old
             WHERE v.experiment_id = $1 AND v.variant = $2
             RETURNING old.weight",
        )
        .bind(id)
        .bind(variant)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(weight) = weight else {
            return Err(ExperimentError::Invalid(format!(
                "experiment {id} has no challenger or shadow named {variant:?}"
            )));
        };
        sqlx::query(
            "UPDATE experiment_variants SET weight = LEAST(1, weight + $2)
             WHERE experiment_id = $1 AND role = 'champion'",
        )
        .bind(id)
        .bind(weight)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE experiments SET updated_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        record_in(&mut tx, id, decision).await?;
        tx.commit().await.context("dropping a variant")?;
        self.get(id).await?.ok_or(ExperimentError::NotFound { id })
    }

    /// Ends a live experiment by making `variant`'s version the active one,
    /// in one transaction; returns the experiment and the new active record.
    pub async fn promote(
        &self,
        id: i64,
        variant: &str,
        decision: &Decision,
    ) -> Result<(Experiment, ModelRecord), ExperimentError> {
        let mut tx = self.db.pool().begin().await?;
        let model = Self::lock(
            &mut tx,
            id,
            "promote",
            &[Status::Running, Status::Paused],
            "a live experiment",
        )
        .await?;
        let version: Option<(String, String)> = sqlx::query_as(
            "SELECT model_version, role FROM experiment_variants
             WHERE experiment_id = $1 AND variant = $2",
        )
        .bind(id)
        .bind(variant)
        .fetch_optional(&mut *tx)
        .await?;
        let version = match version {
            Some((v, role)) if role != "champion" => v,
            _ => {
                return Err(ExperimentError::Invalid(format!(
                    "experiment {id} has no challenger or shadow named {variant:?}"
                )));
            }
        };
        let record = activate_in(&mut tx, &model, &version).await?;
        sqlx::query(
            "UPDATE experiments SET status = 'promoted', updated_at = now(), ended_at = now()
             WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        record_in(&mut tx, id, decision).await?;
        tx.commit().await.context("promoting from an experiment")?;
        let experiment = self
            .get(id)
            .await?
            .ok_or(ExperimentError::NotFound { id })?;
        Ok((experiment, record))
    }

    /// Ends the model's live experiment (if any) because its champion was
    /// replaced outside it (a promotion or rollback by an operator).
    pub async fn end_superseded(
        &self,
        model_name: &str,
        decided_by: &str,
        new_active: &str,
    ) -> anyhow::Result<Option<i64>> {
        let Some(live) = self.live(model_name).await? else {
            return Ok(None);
        };
        let decision = Decision {
            action: "stop",
            variant: None,
            reason: format!("the champion was replaced outside the experiment by {new_active}"),
            evidence: serde_json::json!({ "new_active": new_active }),
            decided_by: decided_by.to_owned(),
        };
        match self.set_status(live.id, Status::Stopped, &decision).await {
            Ok(_) | Err(ExperimentError::WrongState { .. }) => Ok(Some(live.id)),
            Err(e) => Err(anyhow::anyhow!(e)),
        }
    }

    /// Records a decision that changes nothing in the tables (a verdict).
    pub async fn record(&self, id: i64, decision: &Decision) -> anyhow::Result<()> {
        let mut conn = self.db.pool().acquire().await?;
        record_in(&mut conn, id, decision).await
    }

    /// Upserts variant predictions by (experiment, game, variant); an older
    /// one never replaces a newer.
    pub async fn upsert_predictions(&self, rows: &[VariantPrediction]) -> anyhow::Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        // One row per key in a statement: ON CONFLICT cannot touch a row twice.
        let mut latest: std::collections::HashMap<(i64, &str, &str), &VariantPrediction> =
            std::collections::HashMap::with_capacity(rows.len());
        for r in rows {
            let e = latest
                .entry((r.experiment_id, r.game_id.as_str(), r.variant.as_str()))
                .or_insert(r);
            if r.predicted_at >= e.predicted_at {
                *e = r;
            }
        }
        let rows: Vec<&VariantPrediction> = latest.into_values().collect();
        let result = sqlx::query(
            "INSERT INTO experiment_predictions
                 (experiment_id, game_id, variant, model_version, home_win_prob, served, predicted_at)
             SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::real[],
                                  $6::bool[], $7::timestamptz[])
             ON CONFLICT (experiment_id, game_id, variant) DO UPDATE SET
                 model_version = EXCLUDED.model_version, home_win_prob = EXCLUDED.home_win_prob,
                 served = EXCLUDED.served, predicted_at = EXCLUDED.predicted_at
             WHERE experiment_predictions.predicted_at <= EXCLUDED.predicted_at",
        )
        .bind(rows.iter().map(|r| r.experiment_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.game_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.variant.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.model_version.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.home_win_prob).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.served).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.predicted_at).collect::<Vec<_>>())
        .execute(self.db.pool())
        .await
        .context("upserting experiment predictions")?;
        Ok(result.rows_affected())
    }

    /// The experiment's finished games, in the order they finished, each
    /// with every variant's prediction.
    pub async fn paired(&self, id: i64) -> anyhow::Result<Vec<PairedGame>> {
        let rows: Vec<(String, bool, String, f32)> = sqlx::query_as(
            "SELECT e.game_id, o.home_win, e.variant, e.home_win_prob
             FROM experiment_predictions e JOIN outcomes o USING (game_id)
             WHERE e.experiment_id = $1
             ORDER BY o.final_at, e.game_id, e.variant",
        )
        .bind(id)
        .fetch_all(self.db.pool())
        .await
        .context("reading an experiment's predictions with their outcomes")?;
        let mut games: Vec<PairedGame> = Vec::new();
        for (game_id, home_win, variant, p) in rows {
            match games.last_mut() {
                Some(g) if g.game_id == game_id => g.probs.push((variant, f64::from(p))),
                _ => games.push(PairedGame {
                    game_id,
                    home_win,
                    probs: vec![(variant, f64::from(p))],
                }),
            }
        }
        Ok(games)
    }

    /// How many games each variant served, and scored without serving.
    pub async fn exposure(&self, id: i64) -> anyhow::Result<Vec<(String, i64, i64)>> {
        sqlx::query_as(
            "SELECT variant, count(*) FILTER (WHERE served), count(*) FILTER (WHERE NOT served)
             FROM experiment_predictions WHERE experiment_id = $1 GROUP BY variant ORDER BY variant",
        )
        .bind(id)
        .fetch_all(self.db.pool())
        .await
        .context("counting an experiment's predictions")
    }
}

async fn record_in(conn: &mut sqlx::PgConnection, id: i64, d: &Decision) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO experiment_decisions (experiment_id, action, variant, reason, evidence, decided_by)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(d.action)
    .bind(&d.variant)
    .bind(&d.reason)
    .bind(&d.evidence)
    .bind(&d.decided_by)
    .execute(&mut *conn)
    .await
    .context("recording an experiment decision")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(weights: &[f64]) -> Experiment {
        let mut variants = vec![Variant {
            name: "champion".into(),
            version: "v0".into(),
            role: Role::Champion,
            weight: 1.0 - weights.iter().sum::<f64>(),
            dropped: false,
        }];
        for (i, w) in weights.iter().enumerate() {
            variants.push(Variant {
                name: format!("c{i}"),
                version: format!("v{}", i + 1),
                role: Role::Challenger,
                weight: *w,
                dropped: false,
            });
        }
        Experiment {
            id: 7,
            model_name: "m".into(),
            mode: Mode::Split,
            status: Status::Running,
            stage: 0,
            stage_started_outcomes: 0,
            settings: Settings::default(),
            variants,
            created_by: "t".into(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            ended_at: None,
        }
    }

    #[test]
    fn buckets_are_stable_and_even() {
        // Pinned: a change here reassigns every running experiment's games.
        assert_eq!(bucket(1, "game-1"), bucket(1, "game-1"));
        assert_ne!(bucket(1, "game-1"), bucket(2, "game-1"));
        let n = 100_000;
        let mut deciles = [0u32; 10];
        for i in 0..n {
            let b = bucket(42, &format!("g{i}"));
            assert!((0.0..1.0).contains(&b));
            deciles[(b * 10.0) as usize] += 1;
        }
        for d in deciles {
            assert!((9_500..10_500).contains(&d), "{deciles:?}");
        }
    }

    #[test]
    fn shares_follow_the_weights_and_a_canary_keeps_its_games() {
        let e = experiment(&[0.2, 0.1]);
        let n = 50_000;
        let mut counts = std::collections::HashMap::new();
        for i in 0..n {
            *counts
                .entry(e.assign(&format!("g{i}")).unwrap().name.clone())
                .or_insert(0) += 1;
        }
        let share = |k: &str| f64::from(counts[k]) / f64::from(n);
        assert!((share("c0") - 0.2).abs() < 0.01, "{counts:?}");
        assert!((share("c1") - 0.1).abs() < 0.01, "{counts:?}");
        assert!((share("champion") - 0.7).abs() < 0.01, "{counts:?}");

        // A canary from 5% to 25%: every game it had, it keeps.
        let (small, big) = (experiment(&[0.05]), experiment(&[0.25]));
        for i in 0..20_000 {
            let g = format!("g{i}");
            if small.assign(&g).unwrap().name == "c0" {
                assert_eq!(big.assign(&g).unwrap().name, "c0", "{g}");
            }
        }
        // Paused or dropped: the champion serves.
        let mut paused = experiment(&[0.5]);
        paused.status = Status::Paused;
        let mut dropped = experiment(&[0.5]);
        dropped.variants[1].dropped = true;
        for i in 0..1000 {
            let g = format!("g{i}");
            assert_eq!(paused.assign(&g).unwrap().role, Role::Champion);
            assert_eq!(dropped.assign(&g).unwrap().role, Role::Champion);
        }
    }

    #[test]
    fn plans_refuse_what_cannot_run() {
        let s = Settings::default();
        let v = |version: &str, weight: Option<f64>| NewVariant {
            version: version.into(),
            name: None,
            weight,
        };
        let new = |mode, challengers, shadows| NewExperiment {
            mode,
            challengers,
            shadows,
            settings: None,
        };
        let err = |n: &NewExperiment| match plan_variants(n, &s, "v0") {
            Err(ExperimentError::Invalid(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(&new(Mode::Split, vec![], vec![])).contains("at least one challenger"));
        assert!(
            err(&new(
                Mode::Split,
                vec![v("v1", Some(0.7)), v("v2", Some(0.6))],
                vec![]
            ))
            .contains("add up to")
        );
        assert!(err(&new(Mode::Split, vec![v("v1", Some(f64::NAN))], vec![])).contains("weight"));
        assert!(err(&new(Mode::Split, vec![v("v0", Some(0.5))], vec![])).contains("twice"));
        assert!(err(&new(Mode::Canary, vec![v("v1", Some(0.1))], vec![])).contains("canary"));
        assert!(err(&new(Mode::Shadow, vec![v("v1", Some(0.1))], vec![])).contains("shadow"));
        let plan = plan_variants(
            &new(Mode::Canary, vec![v("v1", None)], vec![v("v2", None)]),
            &s,
            "v0",
        )
        .unwrap();
        let names: Vec<_> = plan.iter().map(|v| (v.name.as_str(), v.weight)).collect();
        assert_eq!(
            names,
            [("champion", 0.99), ("challenger", 0.01), ("shadow", 0.0)]
        );
        let mut bad = Settings {
            canary_steps: vec![0.5, 0.1],
            ..Settings::default()
        };
        assert!(bad.validate().unwrap_err().contains("ascending"));
        bad.canary_steps = vec![0.1];
        bad.alpha = 0.0;
        assert!(bad.validate().unwrap_err().contains("alpha"));
    }
}
