//! The trainer's REST API. Every `/v1` route is for operators: it needs a
//! token with the `admin` claim (with `AUTH_REQUIRED=false`, as in the local
//! all-in-one, callers without a token are let through).
//!
//! - `GET /v1/models`: every version, newest first, with status and scores.
//! - `GET /v1/models/{version}`: one version.
//! - `POST /v1/models/{version}/promote`: make it active and announce it.
//! - `POST /v1/rollback`: re-activate the version active before the current one.
//! - `POST /v1/train`: train now (no cool-down; 409 while a training runs);
//!   answers when the run ends, with its report, or, when the run outlasts
//!   nine tenths of `REQUEST_TIMEOUT`, with 202 (`{"status": "running"}`)
//!   while it goes on: `GET /v1/runs` shows it when it ends. (Waiting
//!   longer would end in the timeout layer's 503, which reads as a failure
//!   although the run carries on.)
//! - `GET /v1/runs`: the last training runs.
//! - `POST /v1/experiments`, `GET /v1/experiments`, `GET /v1/experiments/{id}`,
//!   `POST /v1/experiments/{id}/{pause,resume,stop,promote}`: model
//!   experiments (docs/experiments.md); every change is announced on
//!   `models`, so the predictors follow within seconds.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::{Extension, Json, Router, middleware};
use chrono::{DateTime, Utc};
use fantasy_http::ApiError;
use fantasy_http::ApiJson;
use fantasy_http::auth::{Authenticator, Client, authenticate};
use fantasy_http::openapi::{self, Access};
use fantasy_messages::TrainingMetrics;
use fantasy_registry::experiments::{DecisionRecord, NewExperiment, Settings, Status};
use fantasy_registry::{Experiment, ExperimentError, Experiments, ModelRecord, RegistryError};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::control::{ControlState, Request};
use crate::experiments::{Standing, standing};
use crate::reason::Reason;
use crate::train::{RunError, RunReport, RunRow, Trainer};

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    pub trainer: Arc<Trainer>,
    pub control: mpsc::Sender<Request>,
    pub state: Arc<ControlState>,
    pub auth_required: bool,
    /// How long `POST /v1/train` waits for the run before answering 202.
    pub answer_within: Duration,
    pub experiments: Experiments,
    /// Settings of an experiment created without its own.
    pub experiment_defaults: Settings,
}

/// A model version as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelView {
    pub model_name: String,
    pub version: String,
    /// `candidate`, `active`, `retired` or `rejected`.
    #[schema(value_type = String)]
    pub status: &'static str,
    pub artifact_uri: String,
    pub sha256: String,
    pub feature_set: String,
    pub n_features: u32,
    pub metrics: TrainingMetrics,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
}

impl From<ModelRecord> for ModelView {
    fn from(r: ModelRecord) -> Self {
        Self {
            status: r.status.as_str(),
            model_name: r.model_name,
            version: r.version,
            artifact_uri: r.artifact_uri,
            sha256: r.sha256,
            feature_set: r.feature_set,
            n_features: r.n_features,
            metrics: r.metrics,
            created_at: r.created_at,
            activated_at: r.activated_at,
        }
    }
}

/// Every route's gate, after `authenticate`: the admin claim (or, with
/// authentication off, no token at all).
async fn require_admin(
    State(s): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    if client.admin || (!s.auth_required && !client.authenticated) {
        next.run(request).await
    } else {
        ApiError::forbidden("this endpoint needs a token with the admin claim").into_response()
    }
}

/// The registry's refusals as answers; its failures as a 500 (logged).
fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::NoSuchVersion { .. } => ApiError::not_found(e.to_string()),
        RegistryError::NothingToRollBack { .. } => {
            ApiError::new(StatusCode::CONFLICT, "nothing_to_roll_back", e.to_string())
        }
        RegistryError::Failed(e) => ApiError::internal(e),
    }
}

/// Every version of the model, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelList {
    pub model_name: String,
    pub models: Vec<ModelView>,
}

/// The last training runs, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunList {
    pub runs: Vec<RunRow>,
}

