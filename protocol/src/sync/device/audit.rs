//! The audit outbox half of the device machine: sending prefixes of the
//! outbox, acknowledgements, and making stored events sendable.

use crate::ids::DeviceId;
use crate::messages::{
    AuditBatch, AuditEvent, MAX_AUDIT_BATCH_EVENTS, MAX_MODEL_ID_BYTES, MAX_REASON_BYTES, UnixMillis, Up, UpMessage,
};
use crate::sync::Publish;
use crate::topics;

use super::{DeviceAction, DeviceSync};

impl DeviceSync {
    pub(super) fn on_audit_ack(&mut self, up_to_seq: u64, out: &mut Vec<DeviceAction>) {
        // Never delete what was not sent, whatever an acknowledgement says.
        let up_to = up_to_seq.min(self.audit.highest_sent);
        if up_to > self.audit.acked {
            self.audit.acked = up_to;
            out.push(DeviceAction::AckAudit { up_to_seq: up_to });
        }
        if self.audit.in_flight.is_some_and(|(last, _)| last <= up_to) {
            self.audit.in_flight = None;
            self.audit.retransmit.reset();
        }
    }

    pub(super) fn audit_loaded(&mut self, now: UnixMillis, events: Vec<AuditEvent>, out: &mut Vec<DeviceAction>) {
        self.audit.loading = false;
        if events.is_empty() {
            if self.audit.depth != 0 {
                self.audit.depth = 0;
                self.status_dirty = true;
            }
            return;
        }
        if !self.connected || self.audit.in_flight.is_some() {
            return;
        }
        let mut events: Vec<AuditEvent> =
            events.into_iter().map(|e| sanitize(&self.device, self.outbox_epoch, e)).collect();
        events.sort_by_key(|e| e.seq);
        events.dedup_by_key(|e| e.seq);
        events.truncate(self.config.audit_batch_events.clamp(1, MAX_AUDIT_BATCH_EVENTS));
        // Shrink the prefix until it fits; one sanitized event always does.
        let mut count = events.len();
        while count > 0 {
            let message = UpMessage {
                device: self.device.clone(),
                sent_at: now,
                body: Up::Audit(AuditBatch { events: events[..count].to_vec() }),
            };
            if let Some(payload) = self.sign(&message) {
                let last = events[count - 1].seq;
                self.audit.highest_sent = self.audit.highest_sent.max(last);
                self.audit.wait = self.audit.retransmit.next_delay();
                self.audit.in_flight = Some((last, now));
                out.push(DeviceAction::Publish(Publish {
                    topic: topics::device_up(&self.device),
                    payload,
                    retain: false,
                }));
                return;
            }
            count /= 2;
        }
    }
}

/// Makes an outbox event sendable without losing it: the device and limits
/// of this protocol version are enforced by correcting, not dropping.
fn sanitize(device: &DeviceId, epoch: u64, mut event: AuditEvent) -> AuditEvent {
    event.device = device.clone();
    event.epoch = epoch;
    if let Some(reason) = &mut event.reason {
        truncate_utf8(reason, MAX_REASON_BYTES);
    }
    if event.model_id.is_empty() {
        event.model_id = "unknown".into();
    }
    truncate_utf8(&mut event.model_id, MAX_MODEL_ID_BYTES);
    event.score = event.score.filter(|v| v.is_finite());
    event.liveness_score = event.liveness_score.filter(|v| v.is_finite());
    let t = &mut event.timings_ms;
    for value in [&mut t.detect, &mut t.align, &mut t.quality, &mut t.liveness, &mut t.embed, &mut t.matching] {
        if !value.is_finite() {
            *value = 0.0;
        }
    }
    event
}

fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}
