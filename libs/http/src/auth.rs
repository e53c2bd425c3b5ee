//! JWT authentication (HS256).
//!
//! Tokens come in `Authorization: Bearer <jwt>` or, for WebSocket clients
//! that cannot set headers, a `token` query parameter. Claims: `sub` (the
//! client id, also the rate-limit key), `exp` (required), optional `admin`
//! and optional `channels` (the channels a fanout client may subscribe to).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fantasy_config::{Parser, Profile, Secret};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ApiError;

/// Shortest secret accepted: HS256 wants at least 256 bits of key.
pub const MIN_SECRET_BYTES: usize = 32;

/// Authentication settings.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// `AUTH_REQUIRED`: refuse requests without a valid token. On by default
    /// for the service binaries ([`Profile::Service`]), off for the local
    /// all-in-one ([`Profile::Local`]).
    pub required: bool,
    /// `JWT_SECRET` or `JWT_SECRET_FILE`: the HS256 key.
    pub secret: Option<Secret>,
}

impl AuthConfig {
    /// No authentication (tests, the local all-in-one).
    pub fn disabled() -> Self {
        Self {
            required: false,
            secret: None,
        }
    }

    /// Authentication with `secret`.
    pub fn with_secret(secret: impl Into<String>) -> Self {
        Self {
            required: true,
            secret: Some(Secret::new(secret)),
        }
    }

    /// Reads `AUTH_REQUIRED` (its default from `profile`) and
    /// `JWT_SECRET`/`JWT_SECRET_FILE`.
    pub fn from_env(p: &mut Parser<'_>, profile: Profile) -> Self {
        let required = p.flag("AUTH_REQUIRED", profile == Profile::Service);
        let secret = p.secret("JWT_SECRET");
        match &secret {
            None if required => p.problem(
                "JWT_SECRET",
                "required while AUTH_REQUIRED=true: set JWT_SECRET or JWT_SECRET_FILE \
                 (or AUTH_REQUIRED=false for a local run)",
            ),
            Some(s) if s.expose().len() < MIN_SECRET_BYTES => p.problem(
                "JWT_SECRET",
                format!(
                    "is {} bytes; HS256 needs at least {MIN_SECRET_BYTES}",
                    s.expose().len()
                ),
            ),
            _ => {}
        }
        Self { required, secret }
    }
}

impl std::fmt::Display for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "required={} secret={}",
            self.required,
            if self.secret.is_some() {
                "[set]"
            } else {
                "(none)"
            }
        )
    }
}

/// The claims we read and write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The client's id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// May call admin endpoints (model promotion, rollback).
    #[serde(default)]
    pub admin: bool,
    /// Channels a streaming client may subscribe to; `None` means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
}

/// Who is calling, as handlers see it (a request extension).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// `sub` of the token, or `ip:<address>` for anonymous callers.
    pub id: String,
    pub authenticated: bool,
    pub admin: bool,
    pub channels: Option<Vec<String>>,
}

/// Checks tokens.
pub struct Authenticator {
    required: bool,
    key: Option<(DecodingKey, EncodingKey)>,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(cfg: &AuthConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            required: cfg.required,
            key: cfg.secret.as_ref().map(|s| {
                (
                    DecodingKey::from_secret(s.expose().as_bytes()),
                    EncodingKey::from_secret(s.expose().as_bytes()),
                )
            }),
            validation,
        }
    }

    /// Signs `claims` (for tests and tools that mint tokens).
    pub fn issue(&self, claims: &Claims) -> Result<String, ApiError> {
        let (_, key) = self
            .key
            .as_ref()
            .ok_or_else(|| ApiError::internal("no JWT secret configured"))?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key)
            .map_err(ApiError::internal)
    }

    /// Finds and checks the caller's token. A token that is present but bad
    /// is refused even when authentication is optional.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        peer: Option<SocketAddr>,
    ) -> Result<Client, ApiError> {
        let token = bearer(headers).or_else(|| query.and_then(token_param));
        let Some(token) = token else {
            if self.required {
                return Err(ApiError::unauthorized(
                    "a token is required: send Authorization: Bearer <jwt> (or ?token=<jwt>)",
                ));
            }
            return Ok(Client {
                id: peer.map_or_else(|| "anonymous".to_owned(), |p| format!("ip:{}", p.ip())),
                authenticated: false,
                admin: false,
                channels: None,
            });
        };
        let Some((key, _)) = &self.key else {
            return Err(ApiError::unauthorized("this service accepts no tokens"));
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::InvalidSignature => "the token's signature is invalid",
                ErrorKind::InvalidAlgorithm => "the token must be signed with HS256",
                ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim (sub, exp)",
                _ => "the token is malformed",
            };
            ApiError::unauthorized(why)
        })?;
        Ok(Client {
            id: data.claims.sub,
            authenticated: true,
            admin: data.claims.admin,
            channels: data.claims.channels,
        })
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn token_param(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|t| !t.is_empty())
}