/// A training that goes on after the answer (202).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Running {
    /// `running`.
    #[schema(value_type = String)]
    pub status: &'static str,
    pub message: &'static str,
}

#[utoipa::path(
    get,
    path = "/v1/models",
    responses((status = 200, description = "Every version, newest first", body = ModelList))
)]
async fn list(State(s): State<Arc<AppState>>) -> Result<Json<ModelList>, ApiError> {
    let t = &s.trainer;
    let models: Vec<ModelView> = t
        .registry
        .list(&t.model_name)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(ModelView::from)
        .collect();
    Ok(Json(ModelList {
        model_name: t.model_name.clone(),
        models,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/models/{version}",
    params(("version" = String, Path, description = "The registry version")),
    responses(
        (status = 200, description = "The version", body = ModelView),
        (status = 404, description = "No such version", body = fantasy_http::openapi::ErrorBody),
    )
)]
async fn one(
    State(s): State<Arc<AppState>>,
    Path(version): Path<String>,
) -> Result<Json<ModelView>, ApiError> {
    let t = &s.trainer;
    t.registry
        .get(&t.model_name, &version)
        .await
        .map_err(ApiError::internal)?
        .map(|r| Json(ModelView::from(r)))
        .ok_or_else(|| ApiError::not_found(format!("no version {version} of {}", t.model_name)))
}

/// Makes a version active and announces it on the models topic.
#[utoipa::path(
    post,
    path = "/v1/models/{version}/promote",
    params(("version" = String, Path, description = "The registry version")),
    responses(
        (status = 200, description = "The version, now active", body = ModelView),
        (status = 404, description = "No such version", body = fantasy_http::openapi::ErrorBody),
    )
)]
async fn promote(
    State(s): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    Path(version): Path<String>,
) -> Result<Json<ModelView>, ApiError> {
    tracing::info!(%version, by = %client.id, "promotion requested");
    let record = s.trainer.promote(&version).await.map_err(registry_error)?;
    Ok(Json(record.into()))
}

/// Re-activates the version active before the current one.
#[utoipa::path(
    post,
    path = "/v1/rollback",
    responses(
        (status = 200, description = "The version active again", body = ModelView),
        (status = 409, description = "No version to roll back to (`nothing_to_roll_back`)", body = fantasy_http::openapi::ErrorBody),
    )
)]
async fn rollback(
    State(s): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
) -> Result<Json<ModelView>, ApiError> {
    tracing::info!(by = %client.id, "rollback requested");
    let record = s.trainer.rollback().await.map_err(registry_error)?;
    Ok(Json(record.into()))
}

/// Trains now, and answers with the run's report when it ends in time.
#[utoipa::path(
    post,
    path = "/v1/train",
    responses(
        (status = 200, description = "The run ended: its report (promoted or rejected)", body = RunReport),
        (status = 202, description = "The run goes on after the answer; GET /v1/runs shows it", body = Running),
        (status = 409, description = "A training is running (`training_running`) or there is not enough history (`not_enough_data`)", body = fantasy_http::openapi::ErrorBody),
        (status = 500, description = "The training failed (`training_failed`); the trainer's log has the cause", body = fantasy_http::openapi::ErrorBody),
        (status = 503, description = "The trainer is shutting down, or the request timed out", body = fantasy_http::openapi::ErrorBody),
    )
)]
async fn train(
    State(s): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
) -> Result<Response, ApiError> {
    let busy = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "training_running",
            "a training is running; try again when it ends",
        )
    };
    if s.state.running.load(Ordering::SeqCst) {
        return Err(busy());
    }
    let (tx, rx) = oneshot::channel();
    s.control
        .try_send(Request {
            reason: Reason::Api,
            detail: format!("requested by {}", client.id),
            reply: Some(tx),
        })
        .map_err(|_| busy())?;
    let Ok(outcome) = tokio::time::timeout(s.answer_within, rx).await else {
        // The run goes on; dropping the receiver only drops its report.
        return Ok((
            StatusCode::ACCEPTED,
            Json(Running {
                status: "running",
                message: "the training goes on after this answer; GET /v1/runs shows it when it ends",
            }),
        )
            .into_response());
    };
    match outcome {
        Ok(Ok(report)) => Ok(Json(report).into_response()),
        Ok(Err(RunError::Busy)) => Err(busy()),
        Ok(Err(e @ RunError::NotEnoughData { .. })) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_enough_data",
            e.to_string(),
        )),
        Ok(Err(RunError::Failed(e))) => {
            // The cause (paths, SQL, the store's answers) is for the log;
            // the client learns that it failed and where to look.
            tracing::error!("training failed: {e:#}");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "training_failed",
                "the training failed; the trainer's log has the cause",
            ))
        }
        Err(_) => Err(ApiError::unavailable(
            "shutting_down",
            "the trainer is shutting down",
        )),
    }
}

