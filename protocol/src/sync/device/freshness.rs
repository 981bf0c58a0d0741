//! The freshness half of the device machine: proofs answering the
//! device's own nonces, the assignment they and the pushes carry, the
//! purges of dropped shards and of a past epoch, and key rollover.

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::ProtocolError;
use crate::ids::ShardId;
use crate::messages::{Assignment, FreshnessProof, UnixMillis};
use crate::signing::{KeyId, PublicKey, TrustedKeys};
use crate::sync::Rejection;
use crate::topics;

use super::{DeviceAction, DeviceSync, MAX_PENDING_PROOFS, Persisted, Shard};

/// A freshness request waiting for its proof.
#[derive(Debug)]
pub(super) struct Outstanding {
    pub(super) nonce: u64,
    pub(super) sent: UnixMillis,
    pub(super) applied: BTreeMap<ShardId, u64>,
}

/// Freshness requests and the state they verify.
#[derive(Debug)]
pub(super) struct Freshness {
    pub(super) seed: [u8; 32],
    pub(super) counter: u64,
    /// Requests sent and not answered yet: nonce, send time, and each
    /// shard's applied seq when it was sent.
    pub(super) outstanding: Vec<Outstanding>,
    /// When the next request is due.
    pub(super) next_request: UnixMillis,
    /// When the last valid proof's request was sent (any shard).
    pub(super) last_proof: Option<UnixMillis>,
    /// Shards to purge (dropped, or of a past epoch): the door is stale
    /// until the purge is done.
    pub(super) purging: Vec<ShardId>,
    /// A [`DeviceAction::PurgeShards`] is being carried out.
    pub(super) purge_in_flight: bool,
    /// A failed purge is tried again at this time.
    pub(super) purge_retry_at: Option<UnixMillis>,
    /// Written durably once the purges it needs are done.
    pub(super) unsaved: Option<Persisted>,
}

impl Freshness {
    pub(super) fn nonce(&mut self) -> u64 {
        self.counter += 1;
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(b"facegate freshness nonce\0");
        context.update(&self.seed);
        context.update(&self.counter.to_le_bytes());
        let digest = context.finish();
        let mut nonce = [0u8; 8];
        nonce.copy_from_slice(&digest.as_ref()[..8]);
        u64::from_le_bytes(nonce)
    }
}

impl DeviceSync {
    pub(super) fn on_rollover(
        &mut self,
        signed_by: KeyId,
        new_key: &[u8],
        out: &mut Vec<DeviceAction>,
    ) -> Result<(), Rejection> {
        let key = PublicKey::from_bytes(new_key)
            .map_err(|e| Rejection::Protocol(ProtocolError::Invalid { kind: "down", message: e.to_string() }))?;
        if key.key_id() == signed_by {
            // Already the key in use: a repeat of a rollover done.
            return Ok(());
        }
        self.keys = TrustedKeys::new([key.clone()]);
        self.status_dirty = true;
        out.push(DeviceAction::TrustKeys(vec![key]));
        Ok(())
    }

    /// A proof answering a request of ours: adopt its epoch and assignment,
    /// then verify every shard that has reached its head.
    pub(super) fn on_proof(
        &mut self,
        now: UnixMillis,
        proof: FreshnessProof,
        out: &mut Vec<DeviceAction>,
    ) -> Result<(), Rejection> {
        if self.wiped {
            return Err(Rejection::Wiped);
        }
        let position = self.freshness.outstanding.iter().position(|o| o.nonce == proof.nonce);
        let Some(position) = position else {
            return Err(Rejection::UnknownNonce);
        };
        let Outstanding { sent: requested, applied: applied_then, .. } = self.freshness.outstanding.remove(position);
        self.freshness.last_proof = Some(self.freshness.last_proof.map_or(requested, |p| p.max(requested)));
        self.status_dirty = true;
        if proof.epoch != self.epoch {
            let previous = self.epoch;
            self.epoch = proof.epoch;
            if previous != 0 {
                // Sequence numbers of the old epoch mean nothing now: forget
                // every synced shard and fetch it anew.
                let shards: Vec<ShardId> = self.shards.keys().cloned().collect();
                for s in self.shards.values_mut() {
                    *s = Shard::new(0, &self.config, now);
                    s.applying = Some(0);
                }
                for shard in shards {
                    if !self.freshness.purging.contains(&shard) {
                        self.freshness.purging.push(shard);
                    }
                }
            }
            self.freshness.unsaved = Some(self.persisted());
        }
        if proof.assignment.version > self.assignment_version {
            self.assign(now, proof.assignment, out);
        }
        if !self.freshness.purging.is_empty() {
            // Nothing is verified while shards are being forgotten.
            self.start_purge(out);
            return Ok(());
        }
        let heads: BTreeMap<&ShardId, u64> = proof.heads.iter().map(|p| (&p.shard, p.seq)).collect();
        for (id, s) in &mut self.shards {
            let Some(&head) = heads.get(id) else { continue };
            if applied_then.get(id).is_some_and(|&then| then > head) {
                // The device had more than the log when it asked (the log
                // was read after the request): the log went back without a
                // new epoch (a restored database?). Never verified; the door
                // turns stale until an operator starts a new epoch.
                out.push(DeviceAction::Rejected {
                    topic: topics::device_down(&self.device),
                    reason: Rejection::AheadOfLog { shard: id.clone(), applied: s.applied, head },
                });
            } else if s.applied >= head {
                // Everything the log held when it was read is applied (a
                // proof delayed in the network may find the shard further on).
                s.verified_at = Some(s.verified_at.map_or(requested, |v| v.max(requested)));
                s.pending_proofs.retain(|&(h, _)| h > head);
            } else {
                // Behind: current as of this request once it reaches the head.
                s.pending_proofs.push((head, requested));
                if s.pending_proofs.len() > MAX_PENDING_PROOFS {
                    s.pending_proofs.remove(0);
                }
                s.wanted = true;
                s.next_request = s.next_request.min(now);
            }
        }
        if let Some(persisted) = self.freshness.unsaved.take() {
            out.push(DeviceAction::Persist(persisted));
        }
        Ok(())
    }

