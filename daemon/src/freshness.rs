//! The staleness gate (DESIGN.md §5, §7): a door whose gallery has had no
//! valid freshness proof for `[sync] max-staleness-secs` denies everyone but
//! identities marked `offline_access`, so a person the centre removed is
//! never admitted by a door that was cut off before the removal reached it.
//!
//! The sync shell writes the moment the door turns stale
//! ([`DeviceSync::fresh_until`]) after every input it feeds the machine; the
//! kiosk reads it at decision time against its own clock, so a door whose
//! sync task died turns stale by itself.
//!
//! [`DeviceSync::fresh_until`]: facegate_protocol::sync::device::DeviceSync::fresh_until

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use facegate_protocol::UnixMillis;

use crate::metrics::Metrics;

#[derive(Debug)]
struct Inner {
    /// The door is fresh while `now < fresh_until` (unix ms).
    fresh_until: AtomicI64,
    /// When the gallery was last verified current, or when the gate was
    /// made (unix ms): what "stale for N s" counts from.
    verified_at: AtomicI64,
    max_staleness_ms: u64,
}

/// The shared "fresh until" moment; cheap to clone.
#[derive(Debug, Clone)]
pub struct FreshnessGate {
    inner: Arc<Inner>,
}

/// The gate's verdict at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// No valid proof for `age_secs` (at least), over the bound.
    Stale {
        age_secs: u64,
        max_staleness_secs: u64,
    },
}

impl Freshness {
    pub fn is_stale(self) -> bool {
        matches!(self, Self::Stale { .. })
    }
}

impl fmt::Display for Freshness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fresh => f.write_str("gallery fresh"),
            Self::Stale { age_secs, max_staleness_secs } => write!(
                f,
                "gallery stale: no valid freshness proof for {age_secs} s (max-staleness-secs {max_staleness_secs})"
            ),
        }
    }
}

impl FreshnessGate {
    /// Never stale: sync is off (a standalone kiosk) or
    /// `max-staleness-secs = 0`.
    pub fn off() -> Self {
        Self::with(UnixMillis::MAX, 0, 0)
    }

    /// A gate for a door that syncs: stale from `now` until the sync shell
    /// reports its first valid proof (fail secure at start). `0` is
    /// [`FreshnessGate::off`].
    pub fn new(max_staleness_ms: u64, now: UnixMillis) -> Self {
        if max_staleness_ms == 0 {
            return Self::off();
        }
        Self::with(UnixMillis::MIN, now, max_staleness_ms)
    }

    fn with(fresh_until: UnixMillis, verified_at: UnixMillis, max_staleness_ms: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                fresh_until: AtomicI64::new(fresh_until),
                verified_at: AtomicI64::new(verified_at),
                max_staleness_ms,
            }),
        }
    }

    /// Whether the gate can ever say stale.
    pub fn is_enabled(&self) -> bool {
        self.inner.max_staleness_ms > 0
    }

    /// Records the machine's [`fresh_until`](facegate_protocol::sync::device::DeviceSync::fresh_until):
    /// `None` (staleness off) never turns stale; a time in the past is stale
    /// at once.
    pub fn set(&self, fresh_until: Option<UnixMillis>) {
        if !self.is_enabled() {
            return;
        }
        let until = fresh_until.unwrap_or(UnixMillis::MAX);
        self.inner.fresh_until.store(until, Ordering::Release);
        let max = i64::try_from(self.inner.max_staleness_ms).unwrap_or(i64::MAX);
        if until != UnixMillis::MIN && until != UnixMillis::MAX {
            self.inner.verified_at.fetch_max(until.saturating_sub(max), Ordering::AcqRel);
        }
    }

    /// The moment the door turns (or turned) stale, unix ms.
    pub fn fresh_until(&self) -> UnixMillis {
        self.inner.fresh_until.load(Ordering::Acquire)
    }

    /// The verdict at `now` (unix ms).
    pub fn check(&self, now: UnixMillis) -> Freshness {
        if now < self.fresh_until() {
            return Freshness::Fresh;
        }
        let since = self.inner.verified_at.load(Ordering::Acquire);
        let age_ms = u64::try_from(now.saturating_sub(since)).unwrap_or(0);
        Freshness::Stale { age_secs: age_ms / 1000, max_staleness_secs: self.inner.max_staleness_ms / 1000 }
    }

    /// The verdict now, by the system clock.
    pub fn check_now(&self) -> Freshness {
        self.check(crate::kiosk::unix_millis())
    }
}

