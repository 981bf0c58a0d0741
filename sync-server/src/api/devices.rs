//! Device routes: registration (one-time provisioning token), groups,
//! revocation, commands, and each device's sync status.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mongodb::bson::doc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::ApiJson;
use super::handlers::{ApiResult, device_id, not_found, shard_id};
use super::{ApiError, AppState, Authorized};
use crate::engine::action;
use crate::store::DeviceDoc;
use crate::store::commands::{CommandDoc, CommandKind};
use crate::store::devices::PROVISIONING_TOKEN_TTL_SECS;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewDevice {
    id: String,
    name: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    /// Lifetime of the provisioning token in seconds (default one day).
    token_ttl_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeviceGroups {
    groups: Vec<String>,
}

async fn device_view(state: &AppState, d: &DeviceDoc) -> ApiResult<Value> {
    let mut shards = Vec::new();
    for g in &d.groups {
        let shard = shard_id(g, "groups")?;
        let head = state.engine.store.shard_head(&shard).await?;
        let applied = d.applied.get_i64(g).ok().or_else(|| d.applied.get_i32(g).ok().map(i64::from));
        shards.push(json!({ "shard": g, "head_seq": head, "applied_seq": applied, "behind": applied.map_or(head as i64, |a| head as i64 - a) }));
    }
    let commands = state.engine.store.device_commands(&d.id, 10).await?;
    Ok(json!({
        "id": d.id,
        "name": d.name,
        "state": d.state,
        "groups": d.groups,
        "online": d.online,
        "last_seen_ms": d.last_seen,
        "created_at_ms": d.created_at,
        "provisioned_at_ms": d.provisioned_at,
        "revoked_at_ms": d.revoked_at,
        "model_id": d.model_id,
        "software_version": d.software_version,
        "shards": shards,
        "commands": commands.iter().map(command_view).collect::<Vec<_>>(),
    }))
}

pub(super) async fn list_devices(State(state): State<AppState>, _auth: Authorized) -> ApiResult<Json<Value>> {
    let devices = state.engine.store.list_devices().await?;
    let mut views = Vec::with_capacity(devices.len());
    for d in &devices {
        views.push(device_view(&state, d).await?);
    }
    Ok(Json(json!({ "devices": views })))
}

pub(super) async fn create_device(
    State(state): State<AppState>,
    auth: Authorized,
    ApiJson(new): ApiJson<NewDevice>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = device_id(&new.id)?;
    let groups =
        new.groups.iter().map(|g| shard_id(g, "groups").map(|s| s.to_string())).collect::<ApiResult<Vec<_>>>()?;
    let ttl = new.token_ttl_secs.unwrap_or(PROVISIONING_TOKEN_TTL_SECS);
    let (device, token) =
        DeviceDoc::pending(&id, new.name, groups, ttl).map_err(|e| ApiError::Internal(e.to_string()))?;
    let record =
        action(&auth.actor, "device.create", Some(id.as_str()), "ok", doc! { "groups": device.groups.clone() });
    state.engine.store.create_device(&device, &record).await?;
    let mut view = device_view(&state, &device).await?;
    if let Some(o) = view.as_object_mut() {
        o.insert("provisioning_token".into(), json!(token));
        o.insert("token_expires_at_ms".into(), json!(device.token_expires_at));
    }
    Ok((StatusCode::CREATED, Json(view)))
}

pub(super) async fn get_device(
    State(state): State<AppState>,
    _auth: Authorized,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = device_id(&id)?;
    let device = state.engine.store.device(id.as_str()).await?.ok_or_else(|| not_found("device", id.as_str()))?;
    Ok(Json(device_view(&state, &device).await?))
}

pub(super) async fn assign_device_groups(
    State(state): State<AppState>,
    auth: Authorized,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DeviceGroups>,
) -> ApiResult<Json<Value>> {
    let id = device_id(&id)?;
    let groups =
        body.groups.iter().map(|g| shard_id(g, "groups").map(|s| s.to_string())).collect::<ApiResult<Vec<_>>>()?;
    let record =
        action(&auth.actor, "device.assign-groups", Some(id.as_str()), "ok", doc! { "groups": groups.clone() });
    let device = state.engine.store.assign_device_groups(id.as_str(), &groups, &record).await?;
    Ok(Json(device_view(&state, &device).await?))
}

pub(super) async fn revoke_device(
    State(state): State<AppState>,
    auth: Authorized,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = device_id(&id)?;
    let record = action(&auth.actor, "device.revoke", Some(id.as_str()), "ok", doc! {});
    let device = state.engine.store.revoke_device(id.as_str(), &record).await?;
    Ok(Json(device_view(&state, &device).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewCommand {
    command: String,
}

fn command_view(c: &CommandDoc) -> Value {
    json!({ "device": c.device, "id": c.id, "command": c.command.as_str(), "state": c.state, "actor": c.actor,
            "created_at_ms": c.created_at, "sent_at_ms": c.sent_at, "taken_at_ms": c.taken_at })
}

pub(super) async fn device_command(
    State(state): State<AppState>,
    auth: Authorized,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewCommand>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = device_id(&id)?;
    let command = CommandKind::parse(&body.command)
        .ok_or_else(|| ApiError::InvalidParameter { field: "command", message: "resync, wipe or rotate_key".into() })?;
    let record = action(&auth.actor, "device.command", Some(id.as_str()), "ok", doc! { "command": command.as_str() });
    let issued = state.engine.store.issue_command(id.as_str(), command, &auth.actor.name, &record).await?;
    Ok((StatusCode::ACCEPTED, Json(command_view(&issued))))
}
