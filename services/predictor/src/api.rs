//! The REST API.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::{Json, Router, middleware};
use fantasy_cache::Cache;
use fantasy_db::Db;
use fantasy_http::auth::{Authenticator, authenticate};
use fantasy_http::layers::rate_limit;
use fantasy_http::openapi::{self, Access};
use fantasy_http::{ApiError, ApiJson, RateLimiter};
use fantasy_inference::{Engine, FEATURE_LIMIT, ModelInfo, PredictError};
use fantasy_messages::Prediction;

use crate::experiment::{ExperimentState, Pick, ServingView, Shadow, ShadowJob, count_served};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What the handlers share (behind an `Arc`: axum clones the state for
/// every request).
#[derive(Debug)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// The experiment being served, if any.
    pub experiments: Arc<ExperimentState>,
    /// The shadow worker's queue.
    pub shadow: Shadow,
    pub db: Db,
    pub cache: Cache,
    pub max_batch_items: usize,
}

type Shared = State<Arc<AppState>>;

/// `POST /v1/predict`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// Echoed back; not looked up.
    #[serde(default)]
    pub game_id: Option<String>,
    pub features: Vec<f32>,
}

/// The answer to one item.
#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PredictResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub game_id: Option<String>,
    pub home_win_prob: f32,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_set: Option<String>,
    /// The experiment variant that answered (`champion`, `challenger`,
    /// ...): present while an experiment runs and the request names its
    /// `game_id` (a game is always answered by the same variant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// `POST /v1/predict/batch`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub items: Vec<PredictRequest>,
}

/// The answers, in the order of the items.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchResponse {
    pub model_version: String,
    pub results: Vec<BatchItem>,
}

/// One answer of a batch.
#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct BatchItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub game_id: Option<String>,
    pub home_win_prob: f32,
    /// In an experiment: the version that answered this item, when not
    /// the batch's `model_version`'s variant alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// In an experiment: the variant that answered this item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
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
        PredictError::OutOfRange { row, col, value } => ApiError::bad_request(
            "feature_out_of_range",
            format!(
                "features[{col}] of item {row} is {value}; every feature must be within ±{FEATURE_LIMIT}"
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

/// One game's home-win probability from the active model.
#[utoipa::path(
    post,
    path = "/v1/predict",
    request_body = PredictRequest,
    responses(
        (status = 200, description = "The probability", body = PredictResponse),
        (status = 400, description = "Malformed body, wrong feature count (`wrong_feature_count`) a feature that is not finite (`non_finite_feature`) or beyond ±1e6 (`feature_out_of_range`)", body = fantasy_http::openapi::ErrorBody),
        (status = 503, description = "No model loaded yet (`no_model`), a model swap (`stopping`), a full inference queue (`overloaded`), or the request timed out", body = fantasy_http::openapi::ErrorBody),
    )
)]
#[tracing::instrument(name = "predictor.predict", skip_all)]
async fn predict(
    State(state): Shared,
    ApiJson(req): ApiJson<PredictRequest>,
) -> Result<Json<PredictResponse>, ApiError> {
    let pick = state
        .experiments
        .pick(&state.engine, req.game_id.as_deref())
        .ok_or_else(|| predict_error(PredictError::NoModel))?;
    // The shadows score the same features after the answer, off this path.
    let live = state
        .experiments
        .live()
        .filter(|l| l.scoring() && l.has_shadows());
    let shadow_features = live.as_ref().map(|_| req.features.clone());
    let probs = pick
        .batcher
        .predict(req.features, 1)
        .await
        .map_err(predict_error)?;
    if let (Some(live), Some(features)) = (live, shadow_features) {
        state.shadow.offer(ShadowJob::Rest {
            live,
            features,
            rows: 1,
        });
    }
    count_served(pick.variant.as_deref(), "rest", 1);
    let info = pick.batcher.info();
    Ok(Json(PredictResponse {
        game_id: req.game_id,
        home_win_prob: probs[0],
        model_version: info.version.clone(),
        feature_set: info.feature_set.clone(),
        variant: pick.public_variant(),
    }))
}

