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

    /// Replaces a device's groups.
    pub async fn assign_device_groups(
        &self,
        id: &str,
        groups: &[String],
        action: &AdminActionDoc,
    ) -> Result<DeviceDoc, StoreError> {
        in_transaction!(self, |session| async {
            for g in groups {
                if self.groups().find_one(doc! { "_id": g }).session(&mut *session).await?.is_none() {
                    return Err(StoreError::NotFound { what: "group", id: g.clone() });
                }
            }
            let updated = self
                .devices()
                .find_one_and_update(doc! { "_id": id }, doc! { "$set": { "groups": groups.to_vec() } })
                .return_document(ReturnDocument::After)
                .session(&mut *session)
                .await?
                .ok_or_else(|| StoreError::NotFound { what: "device", id: id.to_string() })?;
            self.record_action_in(session, action).await?;
            Ok(updated)
        }
        .await)
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
    /// is recorded as its certificate's. `None` for an unknown, used
    /// or expired token.
    pub async fn redeem_provisioning_token(
        &self,
        token_hash: &str,
        serial: &str,
    ) -> Result<Option<DeviceDoc>, StoreError> {
        let now = now_millis();
        Ok(self
            .devices()
            .find_one_and_update(
                doc! { "token_hash": token_hash, "state": "pending", "token_expires_at": { "$gt": now } },
                doc! { "$set": {
                    "state": "active", "provisioned_at": now, "token_hash": null, "certificate_serial": serial,
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

    /// For a forgotten identity: every device assigned to a shard that had
    /// the person, and whether it has applied the `Remove`.
    pub async fn erasure_acks(&self, identity: &str) -> Result<Option<Vec<ErasureAck>>, StoreError> {
        let Some(erasure) = self.erasure(identity).await? else {
            return Ok(None);
        };
        let mut acks = Vec::new();
        for s in &erasure.shards {
            let devices: Vec<DeviceDoc> =
                self.devices().find(doc! { "groups": &s.shard }).sort(doc! { "_id": 1 }).await?.try_collect().await?;
            for d in devices {
                let applied =
                    d.applied.get_i64(&s.shard).ok().or_else(|| d.applied.get_i32(&s.shard).ok().map(i64::from));
                acks.push(ErasureAck {
                    device: d.id.clone(),
                    shard: s.shard.clone(),
                    remove_seq: s.seq,
                    applied,
                    forgotten: applied.is_some_and(|a| a >= s.seq),
                    revoked: d.state == DeviceState::Revoked,
                });
            }
        }
        Ok(Some(acks))
    }
}
