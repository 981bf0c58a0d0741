//! Route handlers: parse, call the engine or the store, answer JSON.

use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use facegate_protocol::{DeviceId, IdentityId, ShardId};
use mongodb::bson::doc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::extract::{ApiJson, ApiQuery, Form, Peer, read_form};
use super::{ApiError, AppState, Authorized};
use crate::auth::{AuthError, Role};
use crate::engine::{Actor, EngineError, Enrollment, action};
use crate::store::audit::AuditQuery;
use crate::store::identities::IdentityPatch;
use crate::store::{GroupDoc, IdentityDoc, PhotoDoc, StoreError, UserDoc, now_millis};

pub(super) type ApiResult<T> = Result<T, ApiError>;

fn identity_id(raw: &str) -> ApiResult<IdentityId> {
    IdentityId::new(raw).map_err(|e| ApiError::InvalidParameter { field: "id", message: e.to_string() })
}

pub(super) fn shard_id(raw: &str, field: &'static str) -> ApiResult<ShardId> {
    ShardId::new(raw).map_err(|e| ApiError::InvalidParameter { field, message: e.to_string() })
}

pub(super) fn device_id(raw: &str) -> ApiResult<DeviceId> {
    DeviceId::new(raw).map_err(|e| ApiError::InvalidParameter { field: "id", message: e.to_string() })
}

pub(super) fn not_found(what: &'static str, id: &str) -> ApiError {
    ApiError::from(StoreError::NotFound { what, id: id.to_string() })
}

async fn record(state: &AppState, actor: &Actor, what: &str, target: Option<&str>, detail: mongodb::bson::Document) {
    let record = action(actor, what, target, "ok", detail);
    if let Err(e) = state.engine.store.record_action(&record).await {
        log::warn!(error:% = e, action = what; "cannot record an admin action");
    }
}

// ---- health, readiness, metrics, OpenAPI ----

pub(super) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub(super) async fn ready(State(state): State<AppState>) -> Response {
    let deps: serde_json::Map<String, Value> = state
        .readiness
        .status()
        .into_iter()
        .map(|(k, up)| (k.to_string(), json!(if up { "up" } else { "down" })))
        .collect();
    let ready = state.readiness.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready, "dependencies": deps }))).into_response()
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let (templates, identities, _) = state.engine.index.size();
    state.metrics.index_size(templates, identities, state.engine.index.applied_seq());
    state.metrics.ready.set(i64::from(state.readiness.is_ready()));
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

pub(super) async fn openapi_document() -> Json<Value> {
    Json(super::openapi::document())
}

// ---- login and users ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginRequest {
    username: String,
    password: String,
}

pub(super) async fn login(
    State(state): State<AppState>,
    Peer(peer): Peer,
    ApiJson(request): ApiJson<LoginRequest>,
) -> ApiResult<Json<Value>> {
    let client = peer.map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
    let keys = vec![format!("user:{}", request.username), format!("ip:{client}")];
    let now = Instant::now();
    if let Err(e) = state.limiter.check(&keys, now) {
        state.metrics.login_failure("rate-limited");
        return Err(e.into());
    }
    let user = state.engine.store.user(&request.username).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let password = request.password.clone();
    // Verify against a dummy hash for unknown users, so timing does not tell.
    let ok = tokio::task::spawn_blocking(move || match hash {
        Some(h) => crate::auth::verify_password(&h, &password),
        None => {
            let _ = crate::auth::verify_password(DUMMY_HASH, &password);
            false
        }
    })
    .await
    .unwrap_or(false);
    let user = match user {
        Some(u) if ok && !u.disabled => u,
        _ => {
            state.limiter.record_failure(&keys, now);
            state.metrics.login_failure("bad-credentials");
            let who = Actor { name: request.username.clone(), role: Role::Auditor };
            let failed = action(&who, "login", None, "refused: bad credentials", doc! { "client": &client });
            let _ = state.engine.store.record_action(&failed).await;
            log::warn!(user = request.username.as_str(), client = client.as_str(); "login refused");
            return Err(AuthError::BadCredentials.into());
        }
    };
    state.limiter.record_success(&keys[..1]);
    let role: Role = user.role.parse()?;
    let (token, claims) = state.keys.issue(&user.name, role)?;
    record(&state, &Actor { name: user.name.clone(), role }, "login", None, doc! { "client": &client }).await;
    Ok(Json(json!({
        "token": token,
        "token_type": "Bearer",
        "expires_in": claims.exp - claims.iat,
        "role": role,
    })))
}

