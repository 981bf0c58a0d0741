//! Device routes: registration (one-time provisioning token), groups,
//! revocation, commands, and each device's sync status.

use std::collections::HashMap;

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

/// A device as the API shows it: its record, how far behind each of its
/// shards it is (against `heads`, see [`shard_heads`]) and, when given, its
/// latest commands.
fn device_view(d: &DeviceDoc, heads: &HashMap<String, u64>, commands: Option<&[CommandDoc]>) -> Value {
    let shards: Vec<Value> = d
        .groups
        .iter()
        .map(|g| {
            let head = heads.get(g).copied().unwrap_or(0);
            let applied = d.applied.get_i64(g).ok().or_else(|| d.applied.get_i32(g).ok().map(i64::from));
            json!({ "shard": g, "head_seq": head, "applied_seq": applied, "behind": applied.map_or(head as i64, |a| head as i64 - a) })
        })
        .collect();
    let mut view = json!({
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
        "assignment_version": d.assignment_version,
        "assignment_pending": d.assignment_pending,
        "reported_assignment": d.reported_assignment,
        "trusted_key": d.trusted_key,
    });
    if let (Some(o), Some(commands)) = (view.as_object_mut(), commands) {
        o.insert("commands".into(), commands.iter().map(command_view).collect());
    }
    view
}

/// The head of every shard the devices belong to, in one read.
async fn shard_heads(state: &AppState, devices: &[DeviceDoc]) -> ApiResult<HashMap<String, u64>> {
    let mut shards: Vec<&str> = devices.iter().flat_map(|d| d.groups.iter().map(String::as_str)).collect();
    shards.sort_unstable();
    shards.dedup();
    Ok(state.engine.store.shard_heads(&shards).await?)
}

/// One device in full: with its latest commands.
async fn device_detail(state: &AppState, d: &DeviceDoc) -> ApiResult<Value> {
    let heads = shard_heads(state, std::slice::from_ref(d)).await?;
    let commands = state.engine.store.device_commands(&d.id, 10).await?;
    Ok(device_view(d, &heads, Some(&commands)))
}

/// Every device, with two reads whatever the fleet's size (the devices, the
/// heads of their shards); commands are in each device's own view.
pub(super) async fn list_devices(State(state): State<AppState>, _auth: Authorized) -> ApiResult<Json<Value>> {
    let devices = state.engine.store.list_devices().await?;
    let heads = shard_heads(&state, &devices).await?;
    let views: Vec<Value> = devices.iter().map(|d| device_view(d, &heads, None)).collect();
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
    let mut view = device_detail(&state, &device).await?;
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
    Ok(Json(device_detail(&state, &device).await?))
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
    Ok(Json(device_detail(&state, &device).await?))
}

pub(super) async fn revoke_device(
    State(state): State<AppState>,
    auth: Authorized,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = device_id(&id)?;
    let record = action(&auth.actor, "device.revoke", Some(id.as_str()), "ok", doc! {});
    let device = state.engine.store.revoke_device(id.as_str(), &record).await?;
    Ok(Json(device_detail(&state, &device).await?))
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