/// Follows the gate for operators: the `facegate_gallery_stale` gauge, a
/// WARN line when the door turns stale and an INFO line when it is fresh
/// again. Polled by the pipeline loop, not by the sync task, so it reports
/// a dead sync task too.
#[derive(Debug, Default)]
pub struct StaleWatch {
    stale: Option<bool>,
}

impl StaleWatch {
    /// Updates the gauge and logs a change; returns the verdict.
    pub fn observe(&mut self, gate: &FreshnessGate, now: UnixMillis, metrics: Option<&Metrics>) -> Freshness {
        let verdict = gate.check(now);
        let stale = verdict.is_stale();
        if let Some(metrics) = metrics {
            metrics.gallery_stale.set(i64::from(stale));
        }
        if self.stale != Some(stale) {
            match verdict {
                Freshness::Stale { age_secs, max_staleness_secs } => log::warn!(
                    age_secs = age_secs, max_staleness_secs = max_staleness_secs;
                    "gallery stale: only offline-access identities are granted until a freshness proof arrives"
                ),
                Freshness::Fresh if self.stale.is_some() => log::info!("gallery fresh again"),
                Freshness::Fresh => {}
            }
            self.stale = Some(stale);
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_off_gate_is_never_stale() {
        let gate = FreshnessGate::off();
        gate.set(Some(0));
        assert_eq!(gate.check(i64::MAX - 1), Freshness::Fresh);
        assert_eq!(FreshnessGate::new(0, 5).check(1_000_000), Freshness::Fresh);
    }

    #[test]
    fn a_syncing_door_is_stale_until_its_first_proof_and_after_its_bound() {
        let gate = FreshnessGate::new(300_000, 1_000_000);
        let verdict = gate.check(1_012_500);
        assert_eq!(verdict, Freshness::Stale { age_secs: 12, max_staleness_secs: 300 });
        assert!(verdict.to_string().contains("stale"), "{verdict}");
        // Verified at 1_100_000: fresh until 1_400_000.
        gate.set(Some(1_400_000));
        assert_eq!(gate.check(1_399_999), Freshness::Fresh);
        assert_eq!(gate.check(1_460_000), Freshness::Stale { age_secs: 360, max_staleness_secs: 300 });
        // A purge in flight: stale at once, still counted from the last proof.
        gate.set(Some(i64::MIN));
        assert_eq!(gate.check(1_200_000), Freshness::Stale { age_secs: 100, max_staleness_secs: 300 });
        gate.set(None);
        assert_eq!(gate.check(i64::MAX - 1), Freshness::Fresh);
    }

    #[test]
    fn the_stale_reason_names_the_bound() {
        let reason = Freshness::Stale { age_secs: 42, max_staleness_secs: 30 }.to_string();
        assert_eq!(reason, "gallery stale: no valid freshness proof for 42 s (max-staleness-secs 30)");
    }

    #[test]
    fn the_watch_sets_the_gauge_both_ways() {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        let gate = FreshnessGate::new(10_000, 0);
        let mut watch = StaleWatch::default();
        assert!(watch.observe(&gate, 1_000, Some(&metrics)).is_stale());
        assert!(crate::metrics::render(&registry).contains("facegate_gallery_stale 1"));
        gate.set(Some(20_000));
        assert!(!watch.observe(&gate, 15_000, Some(&metrics)).is_stale());
        assert!(crate::metrics::render(&registry).contains("facegate_gallery_stale 0"));
    }
}