/// Middleware: authenticates and puts the [`Client`] in the request's
/// extensions, or answers 401.
pub async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    match auth.authenticate(request.headers(), request.uri().query(), peer) {
        Ok(client) => {
            request.extensions_mut().insert(client);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    }

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_valid_token_names_the_client() {
        let auth = Authenticator::new(&AuthConfig::with_secret(SECRET));
        let token = auth
            .issue(&Claims {
                sub: "dash".into(),
                exp: now() + 60,
                admin: true,
                channels: Some(vec!["sport:nba".into()]),
            })
            .unwrap();
        let c = auth.authenticate(&headers(&token), None, None).unwrap();
        assert_eq!(c.id, "dash");
        assert!(c.admin && c.authenticated);
        assert_eq!(c.channels, Some(vec!["sport:nba".to_owned()]));
        // Also from the query string.
        let q = format!("a=1&token={token}");
        assert_eq!(
            auth.authenticate(&HeaderMap::new(), Some(&q), None)
                .unwrap()
                .id,
            "dash"
        );
    }

    #[test]
    fn missing_expired_forged_and_malformed_tokens_are_refused() {
        let auth = Authenticator::new(&AuthConfig::with_secret(SECRET));
        let err = auth
            .authenticate(&HeaderMap::new(), None, None)
            .unwrap_err();
        assert_eq!(err.status.as_u16(), 401);

        let expired = auth
            .issue(&Claims {
                sub: "x".into(),
                exp: now() - 3600,
                admin: false,
                channels: None,
            })
            .unwrap();
        let err = auth
            .authenticate(&headers(&expired), None, None)
            .unwrap_err();
        assert!(err.message.contains("expired"), "{err}");

        let other =
            Authenticator::new(&AuthConfig::with_secret("another-secret-another-secret-xx"));
        let forged = other
            .issue(&Claims {
                sub: "x".into(),
                exp: now() + 60,
                admin: true,
                channels: None,
            })
            .unwrap();
        let err = auth
            .authenticate(&headers(&forged), None, None)
            .unwrap_err();
        assert!(err.message.contains("signature"), "{err}");

        let err = auth
            .authenticate(&headers("not.a.jwt"), None, None)
            .unwrap_err();
        assert_eq!(err.status.as_u16(), 401);
    }

    #[test]
    fn optional_auth_admits_anonymous_callers_but_not_bad_tokens() {
        let auth = Authenticator::new(&AuthConfig::disabled());
        let peer: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let c = auth
            .authenticate(&HeaderMap::new(), None, Some(peer))
            .unwrap();
        assert_eq!(c.id, "ip:10.1.2.3");
        assert!(!c.authenticated);
        assert!(auth.authenticate(&headers("garbage"), None, None).is_err());
    }

    #[test]
    fn config_requires_a_long_enough_secret_when_auth_is_on() {
        let env = fantasy_config::Env::from_pairs([("JWT_SECRET", "short")]);
        let mut p = Parser::new(&env);
        AuthConfig::from_env(&mut p, Profile::Service);
        assert!(p.finish().unwrap_err().to_string().contains("at least 32"));

        let env = fantasy_config::Env::default();
        let mut p = Parser::new(&env);
        AuthConfig::from_env(&mut p, Profile::Service);
        assert!(
            p.finish()
                .unwrap_err()
                .to_string()
                .contains("AUTH_REQUIRED=false")
        );

        let env = fantasy_config::Env::from_pairs([("AUTH_REQUIRED", "false")]);
        let mut p = Parser::new(&env);
        let cfg = AuthConfig::from_env(&mut p, Profile::Service);
        p.finish().unwrap();
        assert!(!cfg.required);
    }
}