/// An argon2id hash of a random password, verified against for unknown users.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Hc8Ndwd2QmzvP3bE6/zDcZXHjgBrJvEcrGlS7kwzBJ8";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    name: String,
    password: String,
    role: Role,
}

pub(super) async fn create_user(
    State(state): State<AppState>,
    auth: Authorized,
    ApiJson(new): ApiJson<NewUser>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    facegate_protocol::DeviceId::new(new.name.clone())
        .map_err(|e| ApiError::InvalidParameter { field: "name", message: e.to_string() })?;
    let password = new.password.clone();
    let hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let user = UserDoc {
        name: new.name.clone(),
        password_hash: hash,
        role: new.role.as_str().into(),
        created_at: now_millis(),
        disabled: false,
    };
    state.engine.store.create_user(&user).await?;
    record(&state, &auth.actor, "user.create", Some(&new.name), doc! { "role": new.role.as_str() }).await;
    Ok((StatusCode::CREATED, Json(json!({ "name": new.name, "role": new.role }))))
}

pub(super) async fn list_users(State(state): State<AppState>, _auth: Authorized) -> ApiResult<Json<Value>> {
    let users = state.engine.store.list_users().await?;
    let users: Vec<Value> = users
        .iter()
        .map(|u| json!({ "name": u.name, "role": u.role, "disabled": u.disabled, "created_at_ms": u.created_at }))
        .collect();
    Ok(Json(json!({ "users": users })))
}

// ---- identities ----

#[derive(Debug, Serialize)]
pub(super) struct IdentityView {
    id: String,
    name: String,
    /// Unix seconds.
    valid_from: Option<i64>,
    valid_until: Option<i64>,
    groups: Vec<String>,
    version: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
    created_by: String,
    offline_access: bool,
}

impl From<&IdentityDoc> for IdentityView {
    fn from(i: &IdentityDoc) -> Self {
        Self {
            id: i.id.clone(),
            name: i.name.clone(),
            valid_from: i.valid_from.map(|ms| ms / 1000),
            valid_until: i.valid_until.map(|ms| ms / 1000),
            groups: i.groups.clone(),
            version: i.version,
            created_at_ms: i.created_at,
            updated_at_ms: i.updated_at,
            created_by: i.created_by.clone(),
            offline_access: i.offline_access,
        }
    }
}

fn seconds_field(form: &Form, name: &'static str) -> ApiResult<Option<i64>> {
    match form.one(name)? {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .map(Some)
            .ok_or(ApiError::InvalidParameter { field: name, message: "must be Unix seconds".into() }),
    }
}

fn bool_field(form: &Form, name: &'static str) -> ApiResult<bool> {
    match form.one(name)?.as_deref().map(str::trim) {
        None | Some("" | "false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => {
            Err(ApiError::InvalidParameter { field: name, message: format!("must be true or false, got {other:?}") })
        }
    }
}

fn identity_list(form: &Form, name: &'static str) -> ApiResult<Vec<IdentityId>> {
    form.list(name)
        .iter()
        .map(|s| {
            IdentityId::new(s.as_str()).map_err(|e| ApiError::InvalidParameter { field: name, message: e.to_string() })
        })
        .collect()
}

pub(super) async fn create_identity(
    State(state): State<AppState>,
    auth: Authorized,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let allowed = ["name", "groups", "valid_from", "valid_until", "distinct_from", "offline_access"];
    let form = read_form(multipart, &state, &allowed, state.engine.max_photos).await?;
    let name = form.one("name")?.ok_or(ApiError::InvalidParameter { field: "name", message: "is required".into() })?;
    let groups = form.list("groups").iter().map(|g| shard_id(g, "groups")).collect::<ApiResult<Vec<_>>>()?;
    let request = Enrollment {
        name,
        valid_from: seconds_field(&form, "valid_from")?,
        valid_until: seconds_field(&form, "valid_until")?,
        groups,
        distinct_from: identity_list(&form, "distinct_from")?,
        offline_access: bool_field(&form, "offline_access")?,
        photos: form.photos,
    };
    let identity = state.engine.enroll(&auth.actor, request).await?;
    let mut body =
        serde_json::to_value(IdentityView::from(&identity)).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(o) = body.as_object_mut() {
        o.insert("photos".into(), json!(state.engine.store.photos_of(&identity.id).await?.len()));
    }
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    limit: Option<usize>,
    after: Option<String>,
    group: Option<String>,
}

