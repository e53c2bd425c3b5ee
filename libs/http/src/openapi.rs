//! The OpenAPI 3.1 document of a service's REST API, generated from its
//! handlers (`#[utoipa::path]` on each, collected by `utoipa_axum`'s
//! `OpenApiRouter`) and served at `GET /openapi.json`.
//!
//! [`document`] completes what the handlers declare with what the shared
//! layers add to every route, so that the document lists every status a
//! route can answer: 401 on authenticated routes, 400/413/415 on routes that
//! take a JSON body, 429 where rate limits apply, 500 (a handler that
//! panicked or failed), 503 (the request timeout, load shedding). Every
//! error has the one shape `{"error": {"code", "message"}}` ([`ErrorBody`]).

use axum::Router;
use axum::routing::get;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::{PartialSchema as _, ToSchema};

/// The body of every error answer.
#[derive(Debug, serde::Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable machine-readable code and a message a person
/// can act on (never an internal cause).
#[derive(Debug, serde::Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// `not_found`, `wrong_feature_count`, `unauthorized`...
    pub code: String,
    pub message: String,
}

/// The name of the bearer-token security scheme in every document.
pub const BEARER: &str = "bearer";

/// Who may call a service's API routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token needed (the collector's status).
    Open,
    /// A valid token (`AUTH_REQUIRED=true`, the binaries' default).
    Token,
    /// A valid token with the `admin` claim.
    Admin,
}

/// Completes `api` (the paths the handlers declared) into `service`'s
/// document: its title and version, the error schema, the bearer scheme
/// and each operation's security (per `access`), and the statuses the
/// shared layers answer on every route. `rate_limited`: the route layer
/// may answer 429.
pub fn document(mut api: OpenApi, service: &str, access: Access, rate_limited: bool) -> OpenApi {
    api.info.title = format!("fantasy {service}");
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    // Not utoipa's own (what its derive fills in from the crate it runs in).
    api.info.contact = None;
    api.info.license = Some(utoipa::openapi::License::new(env!("CARGO_PKG_LICENSE")));
    api.info.description = Some(format!(
        "The REST API of the fantasy {service}. Every error answers \
         {{\"error\": {{\"code\", \"message\"}}}}."
    ));
    let components = api.components.take().unwrap_or_default();
    let mut components = ComponentsBuilder::from(components)
        .schema("ErrorBody", ErrorBody::schema())
        .schema("ErrorDetail", ErrorDetail::schema());
    if access != Access::Open {
        components = components.security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256 JWT signed with JWT_SECRET; `admin: true` for the trainer's routes",
                    ))
                    .build(),
            ),
        );
    }
    api.components = Some(components.build());
    for item in api.paths.paths.values_mut() {
        for op in operations(item) {
            complete(op, access, rate_limited);
        }
    }
    api
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn complete(op: &mut Operation, access: Access, rate_limited: bool) {
    let mut add = |status: &str, why: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(why));
    };
    if access != Access::Open {
        add(
            "401",
            "No token, or a token that is expired or not signed with the service's key",
        );
    }
    if access == Access::Admin {
        add("403", "A valid token without the admin claim");
    }
    if op.request_body.is_some() {
        add(
            "400",
            "The body is not valid JSON, or does not fit the schema",
        );
        add("413", "The body is larger than MAX_BODY_BYTES");
        add("415", "The body is not sent as application/json");
    }
    if rate_limited {
        add("429", "Too many requests from this client (Retry-After)");
    }
    add(
        "500",
        "The request failed inside the service; its log has the cause",
    );
    add(
        "503",
        "The request took longer than REQUEST_TIMEOUT, or too many are in progress (Retry-After)",
    );
    if access != Access::Open {
        op.security = Some(vec![SecurityRequirement::new::<_, _, &str>(BEARER, [])]);
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// `GET /openapi.json`, answering `api`.
pub fn route(api: OpenApi) -> Router {
    let body = serde_json::to_value(&api).unwrap_or_default();
    route_with(move || body.clone())
}

/// `GET /openapi.json`, answering what `document` makes at the time of the
/// request (a document that follows the service's state: the predictor's
/// feature width follows the model it serves).
pub fn route_with<F>(document: F) -> Router
where
    F: Fn() -> serde_json::Value + Clone + Send + Sync + 'static,
{
    Router::new().route(
        "/openapi.json",
        get(move || {
            let document = document.clone();
            async move { axum::Json(document()) }
        }),
    )
}
