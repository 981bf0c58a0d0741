//! Devices (kiosks): provisioning tokens, group assignment, revocation, and
//! the per-shard sequence number each device has applied.

use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::options::ReturnDocument;

use super::{AdminActionDoc, DeviceDoc, DeviceState, Store, StoreError, in_transaction, now_millis};

/// Default lifetime of a provisioning token.
pub const PROVISIONING_TOKEN_TTL_SECS: u64 = 24 * 3600;

impl DeviceDoc {
    /// A device waiting to be provisioned, and its one-time token (shown
    /// once; only its SHA-256 is kept). The token lives `ttl_secs`, clamped
    /// to one minute .. thirty days.
    pub fn pending(
        id: &facegate_protocol::DeviceId,
        name: Option<String>,
        groups: Vec<String>,
        ttl_secs: u64,
    ) -> Result<(Self, String), crate::crypto::CryptoError> {
        let ttl = ttl_secs.clamp(60, 30 * 24 * 3600);
        let token = format!("fgp_{}", crate::crypto::hex(&crate::crypto::random_bytes::<24>()?));
        let token_hash = crate::crypto::hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
        let now = now_millis();
        let device = Self {
            id: id.to_string(),
            name: name.unwrap_or_else(|| id.to_string()),
            groups,
            state: DeviceState::Pending,
            token_hash: Some(token_hash),
            token_expires_at: Some(now + ttl as i64 * 1000),
            created_at: now,
            provisioned_at: None,
            revoked_at: None,
            applied: Document::new(),
            certificate_serial: None,
            last_seen: None,
            online: false,
            model_id: None,
            software_version: None,
            public_key: None,
            assignment_version: 0,
            assignment_pending: false,
            dropped: Document::new(),
            reported_assignment: None,
            reported_shards: None,
            trusted_key: None,
        };
        Ok((device, token))
    }
}

/// Acknowledgement of a forget by one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureAck {
    pub device: String,
    pub shard: String,
    /// The seq of the `Remove` in that shard.
    pub remove_seq: i64,
    /// What the device has applied (`None`: nothing reported yet).
    pub applied: Option<i64>,
    pub forgotten: bool,
    pub revoked: bool,
}

impl Store {
    pub async fn create_device(&self, device: &DeviceDoc, action: &AdminActionDoc) -> Result<(), StoreError> {
        in_transaction!(self, |session| async {
            for g in &device.groups {
                if self.groups().find_one(doc! { "_id": g }).session(&mut *session).await?.is_none() {
                    return Err(StoreError::NotFound { what: "group", id: g.clone() });
                }
            }
            match self.devices().insert_one(device).session(&mut *session).await {
                Ok(_) => {}
                Err(e) if super::is_duplicate_key(&e) => {
                    return Err(StoreError::AlreadyExists { what: "device", id: device.id.clone() });
                }
                Err(e) => return Err(e.into()),
            }
            self.record_action_in(session, action).await
        }
        .await)
    }

    pub async fn device(&self, id: &str) -> Result<Option<DeviceDoc>, StoreError> {
        Ok(self.devices().find_one(doc! { "_id": id }).await?)
    }

    pub async fn list_devices(&self) -> Result<Vec<DeviceDoc>, StoreError> {
        Ok(self.devices().find(doc! {}).sort(doc! { "_id": 1 }).await?.try_collect().await?)
    }

    /// Replaces a device's groups and raises its assignment version in the
    /// same transaction; the publisher then pushes the signed assignment.
    /// Shards taken away are remembered with that version (the device held
    /// their people until it acknowledges the purge, see
    /// [`Store::erasure_acks`]) and their applied seqs forgotten.
    pub async fn assign_device_groups(
        &self,
        id: &str,
        groups: &[String],
        action: &AdminActionDoc,
    ) -> Result<DeviceDoc, StoreError> {
        in_transaction!(self, |session| {
            async {
            for g in groups {
                if self.groups().find_one(doc! { "_id": g }).session(&mut *session).await?.is_none() {
                    return Err(StoreError::NotFound { what: "group", id: g.clone() });
                }
            }
            let before = self
                .devices()
                .find_one_and_update(
                    doc! { "_id": id },
                    doc! { "$set": { "groups": groups.to_vec(), "assignment_pending": true }, "$inc": { "assignment_version": 1_i64 } },
                )
                .return_document(ReturnDocument::Before)
                .session(&mut *session)
                .await?
                .ok_or_else(|| StoreError::NotFound { what: "device", id: id.to_string() })?;
            let version = before.assignment_version.saturating_add(1);
            let mut set = Document::new();
            let mut unset = Document::new();
            for shard in before.groups.iter().filter(|g| !groups.contains(g)) {
                set.insert(format!("dropped.{shard}"), version);
                unset.insert(format!("applied.{shard}"), "");
            }
            for shard in groups.iter().filter(|g| !before.groups.contains(g)) {
                unset.insert(format!("dropped.{shard}"), "");
            }
            let mut update = Document::new();
            if !set.is_empty() {
                update.insert("$set", set);
            }
            if !unset.is_empty() {
                update.insert("$unset", unset);
            }
            if !update.is_empty() {
                self.devices().update_one(doc! { "_id": id }, update).session(&mut *session).await?;
            }
            let updated = self
                .devices()
                .find_one(doc! { "_id": id })
                .session(&mut *session)
                .await?
                .ok_or_else(|| StoreError::NotFound { what: "device", id: id.to_string() })?;
            self.record_action_in(session, action).await?;
            Ok(updated)
        }
        .await
        })
    }

