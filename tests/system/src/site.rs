//! A three-door site, as the fleet and hostile tests run it: the central
//! side (server, broker, database) with the groups `lobby` and `lab`, door-1
//! and door-2 in the lobby, door-3 in the lab, every kiosk replaying the
//! walk-up clip.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use facegate_sync_server::devdb::TestDatabase;

use crate::{Api, Broker, Central, Kiosk, Work, database, live_clip, wait_for, walk_up_clip};

/// The doors of a site and their groups.
pub const DOORS: [(&str, &[&str]); 3] = [("door-1", &["lobby"]), ("door-2", &["lobby"]), ("door-3", &["lab"])];

/// Milliseconds since the Unix epoch (audit events' `at_ms`).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A site; dropped kiosks first, then the central side, then its files.
#[derive(Debug)]
pub struct Site {
    pub kiosks: Vec<Kiosk>,
    pub central: Central,
    pub api: Api,
    _db: TestDatabase,
    pub work: Work,
}

impl Site {
    /// The central side started (`sync` appended to its `[sync]` section),
    /// the groups and doors registered, the broker started and every kiosk
    /// provisioned, replaying at `fps`; the kiosks are not started yet.
    pub fn provision(name: &str, broker: Broker, sync: &str, fps: f32) -> Self {
        let work = Work::new(name);
        let db = database();
        let mut central = Central::start_with(work.path(), &db, broker, sync);
        let api = central.api.clone();
        api.create_group("lobby");
        api.create_group("lab");
        let tokens: Vec<String> = DOORS.iter().map(|(id, groups)| api.add_device(id, groups)).collect();
        central.start_broker();
        let clip = walk_up_clip(work.path(), 1_200);
        let kiosks = DOORS
            .iter()
            .zip(&tokens)
            .map(|((id, _), token)| Kiosk::provision(work.path(), &api.url, id, token, &clip, fps))
            .collect();
        Self { kiosks, central, api, _db: db, work }
    }

    /// Starts every kiosk and waits until each is connected and, when
    /// `fresh`, holds a valid freshness proof.
    pub fn start_kiosks(&mut self, fresh: bool) {
        for kiosk in &mut self.kiosks {
            kiosk.start();
        }
        for kiosk in &self.kiosks {
            wait_for(&format!("{} to connect", kiosk.id), Duration::from_secs(300), || {
                let connected = kiosk.metric("facegate_sync_connected") == Some(1.0);
                (connected && (!fresh || kiosk.metric("facegate_gallery_stale") == Some(0.0))).then_some(())
            });
        }
    }

    /// Enrolls the walk-up clip's person in the lobby; answers his identity
    /// and the time of the enrollment.
    pub fn enroll_cap_person(&self) -> (String, u64) {
        let live = live_clip();
        let (status, body) = self.api.enroll("Cap Person", "lobby", &[live.join("002.jpg"), live.join("009.jpg")]);
        let enrolled_at = now_ms();
        assert_eq!(status, 201, "enrollment: {body}");
        (body["id"].as_str().unwrap().to_owned(), enrolled_at)
    }
}