#[utoipa::path(
    get,
    path = "/v1/runs",
    responses((status = 200, description = "The last 50 runs, newest first", body = RunList))
)]
async fn runs(State(s): State<Arc<AppState>>) -> Result<Json<RunList>, ApiError> {
    let rows = s
        .trainer
        .recent_runs(50)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(RunList { runs: rows }))
}

/// The experiment refusals as answers; failures as a 500 (logged).
fn experiment_error(e: ExperimentError) -> ApiError {
    let conflict = |code: &'static str, e: &ExperimentError| {
        ApiError::new(StatusCode::CONFLICT, code, e.to_string())
    };
    match e {
        ExperimentError::Invalid(m) => ApiError::bad_request("invalid_experiment", m),
        ExperimentError::NoSuchVersion { .. } | ExperimentError::NotFound { .. } => {
            ApiError::not_found(e.to_string())
        }
        ExperimentError::NoChampion { .. } => conflict("no_champion", &e),
        ExperimentError::AlreadyLive { .. } => conflict("experiment_live", &e),
        ExperimentError::WrongState { .. } => conflict("wrong_state", &e),
        ExperimentError::Failed(e) => ApiError::internal(e),
    }
}

/// How many games a variant served, and scored without serving.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Exposure {
    pub variant: String,
    pub served: i64,
    pub scored: i64,
}

/// An experiment, where it stands, and what was decided.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExperimentView {
    pub experiment: Experiment,
    /// Each variant's scores and each comparison with the champion, on the
    /// finished games (null before the first).
    pub standing: Option<Standing>,
    pub exposure: Vec<Exposure>,
    /// Oldest first.
    pub decisions: Vec<DecisionRecord>,
}

/// The model's experiments, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExperimentList {
    pub model_name: String,
    pub experiments: Vec<Experiment>,
}

async fn experiment_view(s: &AppState, e: Experiment) -> Result<ExperimentView, ApiError> {
    let games = s
        .experiments
        .paired(e.id)
        .await
        .map_err(ApiError::internal)?;
    let exposure = s
        .experiments
        .exposure(e.id)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(variant, served, scored)| Exposure {
            variant,
            served,
            scored,
        })
        .collect();
    let decisions = s
        .experiments
        .decisions(e.id)
        .await
        .map_err(ApiError::internal)?;
    Ok(ExperimentView {
        standing: (!games.is_empty()).then(|| standing(&e, &games)),
        experiment: e,
        exposure,
        decisions,
    })
}

/// Wakes the predictors after a change (it is in the registry already: a
/// failed announcement is logged, and the next one carries it).
async fn announce_change(s: &AppState) {
    if let Err(e) = s.trainer.wake_predictors().await {
        tracing::error!("announcing an experiment change on `models`: {e:#}");
    }
}

