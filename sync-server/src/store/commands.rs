//! Orders to one device (resync, wipe, rotate key), kept in MongoDB so any
//! replica's API can issue them and the replica holding the publisher lease
//! sends them.
//!
//! A command is `pending` until published, then `sent`; it is `taken` once
//! the device's status reports a `last_command` at or after its id. A `sent`
//! command the device has not taken goes back to `pending` when the device
//! reports in again after [`RESEND_AFTER_MS`]: the broker may have dropped
//! it, and the device refuses an id it has already taken, so sending twice
//! is harmless.

use futures_util::TryStreamExt;
use mongodb::bson::doc;
use serde::{Deserialize, Serialize};

use super::{AdminActionDoc, DeviceState, Store, StoreError, in_transaction, now_millis};

/// How long a sent command waits for the device before it is sent again.
pub const RESEND_AFTER_MS: i64 = 10_000;

/// What a command asks of the device (the protocol's `Command`, by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    Resync,
    Wipe,
    RotateKey,
}

impl CommandKind {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "resync" => Some(Self::Resync),
            "wipe" => Some(Self::Wipe),
            "rotate_key" => Some(Self::RotateKey),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resync => "resync",
            Self::Wipe => "wipe",
            Self::RotateKey => "rotate_key",
        }
    }

    pub fn to_protocol(self) -> facegate_protocol::Command {
        match self {
            Self::Resync => facegate_protocol::Command::Resync,
            Self::Wipe => facegate_protocol::Command::Wipe,
            Self::RotateKey => facegate_protocol::Command::RotateKey,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    Pending,
    Sent,
    Taken,
}

/// One command (`_id`: `{device}/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandDoc {
    #[serde(rename = "_id")]
    pub key: String,
    pub device: String,
    /// Per device, increasing from 1: the device refuses an id not after the
    /// last one it took.
    pub id: i64,
    pub command: CommandKind,
    pub state: CommandState,
    pub actor: String,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    pub taken_at: Option<i64>,
}

impl Store {
    pub(crate) fn commands(&self) -> mongodb::Collection<CommandDoc> {
        self.db.collection("device_commands")
    }

    /// Records a command for an active (provisioned, not revoked) device,
    /// with the next id of that device, and the admin action.
    pub async fn issue_command(
        &self,
        device: &str,
        command: CommandKind,
        actor: &str,
        action: &AdminActionDoc,
    ) -> Result<CommandDoc, StoreError> {
        in_transaction!(self, |session| {
            async {
                let found = self.devices().find_one(doc! { "_id": device }).session(&mut *session).await?;
                let state = match found.map(|d| d.state) {
                    None => return Err(StoreError::NotFound { what: "device", id: device.to_string() }),
                    Some(DeviceState::Active) => None,
                    Some(DeviceState::Pending) => Some("not provisioned yet"),
                    Some(DeviceState::Revoked) => Some("revoked"),
                };
                if let Some(state) = state {
                    return Err(StoreError::Conflict(format!("device {device} is {state}: it takes no commands")));
                }
                let id = self.next_seq(&mut *session, &format!("commands:{device}"), 1).await?;
                let command = CommandDoc {
                    key: format!("{device}/{id}"),
                    device: device.to_string(),
                    id,
                    command,
                    state: CommandState::Pending,
                    actor: actor.to_string(),
                    created_at: now_millis(),
                    sent_at: None,
                    taken_at: None,
                };
                self.commands().insert_one(&command).session(&mut *session).await?;
                self.record_action_in(session, action).await?;
                Ok(command)
            }
            .await
        })
    }

    /// Commands waiting to be published, oldest first.
    pub async fn pending_commands(&self, limit: i64) -> Result<Vec<CommandDoc>, StoreError> {
        Ok(self
            .commands()
            .find(doc! { "state": "pending" })
            .sort(doc! { "created_at": 1 })
            .limit(limit)
            .await?
            .try_collect()
            .await?)
    }

    pub async fn command_sent(&self, key: &str) -> Result<(), StoreError> {
        self.commands()
            .update_one(
                doc! { "_id": key, "state": "pending" },
                doc! { "$set": { "state": "sent", "sent_at": now_millis() } },
            )
            .await?;
        Ok(())
    }

    /// A device reported in with `last_command`: what it has taken is
    /// marked so, what was sent long ago and not taken is sent again.
    pub async fn device_reported(&self, device: &str, last_command: u64) -> Result<(), StoreError> {
        let now = now_millis();
        let last = super::seq_to_i64(last_command)?;
        self.commands()
            .update_many(
                doc! { "device": device, "id": { "$lte": last }, "state": { "$ne": "taken" } },
                doc! { "$set": { "state": "taken", "taken_at": now } },
            )
            .await?;
        self.commands()
            .update_many(
                doc! { "device": device, "id": { "$gt": last }, "state": "sent", "sent_at": { "$lt": now - RESEND_AFTER_MS } },
                doc! { "$set": { "state": "pending" } },
            )
            .await?;
        Ok(())
    }

    /// A device's most recent commands, newest first.
    pub async fn device_commands(&self, device: &str, limit: i64) -> Result<Vec<CommandDoc>, StoreError> {
        Ok(self
            .commands()
            .find(doc! { "device": device })
            .sort(doc! { "id": -1 })
            .limit(limit)
            .await?
            .try_collect()
            .await?)
    }
}
