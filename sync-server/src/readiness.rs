//! Readiness: a latch over registered dependencies. The server is ready when
//! every dependency has reported up; each reports for itself (the MongoDB
//! probe, the index loader — and, with the sync issue, the MQTT broker
//! connection).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The set of dependencies and their state.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    deps: Arc<Mutex<BTreeMap<&'static str, Arc<AtomicBool>>>>,
}

/// One dependency's handle: set it up or down.
#[derive(Debug, Clone)]
pub struct Dependency {
    name: &'static str,
    up: Arc<AtomicBool>,
}

impl Dependency {
    pub fn set(&self, up: bool) {
        let was = self.up.swap(up, Ordering::AcqRel);
        if was != up {
            if up {
                log::info!(dependency = self.name; "dependency up");
            } else {
                log::warn!(dependency = self.name; "dependency down");
            }
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a dependency, down until it says otherwise.
    pub fn register(&self, name: &'static str) -> Dependency {
        let up = Arc::new(AtomicBool::new(false));
        if let Ok(mut deps) = self.deps.lock() {
            deps.insert(name, Arc::clone(&up));
        }
        Dependency { name, up }
    }

    /// Every dependency and whether it is up.
    pub fn status(&self) -> Vec<(&'static str, bool)> {
        self.deps.lock().map(|d| d.iter().map(|(k, v)| (*k, v.load(Ordering::Acquire))).collect()).unwrap_or_default()
    }

    /// Ready: at least one dependency registered and all up.
    pub fn is_ready(&self) -> bool {
        let status = self.status();
        !status.is_empty() && status.iter().all(|(_, up)| *up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_registered_dependency_is_up() {
        let r = Readiness::new();
        assert!(!r.is_ready());
        let db = r.register("mongodb");
        let index = r.register("index");
        db.set(true);
        assert!(!r.is_ready());
        index.set(true);
        assert!(r.is_ready());
        let broker = r.register("broker");
        assert!(!r.is_ready());
        broker.set(true);
        assert!(r.is_ready());
        db.set(false);
        assert!(!r.is_ready());
        assert_eq!(r.status(), vec![("broker", true), ("index", true), ("mongodb", false)]);
    }
}