/// Starts an experiment against the active version.
#[utoipa::path(
    post,
    path = "/v1/experiments",
    request_body = NewExperiment,
    responses(
        (status = 201, description = "The experiment, running", body = ExperimentView),
        (status = 400, description = "A plan that cannot run (`invalid_experiment`): weights, names, modes, settings, versions of another feature set", body = fantasy_http::openapi::ErrorBody),
        (status = 404, description = "No such version", body = fantasy_http::openapi::ErrorBody),
        (status = 409, description = "No active version (`no_champion`), or an experiment is live already (`experiment_live`)", body = fantasy_http::openapi::ErrorBody),
    )
)]
async fn create_experiment(
    State(s): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    ApiJson(new): ApiJson<NewExperiment>,
) -> Result<Response, ApiError> {
    let e = s
        .experiments
        .create(
            &s.trainer.model_name,
            &new,
            &s.experiment_defaults,
            &client.id,
        )
        .await
        .map_err(experiment_error)?;
    tracing::info!(experiment = e.id, mode = e.mode.as_str(), by = %client.id, "experiment started");
    announce_change(&s).await;
    let view = experiment_view(&s, e).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/experiments",
    responses((status = 200, description = "The last 50 experiments, newest first", body = ExperimentList))
)]
async fn list_experiments(
    State(s): State<Arc<AppState>>,
) -> Result<Json<ExperimentList>, ApiError> {
    let experiments = s
        .experiments
        .list(&s.trainer.model_name, 50)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(ExperimentList {
        model_name: s.trainer.model_name.clone(),
        experiments,
    }))
}

/// The experiment of the path's `id` (one that is not a number names no
/// experiment: 404, as for any id not found).
async fn find(s: &AppState, id: &str) -> Result<Experiment, ApiError> {
    let missing = || ApiError::not_found(format!("no experiment {id:?}"));
    let id: i64 = id.parse().map_err(|_| missing())?;
    s.experiments
        .get(id)
        .await
        .map_err(ApiError::internal)?
        .filter(|e| e.model_name == s.trainer.model_name)
        .ok_or_else(missing)
}

#[utoipa::path(
    get,
    path = "/v1/experiments/{id}",
    params(("id" = i64, Path, description = "The experiment's id")),
    responses(
        (status = 200, description = "The experiment, its standing and its decisions", body = ExperimentView),
        (status = 404, description = "No such experiment", body = fantasy_http::openapi::ErrorBody),
    )
)]
async fn show_experiment(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<ExperimentView>, ApiError> {
    let e = find(&s, &id).await?;
    Ok(Json(experiment_view(&s, e).await?))
}

async fn change_status(
    s: &AppState,
    client: &Client,
    id: &str,
    to: Status,
    action: &'static str,
) -> Result<Json<ExperimentView>, ApiError> {
    let id = find(s, id).await?.id;
    let decision = fantasy_registry::experiments::Decision {
        action,
        variant: None,
        reason: format!("{action} requested by {}", client.id),
        evidence: serde_json::Value::Null,
        decided_by: client.id.clone(),
    };
    let e = s
        .experiments
        .set_status(id, to, &decision)
        .await
        .map_err(experiment_error)?;
    tracing::info!(experiment = id, action, by = %client.id, "experiment changed");
    announce_change(s).await;
    Ok(Json(experiment_view(s, e).await?))
}

/// Serves the champion only, scores nothing, decides nothing, until resumed.
#[utoipa::path(
    post,
    path = "/v1/experiments/{id}/pause",
    params(("id" = i64, Path, description = "The experiment's id")),
    responses(
        (status = 200, description = "The experiment, paused", body = ExperimentView),
        (status = 404, description = "No such experiment", body = fantasy_http::openapi::ErrorBody),
        (status = 409, description = "It is not running (`wrong_state`)", body = fantasy_http::openapi::ErrorBody),
    )
)]
async fn pause_experiment(
    State(s): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
) -> Result<Json<ExperimentView>, ApiError> {
    change_status(&s, &client, &id, Status::Paused, "pause").await
}

/// Runs a paused experiment again.
#[utoipa::path(
    post,
    path = "/v1/experiments/{id}/resume",
    params(("id" = i64, Path, description = "The experiment's id")),
    responses(
        (status = 200, description = "The experiment, running", body = ExperimentView),
        (status = 404, description = "No such experiment", body = fantasy_http::openapi::ErrorBody),
        (status = 409, description = "It is not paused (`wrong_state`)", body = fantasy_http::openapi::ErrorBody),
    )
)]
async fn resume_experiment(
    State(s): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
) -> Result<Json<ExperimentView>, ApiError> {
    change_status(&s, &client, &id, Status::Running, "resume").await
}