    pub(super) fn persisted(&self) -> Persisted {
        Persisted {
            epoch: self.epoch,
            assignment: Assignment { version: self.assignment_version, shards: self.shards.keys().cloned().collect() },
        }
    }

    /// Serves `assignment` from now on: new shards are subscribed to and
    /// synced, dropped ones unsubscribed and purged.
    pub(super) fn assign(&mut self, now: UnixMillis, assignment: Assignment, out: &mut Vec<DeviceAction>) {
        let wanted: BTreeSet<ShardId> = assignment.shards.into_iter().collect();
        let dropped: Vec<ShardId> = self.shards.keys().filter(|s| !wanted.contains(*s)).cloned().collect();
        let added: Vec<ShardId> = wanted.iter().filter(|s| !self.shards.contains_key(*s)).cloned().collect();
        for shard in &dropped {
            self.shards.remove(shard);
            if !self.freshness.purging.contains(shard) {
                self.freshness.purging.push(shard.clone());
            }
        }
        for shard in &added {
            let mut s = Shard::new(0, &self.config, now);
            if self.freshness.purging.contains(shard) {
                // Re-assigned before its purge ran: it starts from nothing.
                s.applying = Some(0);
            }
            self.shards.insert(shard.clone(), s);
        }
        self.assignment_version = assignment.version;
        self.status_dirty = true;
        if !dropped.is_empty() {
            out.push(DeviceAction::Unsubscribe(dropped.iter().map(topics::shard_delta).collect()));
        }
        if !added.is_empty() {
            out.push(DeviceAction::Subscribe(added.iter().map(topics::shard_delta).collect()));
        }
        self.freshness.unsaved = Some(self.persisted());
        if self.freshness.purging.is_empty() {
            self.reported_assignment = self.assignment_version;
            if let Some(persisted) = self.freshness.unsaved.take() {
                out.push(DeviceAction::Persist(persisted));
            }
        } else {
            self.start_purge(out);
        }
    }

    pub(super) fn start_purge(&mut self, out: &mut Vec<DeviceAction>) {
        if self.freshness.purge_in_flight || self.freshness.purging.is_empty() {
            return;
        }
        self.freshness.purge_in_flight = true;
        self.freshness.purge_retry_at = None;
        out.push(DeviceAction::PurgeShards(self.freshness.purging.clone()));
    }

    pub(super) fn purged(&mut self, now: UnixMillis, shards: &[ShardId], out: &mut Vec<DeviceAction>) {
        self.freshness.purge_in_flight = false;
        self.freshness.purging.retain(|s| !shards.contains(s));
        for shard in shards {
            if let Some(s) = self.shards.get_mut(shard)
                && s.applying == Some(0)
            {
                s.applying = None;
                s.applied = 0;
                s.wanted = true;
            }
        }
        self.status_dirty = true;
        if self.freshness.purging.is_empty() {
            self.reported_assignment = self.assignment_version;
            if let Some(persisted) = self.freshness.unsaved.take() {
                out.push(DeviceAction::Persist(persisted));
            }
            // Ask for a proof at once: the door is stale until one arrives.
            self.freshness.next_request = self.freshness.next_request.min(now);
        } else {
            self.start_purge(out);
        }
    }
}
