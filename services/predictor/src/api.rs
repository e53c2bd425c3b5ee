//! The REST API.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use fantasy_cache::Cache;
use fantasy_db::Db;
use fantasy_http::auth::{Authenticator, authenticate};
use fantasy_http::layers::rate_limit;
use fantasy_http::{ApiError, ApiJson, RateLimiter};
use fantasy_inference::{Engine, ModelInfo, PredictError};
use fantasy_messages::Prediction;
use serde::{Deserialize, Serialize};

/// What the handlers share (behind an `Arc`: axum clones the state for
/// every request).
#[derive(Debug)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub db: Db,
    pub cache: Cache,
    pub max_batch_items: usize,
}

type Shared = State<Arc<AppState>>;

/// `POST /v1/predict`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// Echoed back; not looked up.
    #[serde(default)]
    pub game_id: Option<String>,
    pub features: Vec<f32>,
}

/// The answer to one item.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PredictResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub game_id: Option<String>,
    pub home_win_prob: f32,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_set: Option<String>,
}

/// `POST /v1/predict/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub items: Vec<PredictRequest>,
}

/// The answers, in the order of the items.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchResponse {
    pub model_version: String,
    pub results: Vec<BatchItem>,
}

/// One answer of a batch.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct BatchItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub game_id: Option<String>,
    pub home_win_prob: f32,
}

fn predict_error(e: PredictError) -> ApiError {
    match e {
        PredictError::FeatureCount { expected, got } => ApiError::bad_request(
            "wrong_feature_count",
            format!("the model takes {expected} features per row; got {got}"),
        ),
        PredictError::NonFinite { row, col, value } => ApiError::bad_request(
            "non_finite_feature",
            format!(
                "features[{col}] of item {row} is {value}; every feature must be a finite number"
            ),
        ),
        PredictError::Overloaded => ApiError::overloaded(
            "the inference queue is full; retry shortly",
            Duration::from_secs(1),
        ),
        PredictError::NoModel => ApiError::unavailable("no_model", "no model is loaded yet"),
        PredictError::Stopped => ApiError::unavailable(
            "stopping",
            "the model is being replaced or shut down; retry",
        ),
        PredictError::Failed(cause) => {
            ApiError::internal(format_args!("inference failed: {cause}"))
        }
    }
}

#[tracing::instrument(name = "predictor.predict", skip_all)]
async fn predict(
    State(state): Shared,
    ApiJson(req): ApiJson<PredictRequest>,
) -> Result<Json<PredictResponse>, ApiError> {
    let batcher = state
        .engine
        .current()
        .ok_or_else(|| predict_error(PredictError::NoModel))?;
    let probs = batcher
        .predict(req.features, 1)
        .await
        .map_err(predict_error)?;
    let info = batcher.info();
    Ok(Json(PredictResponse {
        game_id: req.game_id,
        home_win_prob: probs[0],
        model_version: info.version.clone(),
        feature_set: info.feature_set.clone(),
    }))
}

#[tracing::instrument(name = "predictor.predict_batch", skip_all, fields(items = req.items.len()))]
async fn predict_batch(
    State(state): Shared,
    ApiJson(req): ApiJson<BatchRequest>,
) -> Result<Json<BatchResponse>, ApiError> {
    let n = req.items.len();
    if n == 0 {
        return Err(ApiError::bad_request("empty_batch", "items is empty"));
    }
    if n > state.max_batch_items {
        return Err(ApiError::bad_request(
            "too_many_items",
            format!("{n} items; the limit is {}", state.max_batch_items),
        ));
    }
    let batcher = state
        .engine
        .current()
        .ok_or_else(|| predict_error(PredictError::NoModel))?;
    let width = batcher.n_features();
    let mut flat = Vec::with_capacity(n * width);
    let mut ids = Vec::with_capacity(n);
    for (i, item) in req.items.into_iter().enumerate() {
        if item.features.len() != width {
            return Err(ApiError::bad_request(
                "wrong_feature_count",
                format!(
                    "items[{i}] has {} features; the model takes {width}",
                    item.features.len()
                ),
            ));
        }
        flat.extend_from_slice(&item.features);
        ids.push(item.game_id);
    }
    let probs = batcher.predict(flat, n).await.map_err(predict_error)?;
    Ok(Json(BatchResponse {
        model_version: batcher.info().version.clone(),
        results: ids
            .into_iter()
            .zip(probs)
            .map(|(game_id, home_win_prob)| BatchItem {
                game_id,
                home_win_prob,
            })
            .collect(),
    }))
}

async fn latest_prediction(
    State(state): Shared,
    Path(game_id): Path<String>,
) -> Result<Json<Prediction>, ApiError> {
    match state.cache.latest_prediction(&game_id).await {
        Ok(Some(p)) => return Ok(Json(p)),
        Ok(None) => {}
        // Redis is a cache: when it fails, Postgres still answers.
        Err(e) => tracing::warn!(%game_id, "cache read failed, asking Postgres: {e}"),
    }
    match state.db.latest_prediction(&game_id).await {
        Ok(Some(p)) => Ok(Json(p)),
        Ok(None) => Err(ApiError::not_found(format!(
            "no prediction for game {game_id:?}"
        ))),
        Err(e) => Err(ApiError::internal(format_args!("{e:#}"))),
    }
}

async fn active_model(State(state): Shared) -> Result<Json<ModelInfo>, ApiError> {
    state
        .engine
        .info()
        .map(|i| Json((*i).clone()))
        .ok_or_else(|| ApiError::unavailable("no_model", "no model is loaded yet"))
}

/// The API routes, authenticated (and rate-limited when configured).
pub fn router(
    state: Arc<AppState>,
    auth: Arc<Authenticator>,
    limiter: Option<Arc<RateLimiter>>,
) -> Router {
    let mut api = Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/predict/batch", post(predict_batch))
        .route("/v1/predictions/{game_id}", get(latest_prediction))
        .route("/v1/models/active", get(active_model))
        .with_state(state);
    if let Some(limiter) = limiter {
        api = api.layer(middleware::from_fn_with_state(limiter, rate_limit));
    }
    api.layer(middleware::from_fn_with_state(auth, authenticate))
}