    /// Active devices whose current assignment has not been pushed yet.
    pub async fn pending_assignments(&self, limit: i64) -> Result<Vec<DeviceDoc>, StoreError> {
        Ok(self
            .devices()
            .find(doc! { "assignment_pending": true, "state": "active" })
            .limit(limit)
            .await?
            .try_collect()
            .await?)
    }

    /// Assignment `version` of `device` was pushed (a later change stays pending).
    pub async fn assignment_pushed(&self, device: &str, version: i64) -> Result<(), StoreError> {
        self.devices()
            .update_one(
                doc! { "_id": device, "assignment_version": version },
                doc! { "$set": { "assignment_pending": false } },
            )
            .await?;
        Ok(())
    }

    /// Revokes a device: its token is void and the sync refuses it.
    pub async fn revoke_device(&self, id: &str, action: &AdminActionDoc) -> Result<DeviceDoc, StoreError> {
        in_transaction!(self, |session| {
            async {
            let updated = self
                .devices()
                .find_one_and_update(
                    doc! { "_id": id },
                    doc! { "$set": { "state": "revoked", "revoked_at": now_millis(), "token_hash": null, "online": false } },
                )
                .return_document(ReturnDocument::After)
                .session(&mut *session)
                .await?
                .ok_or_else(|| StoreError::NotFound { what: "device", id: id.to_string() })?;
            self.record_action_in(session, action).await?;
            Ok(updated)
        }
        .await
        })
    }

    /// Uses a one-time provisioning token (by its SHA-256): the pending device
    /// it belongs to becomes active, the token is void, and `serial` (hex)
    /// is recorded as its certificate's, `public_key` (the uncompressed
    /// P-256 point the certificate certifies) as the key its uplinks verify
    /// with. `None` for an unknown, used
    /// or expired token.
    pub async fn redeem_provisioning_token(
        &self,
        token_hash: &str,
        serial: &str,
        public_key: &[u8],
    ) -> Result<Option<DeviceDoc>, StoreError> {
        let now = now_millis();
        Ok(self
            .devices()
            .find_one_and_update(
                doc! { "token_hash": token_hash, "state": "pending", "token_expires_at": { "$gt": now } },
                doc! { "$set": {
                    "state": "active", "provisioned_at": now, "token_hash": null, "certificate_serial": serial,
                    "public_key": super::binary(public_key.to_vec()),
                } },
            )
            .return_document(ReturnDocument::After)
            .await?)
    }

    /// The certificate of every revoked device, for the brokers' revocation
    /// list (devices provisioned before serials were recorded have none).
    pub async fn revoked_certificates(&self) -> Result<Vec<crate::sync::pki::Revoked>, StoreError> {
        let revoked: Vec<DeviceDoc> = self.devices().find(doc! { "state": "revoked" }).await?.try_collect().await?;
        let mut out = Vec::new();
        for device in revoked {
            let Some(serial) = &device.certificate_serial else { continue };
            let serial = crate::crypto::unhex(serial).ok_or_else(|| {
                StoreError::Corrupt(format!("device {}: certificate serial {serial:?} is not hex", device.id))
            })?;
            out.push(crate::sync::pki::Revoked { serial, at_ms: device.revoked_at.unwrap_or(0) });
        }
        Ok(out)
    }