pub(super) async fn list_identities(
    State(state): State<AppState>,
    _auth: Authorized,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Value>> {
    let page =
        state.engine.store.list_identities(q.after.as_deref(), q.limit.unwrap_or(100), q.group.as_deref()).await?;
    let items: Vec<IdentityView> = page.items.iter().map(IdentityView::from).collect();
    Ok(Json(json!({ "identities": items, "next": page.next })))
}

pub(super) async fn get_identity(
    State(state): State<AppState>,
    _auth: Authorized,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = identity_id(&id)?;
    let identity = state.engine.store.identity(id.as_str()).await?.ok_or_else(|| not_found("identity", id.as_str()))?;
    let photos = state.engine.store.photos_of(id.as_str()).await?;
    let mut body =
        serde_json::to_value(IdentityView::from(&identity)).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(o) = body.as_object_mut() {
        o.insert("photos".into(), json!(photos.iter().map(photo_view).collect::<Vec<_>>()));
        o.insert("indexed".into(), json!(state.engine.index.contains(&id)));
    }
    Ok(Json(body))
}

/// `null` clears a bound; an absent key leaves it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IdentityUpdate {
    name: Option<String>,
    #[serde(default, deserialize_with = "explicit_null")]
    valid_from: Option<Option<i64>>,
    #[serde(default, deserialize_with = "explicit_null")]
    valid_until: Option<Option<i64>>,
    groups: Option<Vec<String>>,
    offline_access: Option<bool>,
}

fn explicit_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Ok(Some(Option::<i64>::deserialize(d)?))
}

pub(super) async fn update_identity(
    State(state): State<AppState>,
    auth: Authorized,
    Path(id): Path<String>,
    ApiJson(update): ApiJson<IdentityUpdate>,
) -> ApiResult<Json<IdentityView>> {
    let id = identity_id(&id)?;
    let to_ms = |v: Option<Option<i64>>, field| -> ApiResult<Option<Option<i64>>> {
        match v {
            Some(Some(s)) => s
                .checked_mul(1000)
                .map(|ms| Some(Some(ms)))
                .ok_or(ApiError::InvalidParameter { field, message: "out of range".into() }),
            other => Ok(other),
        }
    };
    let groups = match update.groups {
        Some(g) => Some(g.iter().map(|s| shard_id(s, "groups").map(|s| s.to_string())).collect::<ApiResult<Vec<_>>>()?),
        None => None,
    };
    let patch = IdentityPatch {
        name: update.name,
        valid_from: to_ms(update.valid_from, "valid_from")?,
        valid_until: to_ms(update.valid_until, "valid_until")?,
        groups,
        offline_access: update.offline_access,
    };
    let updated = state.engine.update(&auth.actor, &id, patch).await?;
    Ok(Json(IdentityView::from(&updated)))
}

pub(super) async fn delete_identity(
    State(state): State<AppState>,
    auth: Authorized,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = identity_id(&id)?;
    let forgotten = state.engine.forget(&auth.actor, &id).await?;
    let shards: Vec<Value> =
        forgotten.shards.iter().map(|s| json!({ "shard": s.shard, "remove_seq": s.seq })).collect();
    Ok(Json(json!({
        "id": id.as_str(),
        "forgotten": true,
        "templates_deleted": forgotten.templates,
        "photos_deleted": forgotten.photos,
        "shards": shards,
        "status": format!("/v1/identities/{id}/erasure"),
    })))
}

pub(super) async fn erasure_status(
    State(state): State<AppState>,
    auth: Authorized,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = identity_id(&id)?;
    let acks = state
        .engine
        .store
        .erasure_acks(id.as_str())
        .await?
        .ok_or_else(|| not_found("erasure of identity", id.as_str()))?;
    let pending = acks.iter().filter(|a| !a.forgotten && !a.revoked).count();
    let devices: Vec<Value> = acks
        .iter()
        .map(|a| json!({ "device": a.device, "shard": a.shard, "remove_seq": a.remove_seq, "applied_seq": a.applied, "forgotten": a.forgotten, "revoked": a.revoked }))
        .collect();
    record(&state, &auth.actor, "identity.erasure-status", Some(id.as_str()), doc! {}).await;
    Ok(Json(json!({ "id": id.as_str(), "complete": pending == 0, "pending_devices": pending, "devices": devices })))
}

fn photo_view(p: &PhotoDoc) -> Value {
    json!({ "id": p.id, "filename": p.filename, "content_type": p.content_type, "bytes": p.bytes, "created_at_ms": p.created_at })
}