/// Many items in one call, answered in order (at most MAX_BATCH_ITEMS).
#[utoipa::path(
    post,
    path = "/v1/predict/batch",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "One probability per item, in order", body = BatchResponse),
        (status = 400, description = "Malformed body, no items (`empty_batch`), too many (`too_many_items`), or an item of the wrong width", body = fantasy_http::openapi::ErrorBody),
        (status = 503, description = "No model loaded yet, a model swap, a full queue, or a timeout", body = fantasy_http::openapi::ErrorBody),
    )
)]
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
    let champion = state
        .engine
        .current()
        .ok_or_else(|| predict_error(PredictError::NoModel))?;
    let width = champion.n_features();
    for (i, item) in req.items.iter().enumerate() {
        if item.features.len() != width {
            return Err(ApiError::bad_request(
                "wrong_feature_count",
                format!(
                    "items[{i}] has {} features; the model takes {width}",
                    item.features.len()
                ),
            ));
        }
    }
    let live = state.experiments.live();
    // Items by the model that answers them, in order of first appearance.
    let mut groups: Vec<(Pick, Vec<usize>, Vec<f32>)> = Vec::new();
    for (i, item) in req.items.iter().enumerate() {
        let pick = match (&live, item.game_id.as_deref()) {
            (Some(l), Some(game_id)) => l.pick(Arc::clone(&champion), game_id),
            _ => Pick::alone(Arc::clone(&champion)),
        };
        let at = groups
            .iter()
            .position(|g| Arc::ptr_eq(&g.0.batcher, &pick.batcher) && g.0.variant == pick.variant);
        let at = at.unwrap_or_else(|| {
            groups.push((pick, Vec::new(), Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(i);
        groups[at].2.extend_from_slice(&item.features);
    }
    // The shadows score the same rows after the answer, off this path.
    let shadow = live
        .clone()
        .filter(|l| l.scoring() && l.has_shadows())
        .map(|l| {
            (
                l,
                groups
                    .iter()
                    .flat_map(|g| g.2.iter().copied())
                    .collect::<Vec<f32>>(),
            )
        });
    let answers = futures::future::try_join_all(groups.iter_mut().map(|(pick, idx, rows)| {
        let rows = std::mem::take(rows);
        async move { pick.batcher.predict(rows, idx.len()).await }
    }))
    .await
    .map_err(predict_error)?;
    let mut results: Vec<Option<BatchItem>> = (0..n).map(|_| None).collect();
    let mut items: Vec<Option<PredictRequest>> = req.items.into_iter().map(Some).collect();
    let in_experiment = live.is_some();
    for ((pick, idx, _), probs) in groups.iter().zip(answers) {
        count_served(pick.variant.as_deref(), "rest", idx.len() as u64);
        for (i, p) in idx.iter().zip(probs) {
            let game_id = items[*i].take().and_then(|item| item.game_id);
            results[*i] = Some(BatchItem {
                game_id,
                home_win_prob: p,
                model_version: (in_experiment && pick.shown)
                    .then(|| pick.batcher.info().version.clone()),
                variant: pick.public_variant(),
            });
        }
    }
    if let Some((live, features)) = shadow {
        state.shadow.offer(ShadowJob::Rest {
            live,
            features,
            rows: n,
        });
    }
    Ok(Json(BatchResponse {
        model_version: champion.info().version.clone(),
        results: results.into_iter().flatten().collect(),
    }))
}

/// The latest prediction made for a game (Redis, else Postgres).
#[utoipa::path(
    get,
    path = "/v1/predictions/{game_id}",
    params(("game_id" = String, Path, description = "The game's id, as on the games topic")),
    responses(
        (status = 200, description = "The game's latest prediction", body = Prediction),
        (status = 404, description = "No prediction for this game", body = fantasy_http::openapi::ErrorBody),
    )
)]
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

/// The model being served.
#[utoipa::path(
    get,
    path = "/v1/models/active",
    responses(
        (status = 200, description = "The active model", body = ModelInfo),
        (status = 503, description = "No model loaded yet (`no_model`)", body = fantasy_http::openapi::ErrorBody),
    )
)]
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
    let base =
        serde_json::to_value(openapi(limiter.is_some(), state.max_batch_items)).unwrap_or_default();
    let engine = Arc::clone(&state.engine);
    let (mut api, _) = routes().with_state(state).split_for_parts();
    if let Some(limiter) = limiter {
        api = api.layer(middleware::from_fn_with_state(limiter, rate_limit));
    }
    api.layer(middleware::from_fn_with_state(auth, authenticate))
        .merge(openapi::route_with(move || {
            with_feature_width(base.clone(), engine.info().map(|i| i.n_features))
        }))
}

/// `doc` with `features` of exactly `width` numbers, the width of the model
/// being served (unknown, and left open, before the first model).
pub fn with_feature_width(mut doc: serde_json::Value, width: Option<usize>) -> serde_json::Value {
    if let Some(width) = width
        && let Some(features) =
            doc.pointer_mut("/components/schemas/PredictRequest/properties/features")
    {
        features["minItems"] = width.into();
        features["maxItems"] = width.into();
    }
    doc
}

/// The experiment this replica serves: its variants and weights, the
/// versions loaded for it, or why the registry's experiment is not served.
#[utoipa::path(
    get,
    path = "/v1/experiment",
    responses((status = 200, description = "The experiment served (null when none)", body = ServingView))
)]
async fn serving_experiment(State(state): Shared) -> Json<ServingView> {
    Json(state.experiments.view())
}

fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(predict))
        .routes(routes!(serving_experiment))
        .routes(routes!(predict_batch))
        .routes(routes!(latest_prediction))
        .routes(routes!(active_model))
}

/// The API's OpenAPI document (what `GET /openapi.json` answers, before
/// [`with_feature_width`]): batches of 1 to `max_batch_items` items, and
/// features within ±[`FEATURE_LIMIT`] (`feature_out_of_range` otherwise).
pub fn openapi(rate_limited: bool, max_batch_items: usize) -> serde_json::Value {
    let (_, doc) = routes().split_for_parts();
    let doc = openapi::document(doc, "predictor", Access::Token, rate_limited);
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    let schemas = "/components/schemas";
    if let Some(items) = doc.pointer_mut(&format!("{schemas}/BatchRequest/properties/items")) {
        items["minItems"] = 1.into();
        items["maxItems"] = max_batch_items.into();
    }
    if let Some(feature) = doc.pointer_mut(&format!(
        "{schemas}/PredictRequest/properties/features/items"
    )) {
        feature["minimum"] = f64::from(-FEATURE_LIMIT).into();
        feature["maximum"] = f64::from(FEATURE_LIMIT).into();
    }
    doc
}
