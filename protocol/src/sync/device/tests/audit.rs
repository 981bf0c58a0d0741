//! The audit outbox half of the device machine.

use super::*;

#[test]
fn audit_events_are_sent_oldest_first_and_kept_until_acknowledged() {
    let mut m = current(0);
    let out = m.handle(T0, DeviceInput::OutboxChanged { depth: 3 });
    assert_eq!(out.iter().filter(|a| matches!(a, DeviceAction::LoadAudit { limit: 64 })).count(), 1);
    assert!(
        m.handle(T0, DeviceInput::OutboxChanged { depth: 4 })
            .iter()
            .all(|a| !matches!(a, DeviceAction::LoadAudit { .. }))
    );
    let out = m.handle(T0, DeviceInput::AuditLoaded { events: vec![event(1), event(2), event(3)] });
    let events = audit_batch(&out);
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    // Nothing else is sent while the batch is unacknowledged.
    assert!(
        m.handle(T0 + 1, DeviceInput::OutboxChanged { depth: 5 })
            .iter()
            .all(|a| !matches!(a, DeviceAction::LoadAudit { .. }))
    );
    // The acknowledgement deletes exactly the batch, then (in that order) the next is loaded.
    let out = m.handle(T0 + 2, down(Down::AuditAck { epoch: 0, up_to_seq: 3 }).input());
    assert_eq!(out, vec![DeviceAction::AckAudit { up_to_seq: 3 }, DeviceAction::LoadAudit { limit: 64 }]);
}

#[test]
fn an_acknowledgement_never_deletes_what_was_not_sent() {
    let mut m = current(0);
    m.handle(T0, DeviceInput::OutboxChanged { depth: 5 });
    m.handle(T0, DeviceInput::AuditLoaded { events: vec![event(1), event(2)] });
    let out = m.handle(T0, down(Down::AuditAck { epoch: 0, up_to_seq: 1_000 }).input());
    assert_eq!(out, vec![DeviceAction::AckAudit { up_to_seq: 2 }, DeviceAction::LoadAudit { limit: 64 }]);
    // A replayed, older acknowledgement does nothing.
    assert!(m.handle(T0, down(Down::AuditAck { epoch: 0, up_to_seq: 1 }).input()).is_empty());
}

#[test]
fn an_unacknowledged_batch_is_retransmitted_with_backoff() {
    let mut m = current(0);
    m.handle(T0, DeviceInput::OutboxChanged { depth: 1 });
    m.handle(T0, DeviceInput::AuditLoaded { events: vec![event(7)] });
    let loads = |out: Vec<DeviceAction>| out.iter().filter(|a| matches!(a, DeviceAction::LoadAudit { .. })).count();
    assert_eq!(loads(m.handle(T0 + 9_999, DeviceInput::Tick)), 0);
    assert_eq!(loads(m.handle(T0 + 10_000, DeviceInput::Tick)), 1);
    m.handle(T0 + 10_000, DeviceInput::AuditLoaded { events: vec![event(7)] });
    assert_eq!(loads(m.handle(T0 + 29_999, DeviceInput::Tick)), 0, "the wait doubled");
    assert_eq!(loads(m.handle(T0 + 30_000, DeviceInput::Tick)), 1);
}

#[test]
fn reconnecting_resends_the_pending_batch_at_once() {
    let mut m = current(0);
    m.handle(T0, DeviceInput::OutboxChanged { depth: 1 });
    m.handle(T0, DeviceInput::AuditLoaded { events: vec![event(7)] });
    m.handle(T0 + 1, DeviceInput::Disconnected);
    // A load answered while offline publishes nothing.
    let out = m.handle(T0 + 2, DeviceInput::Connected);
    assert!(out.iter().any(|a| matches!(a, DeviceAction::LoadAudit { .. })));
    m.handle(T0 + 3, DeviceInput::Disconnected);
    assert!(ups(&m.handle(T0 + 4, DeviceInput::AuditLoaded { events: vec![event(7)] })).is_empty());
}

#[test]
fn unsendable_events_are_corrected_not_dropped() {
    let mut m = current(0);
    m.handle(T0, DeviceInput::OutboxChanged { depth: 1 });
    let mut bad = event(1);
    bad.device = DeviceId::new("someone-else").unwrap();
    bad.score = Some(f32::NAN);
    bad.reason = Some("é".repeat(600));
    bad.model_id = String::new();
    bad.timings_ms.embed = f32::INFINITY;
    let out = m.handle(T0, DeviceInput::AuditLoaded { events: vec![bad] });
    let events = audit_batch(&out);
    let e = &events[0];
    assert_eq!((e.seq, &e.device, e.score, e.model_id.as_str()), (1, &device_id(), None, "unknown"));
    assert_eq!(e.reason.as_ref().unwrap().len(), 1024);
    assert_eq!(e.timings_ms.embed, 0.0);
}

#[test]
fn a_large_outbox_goes_out_in_bounded_batches() {
    let config = DeviceConfig { audit_batch_events: 10, ..DeviceConfig::default() };
    let mut m = machine_at(0, config);
    m.handle(T0, DeviceInput::Connected);
    let out = m.handle(T0, DeviceInput::OutboxChanged { depth: 100 });
    assert!(out.contains(&DeviceAction::LoadAudit { limit: 10 }));
    let out = m.handle(T0, DeviceInput::AuditLoaded { events: (1..=30).map(event).collect() });
    let events = audit_batch(&out);
    assert_eq!(events.len(), 10);
}
