//! The admin API (HTTP, JSON, versioned under `/v1`).
//!
//! [`ROUTES`] is the one table of routes: who may call each (the
//! [`Authorized`] extractor looks the matched route up in it), what the
//! OpenAPI document says about it, and what the auth tests walk.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use crate::auth::{AuthError, Claims, LoginLimiter, Role, TokenKeys};
use crate::engine::{Actor, Engine};
use crate::metrics::Metrics;
use crate::readiness::Readiness;

mod devices;
mod error;
mod extract;
mod handlers;
pub mod openapi;

pub use error::ApiError;

/// Everything the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub keys: Arc<TokenKeys>,
    pub limiter: Arc<LoginLimiter>,
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
}

/// Body size limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub json_bytes: usize,
    pub upload_bytes: usize,
}

/// What a request body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Json,
    Multipart,
}

/// One route of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: &'static str,
    /// axum path syntax (`{id}` parameters), also the OpenAPI path.
    pub path: &'static str,
    /// Roles allowed; empty for public routes.
    pub roles: &'static [Role],
    pub body: BodyKind,
    pub summary: &'static str,
    /// Status of a successful answer.
    pub success: u16,
}

const ALL: &[Role] = &[Role::Admin, Role::Operator, Role::Auditor];
const ADMIN: &[Role] = &[Role::Admin];
const ENROLL: &[Role] = &[Role::Admin, Role::Operator];
const AUDIT: &[Role] = &[Role::Admin, Role::Auditor];
const PUBLIC: &[Role] = &[];

macro_rules! route {
    ($method:literal, $path:literal, $roles:expr, $body:ident, $success:literal, $summary:literal) => {
        RouteSpec {
            method: $method,
            path: $path,
            roles: $roles,
            body: BodyKind::$body,
            summary: $summary,
            success: $success,
        }
    };
}

/// Every route, with its roles.
pub const ROUTES: &[RouteSpec] = &[
    route!("GET", "/health", PUBLIC, None, 200, "Liveness: the process answers"),
    route!("GET", "/ready", PUBLIC, None, 200, "Readiness: MongoDB reachable, index loaded (503 otherwise)"),
    route!("GET", "/metrics", PUBLIC, None, 200, "Prometheus metrics"),
    route!("GET", "/openapi.json", PUBLIC, None, 200, "This OpenAPI document"),
    route!("POST", "/v1/auth/login", PUBLIC, Json, 200, "Exchange a user name and password for a bearer token"),
    route!(
        "POST",
        "/v1/provision",
        PUBLIC,
        Json,
        200,
        "A kiosk trades its one-time token and a CSR for its certificate"
    ),
    route!("GET", "/v1/identities", ENROLL, None, 200, "List identities (paged: limit, after, group)"),
    route!(
        "POST",
        "/v1/identities",
        ENROLL,
        Multipart,
        201,
        "Enroll a person: fields name, photo (one or more), groups, valid_from, valid_until, distinct_from, offline_access"
    ),
    route!("GET", "/v1/identities/{id}", ENROLL, None, 200, "Read an identity"),
    route!("PATCH", "/v1/identities/{id}", ENROLL, Json, 200, "Update name, validity window or groups"),
    route!(
        "DELETE",
        "/v1/identities/{id}",
        ADMIN,
        None,
        200,
        "Forget a person: photos and templates deleted, Remove sent to every shard"
    ),
    route!(
        "GET",
        "/v1/identities/{id}/erasure",
        AUDIT,
        None,
        200,
        "Which devices have applied the Remove of a forgotten person"
    ),
    route!("GET", "/v1/identities/{id}/photos", ENROLL, None, 200, "List an identity's photos"),
    route!(
        "POST",
        "/v1/identities/{id}/photos",
        ENROLL,
        Multipart,
        201,
        "Add photos to an identity (links the faces to this person)"
    ),
    route!("GET", "/v1/identities/{id}/photos/{photo}", ADMIN, None, 200, "Download one enrollment photo (decrypted)"),
    route!("DELETE", "/v1/identities/{id}/photos/{photo}", ENROLL, None, 204, "Delete one photo and its template"),
    route!("POST", "/v1/search", ENROLL, Multipart, 200, "1:N search by photo: field photo, optional k"),
    route!("POST", "/v1/verify", ENROLL, Multipart, 200, "1:1 verify: fields identity and photo"),
    route!("GET", "/v1/groups", ALL, None, 200, "List groups (gallery shards)"),
    route!("POST", "/v1/groups", ADMIN, Json, 201, "Create a group"),
    route!("GET", "/v1/groups/{id}", ALL, None, 200, "Read a group"),
    route!("DELETE", "/v1/groups/{id}", ADMIN, None, 204, "Delete an empty group"),
    route!("PUT", "/v1/groups/{id}/members/{identity}", ENROLL, None, 200, "Add an identity to a group"),
    route!("DELETE", "/v1/groups/{id}/members/{identity}", ENROLL, None, 200, "Remove an identity from a group"),
    route!("GET", "/v1/devices", ALL, None, 200, "List devices: status, shards and how far behind each is"),
    route!("POST", "/v1/devices", ADMIN, Json, 201, "Create a device; answers its one-time provisioning token"),
    route!("GET", "/v1/devices/{id}", ALL, None, 200, "Read a device: its sync status and its commands"),
    route!("PUT", "/v1/devices/{id}/groups", ADMIN, Json, 200, "Assign a device's groups"),
    route!("POST", "/v1/devices/{id}/revoke", ADMIN, None, 200, "Revoke a device"),
    route!(
        "POST",
        "/v1/devices/{id}/commands",
        ADMIN,
        Json,
        202,
        "Order a device: {\"command\": \"resync\" | \"wipe\" | \"rotate_key\"}; sent over MQTT until the device takes it"
    ),
    route!(
        "GET",
        "/v1/audit/events",
        AUDIT,
        None,
        200,
        "Door decisions (filters: device, identity, decision, from, until; paged)"
    ),
    route!("GET", "/v1/audit/admin", AUDIT, None, 200, "Administrative actions (filters: actor, target; paged)"),
    route!("GET", "/v1/users", ADMIN, None, 200, "List users"),
    route!("POST", "/v1/users", ADMIN, Json, 201, "Create a user (admin, operator or auditor)"),
];