pub(super) async fn list_photos(
    State(state): State<AppState>,
    _auth: Authorized,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = identity_id(&id)?;
    if state.engine.store.identity(id.as_str()).await?.is_none() {
        return Err(not_found("identity", id.as_str()));
    }
    let photos = state.engine.store.photos_of(id.as_str()).await?;
    Ok(Json(json!({ "photos": photos.iter().map(photo_view).collect::<Vec<_>>() })))
}

pub(super) async fn add_photos(
    State(state): State<AppState>,
    auth: Authorized,
    Path(id): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = identity_id(&id)?;
    let form = read_form(multipart, &state, &["distinct_from"], state.engine.max_photos).await?;
    let distinct = identity_list(&form, "distinct_from")?;
    let updated = state.engine.add_photos(&auth.actor, &id, form.photos, &distinct).await?;
    let photos = state.engine.store.photos_of(id.as_str()).await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "id": updated.id, "version": updated.version, "photos": photos.iter().map(photo_view).collect::<Vec<_>>() }),
        ),
    ))
}

pub(super) async fn get_photo(
    State(state): State<AppState>,
    auth: Authorized,
    Path((id, photo)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = identity_id(&id)?;
    let (doc, bytes) = state.engine.photo_bytes(&id, &photo).await?;
    record(&state, &auth.actor, "identity.photo-download", Some(id.as_str()), doc! { "photo": &photo }).await;
    let content_type = doc.content_type.unwrap_or_else(|| "application/octet-stream".into());
    let mut response = Response::new(Body::from(bytes));
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub(super) async fn delete_photo(
    State(state): State<AppState>,
    auth: Authorized,
    Path((id, photo)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = identity_id(&id)?;
    state.engine.delete_photo(&auth.actor, &id, &photo).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- search and verify ----

pub(super) async fn search(
    State(state): State<AppState>,
    auth: Authorized,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<Value>> {
    let mut form = read_form(multipart, &state, &["k"], 1).await?;
    let k = match form.one("k")? {
        None => 5,
        Some(k) => {
            k.trim().parse::<usize>().ok().filter(|k| (1..=100).contains(k)).ok_or(ApiError::InvalidParameter {
                field: "k",
                message: "must be a whole number from 1 to 100".into(),
            })?
        }
    };
    let photo = form.photos.pop().ok_or(EngineError::NoPhoto)?;
    let hits = state.engine.search(photo, k).await?;
    let matches: Vec<Value> =
        hits.iter().map(|h| json!({ "id": h.id.as_str(), "name": h.name, "score": h.score })).collect();
    let t = state.engine.thresholds;
    let decision = match hits.as_slice() {
        [best, rest @ ..] if best.score >= t.verify => {
            if rest.first().is_some_and(|second| best.score - second.score < t.margin) {
                "ambiguous"
            } else {
                "identified"
            }
        }
        _ => "no-match",
    };
    record(&state, &auth.actor, "search", None, doc! { "k": k as i64, "results": hits.len() as i64 }).await;
    Ok(Json(json!({ "matches": matches, "threshold": t.verify, "margin": t.margin, "decision": decision })))
}

pub(super) async fn verify(
    State(state): State<AppState>,
    auth: Authorized,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<Value>> {
    let mut form = read_form(multipart, &state, &["identity"], 1).await?;
    let id =
        form.one("identity")?.ok_or(ApiError::InvalidParameter { field: "identity", message: "is required".into() })?;
    let id = identity_id(&id)?;
    let photo = form.photos.pop().ok_or(EngineError::NoPhoto)?;
    let score = state.engine.verify(&id, photo).await?;
    let threshold = state.engine.thresholds.verify;
    record(&state, &auth.actor, "verify", Some(id.as_str()), doc! { "score": f64::from(score) }).await;
    Ok(Json(json!({ "id": id.as_str(), "score": score, "threshold": threshold, "match": score >= threshold })))
}

// ---- groups ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewGroup {
    id: String,
    name: Option<String>,
    description: Option<String>,
}

fn group_view(g: &GroupDoc) -> Value {
    json!({ "id": g.id, "name": g.name, "description": g.description, "created_at_ms": g.created_at })
}

pub(super) async fn list_groups(State(state): State<AppState>, _auth: Authorized) -> ApiResult<Json<Value>> {
    let groups = state.engine.store.list_groups().await?;
    Ok(Json(json!({ "groups": groups.iter().map(group_view).collect::<Vec<_>>() })))
}

pub(super) async fn create_group(
    State(state): State<AppState>,
    auth: Authorized,
    ApiJson(new): ApiJson<NewGroup>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = shard_id(&new.id, "id")?;
    let group = GroupDoc {
        id: id.to_string(),
        name: new.name.unwrap_or_else(|| id.to_string()),
        description: new.description,
        created_at: now_millis(),
    };
    let record = action(&auth.actor, "group.create", Some(id.as_str()), "ok", doc! {});
    state.engine.store.create_group(&group, &record).await?;
    Ok((StatusCode::CREATED, Json(group_view(&group))))
}

pub(super) async fn get_group(
    State(state): State<AppState>,
    _auth: Authorized,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = shard_id(&id, "id")?;
    let group = state.engine.store.group(id.as_str()).await?.ok_or_else(|| not_found("group", id.as_str()))?;
    let head = state.engine.store.shard_head(&id).await?;
    let mut body = group_view(&group);
    if let Some(o) = body.as_object_mut() {
        o.insert("delta_seq".into(), json!(head));
    }
    Ok(Json(body))
}

pub(super) async fn delete_group(
    State(state): State<AppState>,
    auth: Authorized,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = shard_id(&id, "id")?;
    let record = action(&auth.actor, "group.delete", Some(id.as_str()), "ok", doc! {});
    state.engine.store.delete_group(id.as_str(), &record).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn add_member(
    State(state): State<AppState>,
    auth: Authorized,
    Path((group, identity)): Path<(String, String)>,
) -> ApiResult<Json<IdentityView>> {
    let updated =
        state.engine.set_membership(&auth.actor, &shard_id(&group, "id")?, &identity_id(&identity)?, true).await?;
    Ok(Json(IdentityView::from(&updated)))
}

pub(super) async fn remove_member(
    State(state): State<AppState>,
    auth: Authorized,
    Path((group, identity)): Path<(String, String)>,
) -> ApiResult<Json<IdentityView>> {
    let updated =
        state.engine.set_membership(&auth.actor, &shard_id(&group, "id")?, &identity_id(&identity)?, false).await?;
    Ok(Json(IdentityView::from(&updated)))
}

// ---- audit ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    device: Option<String>,
    identity: Option<String>,
    decision: Option<String>,
    /// Unix milliseconds, inclusive.
    from: Option<i64>,
    /// Unix milliseconds, exclusive.
    until: Option<i64>,
    limit: Option<usize>,
    after: Option<String>,
}

pub(super) async fn audit_events(
    State(state): State<AppState>,
    auth: Authorized,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> ApiResult<Json<Value>> {
    if let Some(d) = &p.decision
        && !["grant", "deny", "unknown", "spoof"].contains(&d.as_str())
    {
        return Err(ApiError::InvalidParameter { field: "decision", message: "grant, deny, unknown or spoof".into() });
    }
    let q = AuditQuery {
        device: p.device,
        identity: p.identity,
        decision: p.decision,
        from: p.from,
        until: p.until,
        limit: p.limit.unwrap_or(100),
        after: p.after,
    };
    let page = state.engine.store.query_audit(&q).await.map_err(|e| match e {
        StoreError::Conflict(m) => ApiError::InvalidParameter { field: "after", message: m },
        other => other.into(),
    })?;
    record(&state, &auth.actor, "audit.query", None, doc! { "results": page.items.len() as i64 }).await;
    Ok(Json(json!({ "events": page.items.iter().map(|e| {
        json!({ "device": e.device, "seq": e.seq, "at_ms": e.at, "decision": e.decision, "identity": e.identity, "score": e.score,
                "liveness": e.liveness, "liveness_score": e.liveness_score, "reason": e.reason, "model_id": e.model_id,
                "frames": e.frames, "received_at_ms": e.received_at })
    }).collect::<Vec<_>>(), "next": page.next })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminParams {
    actor: Option<String>,
    target: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

pub(super) async fn admin_actions(
    State(state): State<AppState>,
    _auth: Authorized,
    ApiQuery(p): ApiQuery<AdminParams>,
) -> ApiResult<Json<Value>> {
    let page = state
        .engine
        .store
        .query_admin_actions(p.actor.as_deref(), p.target.as_deref(), p.limit.unwrap_or(100), p.after.as_deref())
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => ApiError::InvalidParameter { field: "after", message: m },
            other => other.into(),
        })?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|a| {
            json!({ "id": a.id, "at_ms": a.at, "actor": a.actor, "role": a.role, "action": a.action, "target": a.target,
                    "outcome": a.outcome, "detail": serde_json::to_value(&a.detail).unwrap_or(Value::Null) })
        })
        .collect();
    Ok(Json(json!({ "actions": items, "next": page.next })))
}
