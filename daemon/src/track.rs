//! Following the served face across frames, so that one person walking up is
//! one attempt, not thirty decisions. Pure: detections and frame times in,
//! track events out.

use std::time::Duration;

use facegate_face::BoundingBox;

/// Tracker settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerConfig {
    /// Boxes of consecutive sightings must overlap this much (IoU).
    pub min_iou: f32,
    /// The track ends when its face is unseen for this long.
    pub timeout: Duration,
}

/// What happened to the track with one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrackEvent {
    /// No face and no track.
    Idle,
    /// A new track began with this frame (a previous one may have ended).
    Started { id: u64, ended: Option<u64> },
    /// The current track continues with this frame's face.
    Continued { id: u64 },
    /// No face in this frame; the track lives on until it times out.
    Missing { id: u64 },
    /// The track timed out (no face for `timeout`).
    Ended { id: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Track {
    id: u64,
    last_box: BoundingBox,
    last_seen: Duration,
}

/// Tracks the single face the kiosk serves.
#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    current: Option<Track>,
    next_id: u64,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self { config, current: None, next_id: 1 }
    }

    /// The id of the live track, if any.
    pub fn current(&self) -> Option<u64> {
        self.current.map(|t| t.id)
    }

    /// Feeds the served face of the frame at `now` (or `None`).
    pub fn observe(&mut self, now: Duration, face: Option<&BoundingBox>) -> TrackEvent {
        match (face, self.current) {
            (None, None) => TrackEvent::Idle,
            (None, Some(track)) => {
                if now.saturating_sub(track.last_seen) > self.config.timeout {
                    self.current = None;
                    TrackEvent::Ended { id: track.id }
                } else {
                    TrackEvent::Missing { id: track.id }
                }
            }
            (Some(face), Some(track))
                if now.saturating_sub(track.last_seen) <= self.config.timeout
                    && track.last_box.iou(face) >= self.config.min_iou =>
            {
                self.current = Some(Track { id: track.id, last_box: *face, last_seen: now });
                TrackEvent::Continued { id: track.id }
            }
            (Some(face), previous) => {
                let id = self.next_id;
                self.next_id += 1;
                self.current = Some(Track { id, last_box: *face, last_seen: now });
                TrackEvent::Started { id, ended: previous.map(|t| t.id) }
            }
        }
    }

    /// Ends the live track (end of stream, shutdown).
    pub fn finish(&mut self) -> Option<u64> {
        self.current.take().map(|t| t.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn face(x: f32) -> BoundingBox {
        BoundingBox { x, y: 100.0, width: 120.0, height: 150.0 }
    }

    fn tracker() -> Tracker {
        Tracker::new(TrackerConfig { min_iou: 0.3, timeout: at(500) })
    }

    #[test]
    fn a_face_moving_slowly_is_one_track() {
        let mut t = tracker();
        assert_eq!(t.observe(at(0), Some(&face(100.0))), TrackEvent::Started { id: 1, ended: None });
        for i in 1..30u64 {
            assert_eq!(t.observe(at(i * 40), Some(&face(100.0 + i as f32 * 3.0))), TrackEvent::Continued { id: 1 });
        }
    }

    #[test]
    fn a_short_gap_keeps_the_track_and_a_long_one_ends_it() {
        let mut t = tracker();
        t.observe(at(0), Some(&face(100.0)));
        assert_eq!(t.observe(at(200), None), TrackEvent::Missing { id: 1 });
        assert_eq!(t.observe(at(400), Some(&face(105.0))), TrackEvent::Continued { id: 1 });
        assert_eq!(t.observe(at(800), None), TrackEvent::Missing { id: 1 });
        assert_eq!(t.observe(at(1000), None), TrackEvent::Ended { id: 1 });
        assert_eq!(t.observe(at(1040), None), TrackEvent::Idle);
    }

    #[test]
    fn a_different_face_position_starts_a_new_track() {
        let mut t = tracker();
        t.observe(at(0), Some(&face(100.0)));
        assert_eq!(t.observe(at(40), Some(&face(400.0))), TrackEvent::Started { id: 2, ended: Some(1) });
        assert_eq!(t.current(), Some(2));
    }

    #[test]
    fn a_face_back_after_the_timeout_is_a_new_attempt() {
        let mut t = tracker();
        t.observe(at(0), Some(&face(100.0)));
        assert_eq!(t.observe(at(900), Some(&face(100.0))), TrackEvent::Started { id: 2, ended: Some(1) });
    }
}