/// The table entry of a matched route.
pub fn route_spec(method: &Method, path: &str) -> Option<&'static RouteSpec> {
    ROUTES.iter().find(|r| r.path == path && r.method == method.as_str())
}

/// A caller whose token is valid and whose role the route allows.
#[derive(Debug, Clone)]
pub struct Authorized {
    pub claims: Claims,
    pub actor: Actor,
}

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let path = parts.extensions.get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
        let spec = route_spec(&parts.method, &path)
            .ok_or_else(|| ApiError::Internal(format!("route {} {path} is not in the route table", parts.method)))?;
        let header = parts.headers.get(header::AUTHORIZATION).ok_or(AuthError::Missing)?;
        let value = header.to_str().map_err(|_| AuthError::Malformed)?;
        let token =
            value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).ok_or(AuthError::Malformed)?.trim();
        let claims = state.keys.verify(token)?;
        if !spec.roles.contains(&claims.role) {
            let required = spec.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ");
            return Err(AuthError::Forbidden { required, actual: claims.role }.into());
        }
        let actor = Actor { name: claims.sub.clone(), role: claims.role };
        Ok(Self { claims, actor })
    }
}

/// Records latency by route and status.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let method = request.method().clone();
    let response = next.run(request).await;
    state.metrics.observe_request(&route, method.as_str(), response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// Refuses a declared body larger than the route allows before reading it.
async fn limit_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
    let limit = match route_spec(request.method(), &path).map(|r| r.body) {
        Some(BodyKind::Multipart) => state.limits.upload_bytes,
        Some(BodyKind::Json) => state.limits.json_bytes,
        Some(BodyKind::None) | None => state.limits.json_bytes,
    };
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::BodyTooLarge { limit }.into_response();
    }
    next.run(request).await
}

async fn fallback(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NoRoute { method: method.to_string(), path: uri.path().to_string() }
}

/// The router with every route of [`ROUTES`].
pub fn router(state: AppState) -> Router {
    use devices::*;
    use handlers::*;
    let upload_limit = state.limits.upload_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_document))
        .route("/v1/auth/login", post(login))
        .route("/v1/provision", post(crate::sync::provision::handle))
        .route("/v1/identities", get(list_identities).post(create_identity))
        .route("/v1/identities/{id}", get(get_identity).patch(update_identity).delete(delete_identity))
        .route("/v1/identities/{id}/erasure", get(erasure_status))
        .route("/v1/identities/{id}/photos", get(list_photos).post(add_photos))
        .route("/v1/identities/{id}/photos/{photo}", get(get_photo).delete(delete_photo))
        .route("/v1/search", post(search))
        .route("/v1/verify", post(verify))
        .route("/v1/groups", get(list_groups).post(create_group))
        .route("/v1/groups/{id}", get(get_group).delete(delete_group))
        .route("/v1/groups/{id}/members/{identity}", put(add_member).delete(remove_member))
        .route("/v1/devices", get(list_devices).post(create_device))
        .route("/v1/devices/{id}", get(get_device))
        .route("/v1/devices/{id}/groups", put(assign_device_groups))
        .route("/v1/devices/{id}/revoke", post(revoke_device))
        .route("/v1/devices/{id}/commands", post(device_command))
        .route("/v1/audit/events", get(audit_events))
        .route("/v1/audit/admin", get(admin_actions))
        .route("/v1/users", get(list_users).post(create_user))
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(state.clone(), limit_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(upload_limit))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_table_has_no_duplicates_and_versions_every_api_route() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(ROUTES[i + 1..].iter().all(|b| (a.method, a.path) != (b.method, b.path)), "{a:?} twice");
            if a.roles.is_empty() {
                assert!(
                    !a.path.starts_with("/v1/") || ["/v1/auth/login", "/v1/provision"].contains(&a.path),
                    "{a:?} is public"
                );
            } else {
                assert!(a.path.starts_with("/v1/"), "{a:?}");
            }
        }
    }
}