    /// Records that `device` has applied `shard` up to `seq` (never moves
    /// backwards), and that it was seen now.
    pub async fn record_device_applied(&self, device: &str, shard: &str, seq: u64) -> Result<(), StoreError> {
        let seq = super::seq_to_i64(seq)?;
        let field = format!("applied.{shard}");
        // A conditional `$set` rather than `$max`, which not every
        // MongoDB-protocol server implements: only a higher seq is written.
        let mut set = Document::new();
        set.insert(field.clone(), seq);
        set.insert("last_seen", now_millis());
        let mut lower = Document::new();
        lower.insert(field.clone(), doc! { "$lt": seq });
        let mut absent = Document::new();
        absent.insert(field, doc! { "$exists": false });
        let raised =
            self.devices().update_one(doc! { "_id": device, "$or": [lower, absent] }, doc! { "$set": set }).await?;
        if raised.matched_count == 1 {
            return Ok(());
        }
        let seen =
            self.devices().update_one(doc! { "_id": device }, doc! { "$set": { "last_seen": now_millis() } }).await?;
        if seen.matched_count == 0 {
            return Err(StoreError::NotFound { what: "device", id: device.to_string() });
        }
        Ok(())
    }

    /// Records a device's reported status (online flag, model, version).
    pub async fn record_device_status(
        &self,
        device: &str,
        online: bool,
        model_id: Option<&str>,
        software_version: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut set = Document::new();
        set.insert("online", online);
        set.insert("last_seen", now_millis());
        if let Some(m) = model_id {
            set.insert("model_id", m);
        }
        if let Some(v) = software_version {
            set.insert("software_version", v);
        }
        self.devices().update_one(doc! { "_id": device }, doc! { "$set": set }).await?;
        Ok(())
    }

    /// Records what a device's signed status says about its sync: the
    /// assignment version it serves, the shards it lists, the central key it
    /// trusts.
    pub async fn record_device_sync_report(
        &self,
        device: &str,
        assignment: u64,
        shards: &[String],
        trusted_key: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut set = Document::new();
        set.insert("reported_assignment", i64::try_from(assignment).unwrap_or(i64::MAX));
        set.insert("reported_shards", shards.to_vec());
        if let Some(key) = trusted_key {
            set.insert("trusted_key", key);
        }
        self.devices().update_one(doc! { "_id": device }, doc! { "$set": set }).await?;
        Ok(())
    }

    /// For a forgotten identity: every device that held a shard that had
    /// the person — assigned to it now, or since taken off it — and whether
    /// it has forgotten them: applied the `Remove`, or (taken off the
    /// shard) acknowledged the purge, its status showing the assignment
    /// version that dropped the shard and no longer listing it.
    pub async fn erasure_acks(&self, identity: &str) -> Result<Option<Vec<ErasureAck>>, StoreError> {
        let Some(erasure) = self.erasure(identity).await? else {
            return Ok(None);
        };
        let mut acks = Vec::new();
        for s in &erasure.shards {
            let mut dropped = Document::new();
            dropped.insert(format!("dropped.{}", s.shard), doc! { "$exists": true });
            let devices: Vec<DeviceDoc> = self
                .devices()
                .find(doc! { "$or": [ { "groups": &s.shard }, dropped ] })
                .sort(doc! { "_id": 1 })
                .await?
                .try_collect()
                .await?;
            for d in devices {
                let (applied, forgotten) = if d.groups.contains(&s.shard) {
                    let applied = int(&d.applied, &s.shard);
                    (applied, applied.is_some_and(|a| a >= s.seq))
                } else {
                    (None, purge_acknowledged(&d, &s.shard))
                };
                acks.push(ErasureAck {
                    device: d.id.clone(),
                    shard: s.shard.clone(),
                    remove_seq: s.seq,
                    applied,
                    forgotten,
                    revoked: d.state == DeviceState::Revoked,
                });
            }
        }
        Ok(Some(acks))
    }
}

fn int(d: &Document, key: &str) -> Option<i64> {
    d.get_i64(key).ok().or_else(|| d.get_i32(key).ok().map(i64::from))
}

/// Whether `device`, taken off `shard`, has reported serving the assignment
/// that dropped it (or a later one) without the shard.
pub fn purge_acknowledged(device: &DeviceDoc, shard: &str) -> bool {
    let Some(dropped_at) = int(&device.dropped, shard) else {
        return false;
    };
    let listed = device.reported_shards.as_ref().is_none_or(|shards| shards.iter().any(|s| s == shard));
    device.reported_assignment.is_some_and(|v| v >= dropped_at) && !listed
}