/// Ends the experiment; the champion serves alone.
#[utoipa::path(
    post,
    path = "/v1/experiments/{id}/stop",
    params(("id" = i64, Path, description = "The experiment's id")),
    responses(
        (status = 200, description = "The experiment, stopped", body = ExperimentView),
        (status = 404, description = "No such experiment", body = fantasy_http::openapi::ErrorBody),
        (status = 409, description = "It has ended already (`wrong_state`)", body = fantasy_http::openapi::ErrorBody),
    )
)]
async fn stop_experiment(
    State(s): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
) -> Result<Json<ExperimentView>, ApiError> {
    change_status(&s, &client, &id, Status::Stopped, "stop").await
}

/// `POST /v1/experiments/{id}/promote`'s query.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct PromoteQuery {
    /// The variant to promote; may be left out when there is one
    /// challenger or shadow.
    pub variant: Option<String>,
}

/// Ends the experiment by making a variant's version the active one, and
/// announces it.
#[utoipa::path(
    post,
    path = "/v1/experiments/{id}/promote",
    params(("id" = i64, Path, description = "The experiment's id"), PromoteQuery),
    responses(
        (status = 200, description = "The experiment, promoted", body = ExperimentView),
        (status = 400, description = "No such variant, or several to choose from (`invalid_experiment`)", body = fantasy_http::openapi::ErrorBody),
        (status = 404, description = "No such experiment", body = fantasy_http::openapi::ErrorBody),
        (status = 409, description = "It has ended already (`wrong_state`)", body = fantasy_http::openapi::ErrorBody),
    )
)]
async fn promote_experiment(
    State(s): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<PromoteQuery>,
) -> Result<Json<ExperimentView>, ApiError> {
    let e = find(&s, &id).await?;
    let id = e.id;
    let variant = match q.variant {
        Some(v) => v,
        None => {
            let others: Vec<&str> = e
                .variants
                .iter()
                .filter(|v| v.role != fantasy_registry::experiments::Role::Champion)
                .map(|v| v.name.as_str())
                .collect();
            match others.as_slice() {
                [one] => (*one).to_owned(),
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_experiment",
                        format!("name the variant to promote (?variant=): one of {others:?}"),
                    ));
                }
            }
        }
    };
    let decision = fantasy_registry::experiments::Decision {
        action: "promote",
        variant: Some(variant.clone()),
        reason: format!("promotion requested by {}", client.id),
        evidence: serde_json::Value::Null,
        decided_by: client.id.clone(),
    };
    let (e, record) = s
        .experiments
        .promote(id, &variant, &decision)
        .await
        .map_err(experiment_error)?;
    tracing::info!(experiment = id, %variant, version = %record.version, by = %client.id, "experiment promoted");
    if let Err(err) = s.trainer.announce(&record).await {
        tracing::error!("announcing the promotion on `models`: {err:#}");
    }
    Ok(Json(experiment_view(&s, e).await?))
}

pub fn router(state: Arc<AppState>, auth: Arc<Authenticator>) -> Router {
    let (api, doc) = routes().split_for_parts();
    api.route_layer(middleware::from_fn_with_state(
        Arc::clone(&state),
        require_admin,
    ))
    .with_state(state)
    .layer(middleware::from_fn_with_state(auth, authenticate))
    .merge(openapi::route(document(doc)))
}

fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(one))
        .routes(routes!(promote))
        .routes(routes!(rollback))
        .routes(routes!(train))
        .routes(routes!(runs))
        .routes(routes!(create_experiment, list_experiments))
        .routes(routes!(show_experiment))
        .routes(routes!(pause_experiment))
        .routes(routes!(resume_experiment))
        .routes(routes!(stop_experiment))
        .routes(routes!(promote_experiment))
}

fn document(doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    openapi::document(doc, "trainer", Access::Admin, false)
}

/// The API's OpenAPI document (what `GET /openapi.json` answers).
pub fn openapi() -> utoipa::openapi::OpenApi {
    document(routes().split_for_parts().1)
}
