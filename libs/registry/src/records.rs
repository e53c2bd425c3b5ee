//! Model versions in Postgres.

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use fantasy_db::Db;
use fantasy_messages::{ModelPublished, ModelStatus, SchemaVersion, TrainingMetrics};
use sqlx::Row as _;
use sqlx::postgres::PgRow;

/// What a change of the active version can refuse, apart from failing.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no model {model} version {version}")]
    NoSuchVersion { model: String, version: String },
    #[error("model {model} has no earlier active version to roll back to")]
    NothingToRollBack { model: String },
    /// The database (or a row it returned) failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<sqlx::Error> for RegistryError {
    fn from(e: sqlx::Error) -> Self {
        Self::Failed(e.into())
    }
}

/// One model version as the registry holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelRecord {
    pub model_name: String,
    pub version: String,
    pub artifact_uri: String,
    pub sha256: String,
    pub feature_set: String,
    pub n_features: u32,
    pub status: ModelStatus,
    pub metrics: TrainingMetrics,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
}

impl ModelRecord {
    /// The `models` announcement of this version.
    pub fn to_published(&self) -> ModelPublished {
        ModelPublished {
            schema_version: SchemaVersion,
            model_name: self.model_name.clone(),
            version: self.version.clone(),
            artifact_uri: self.artifact_uri.clone(),
            sha256: self.sha256.clone(),
            feature_set: self.feature_set.clone(),
            n_features: self.n_features,
            status: self.status,
            metrics: self.metrics.clone(),
            published_at: Utc::now(),
        }
    }

    fn from_row(r: &PgRow) -> anyhow::Result<Self> {
        let status: String = r.try_get("status")?;
        Ok(Self {
            model_name: r.try_get("model_name")?,
            version: r.try_get("version")?,
            artifact_uri: r.try_get("artifact_uri")?,
            sha256: r.try_get("sha256")?,
            feature_set: r.try_get("feature_set")?,
            n_features: u32::try_from(r.try_get::<i32, _>("n_features")?)?,
            status: ModelStatus::parse(&status)
                .with_context(|| format!("unknown model status {status:?} in the database"))?,
            metrics: serde_json::from_value(r.try_get("metrics")?)
                .context("model metrics in the database do not parse")?,
            created_at: r.try_get("created_at")?,
            activated_at: r.try_get("activated_at")?,
        })
    }
}

const COLUMNS: &str = "model_name, version, artifact_uri, sha256, feature_set, n_features, status, \
                       metrics, created_at, activated_at";

/// The `models` table.
#[derive(Clone, Debug)]
pub struct Registry {
    db: Db,
}

impl Registry {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Records a new version (as given, usually a candidate). Recording the
    /// same version again changes nothing and returns `false`.
    pub async fn insert(&self, m: &ModelRecord) -> anyhow::Result<bool> {
        let result = sqlx::query(
            "INSERT INTO models (model_name, version, artifact_uri, sha256, feature_set, n_features,
                                 status, metrics, created_at, activated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (model_name, version) DO NOTHING",
        )
        .bind(&m.model_name)
        .bind(&m.version)
        .bind(&m.artifact_uri)
        .bind(&m.sha256)
        .bind(&m.feature_set)
        .bind(i32::try_from(m.n_features)?)
        .bind(m.status.as_str())
        .bind(serde_json::to_value(&m.metrics)?)
        .bind(m.created_at)
        .bind(m.activated_at)
        .execute(self.db.pool())
        .await
        .context("recording a model version")?;
        Ok(result.rows_affected() == 1)
    }

    /// One version.
    pub async fn get(
        &self,
        model_name: &str,
        version: &str,
    ) -> anyhow::Result<Option<ModelRecord>> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM models WHERE model_name = $1 AND version = $2"
        ))
        .bind(model_name)
        .bind(version)
        .fetch_optional(self.db.pool())
        .await
        .context("reading a model version")?
        .map(|r| ModelRecord::from_row(&r))
        .transpose()
    }

    /// The active version, if any.
    pub async fn active(&self, model_name: &str) -> anyhow::Result<Option<ModelRecord>> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM models WHERE model_name = $1 AND status = 'active'"
        ))
        .bind(model_name)
        .fetch_optional(self.db.pool())
        .await
        .context("reading the active model")?
        .map(|r| ModelRecord::from_row(&r))
        .transpose()
    }

    /// Every version of a model, newest first.
    pub async fn list(&self, model_name: &str) -> anyhow::Result<Vec<ModelRecord>> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM models WHERE model_name = $1 ORDER BY created_at DESC, version DESC"
        ))
        .bind(model_name)
        .fetch_all(self.db.pool())
        .await
        .context("listing model versions")?
        .iter()
        .map(ModelRecord::from_row)
        .collect()
    }

    /// Sets a version's status (not to `active`: use [`Registry::activate`]).
    pub async fn set_status(
        &self,
        model_name: &str,
        version: &str,
        status: ModelStatus,
    ) -> anyhow::Result<()> {
        if status == ModelStatus::Active {
            bail!("use activate() to make a version active");
        }
        let n = sqlx::query("UPDATE models SET status = $3 WHERE model_name = $1 AND version = $2")
            .bind(model_name)
            .bind(version)
            .bind(status.as_str())
            .execute(self.db.pool())
            .await?
            .rows_affected();
        if n == 0 {
            bail!("no model {model_name} version {version}");
        }
        Ok(())
    }

    /// Makes `version` the active one and retires the one before, in one
    /// transaction; returns the new active record.
    pub async fn activate(
        &self,
        model_name: &str,
        version: &str,
    ) -> Result<ModelRecord, RegistryError> {
        let mut tx = self.db.pool().begin().await?;
        let record = activate_in(&mut tx, model_name, version).await?;
        tx.commit().await.context("activating a model version")?;
        Ok(record)
    }

    /// Re-activates the version that was active before the current one;
    /// returns it.
    pub async fn rollback(&self, model_name: &str) -> Result<ModelRecord, RegistryError> {
        let previous: Option<String> = sqlx::query_scalar(
            "SELECT version FROM models
             WHERE model_name = $1 AND status = 'retired' AND activated_at IS NOT NULL
             ORDER BY activated_at DESC LIMIT 1",
        )
        .bind(model_name)
        .fetch_optional(self.db.pool())
        .await?;
        match previous {
            Some(v) => self.activate(model_name, &v).await,
            None => Err(RegistryError::NothingToRollBack {
                model: model_name.to_owned(),
            }),
        }
    }
}

/// [`Registry::activate`] inside the caller's transaction (an experiment's
/// promotion ends the experiment in the same one).
pub(crate) async fn activate_in(
    tx: &mut sqlx::PgConnection,
    model_name: &str,
    version: &str,
) -> Result<ModelRecord, RegistryError> {
    let exists: Option<String> = sqlx::query_scalar(
        "SELECT status FROM models WHERE model_name = $1 AND version = $2 FOR UPDATE",
    )
    .bind(model_name)
    .bind(version)
    .fetch_optional(&mut *tx)
    .await?;
    if exists.is_none() {
        return Err(RegistryError::NoSuchVersion {
            model: model_name.to_owned(),
            version: version.to_owned(),
        });
    }
    sqlx::query(
        "UPDATE models SET status = 'retired'
         WHERE model_name = $1 AND status = 'active' AND version <> $2",
    )
    .bind(model_name)
    .bind(version)
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query(&format!(
        "UPDATE models SET status = 'active', activated_at = now()
         WHERE model_name = $1 AND version = $2 RETURNING {COLUMNS}"
    ))
    .bind(model_name)
    .bind(version)
    .fetch_one(&mut *tx)
    .await?;
    Ok(ModelRecord::from_row(&row)?)
}
