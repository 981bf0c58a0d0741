//! Liveness configuration: thresholds and timing, with defaults in code.

use serde::{Deserialize, Serialize};

/// How cues become a verdict. Every field has a default; a TOML table with
/// any subset of these keys (kebab-case) is valid, an unknown key is an error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct LivenessConfig {
    /// No verdict before this many frames of the track have been observed.
    pub min_frames: usize,
    /// A track's cues are the medians over at most this many recent frames.
    pub history: usize,
    /// Moiré cue: the track's median score at or above which it is a screen.
    pub moire_spoof: f32,
    /// Frame cue: the track's median third-line support (face-box lengths) at
    /// or above which a paper or screen edge encloses the face.
    pub frame_spoof: f32,
    /// Temporal cue: the two frames compared are this far apart (ms).
    pub lag_ms: u32,
    /// Temporal cue: informative frame pairs needed before it counts.
    pub min_motion_pairs: usize,
    /// Temporal cue: mean evidence at or below which face and surroundings
    /// moved as one plane (spoof).
    pub planar_spoof: f32,
    /// Temporal cue: mean evidence at or above which the face moved against a
    /// static scene (live).
    pub scene_live: f32,
    /// A clean track with no temporal evidence either way (a person standing
    /// still) is live after this long (ms) — time for a moving photo to show
    /// that it is planar.
    pub still_live_after_ms: u32,
    /// Operator model: median live probability at or below which it is a spoof.
    pub model_spoof: f32,
    /// Operator model: median live probability needed for a live verdict.
    pub model_live: f32,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            min_frames: 5,
            history: 90,
            moire_spoof: 1.0,
            frame_spoof: 0.6,
            lag_ms: 200,
            min_motion_pairs: 5,
            planar_spoof: -0.05,
            scene_live: 0.05,
            still_live_after_ms: 1000,
            model_spoof: 0.3,
            model_live: 0.5,
        }
    }
}

impl LivenessConfig {
    /// Semantic checks serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        if self.min_frames == 0 {
            return Err("min-frames must be at least 1".into());
        }
        if self.history < self.min_frames {
            return Err(format!("history ({}) must be at least min-frames ({})", self.history, self.min_frames));
        }
        for (name, value) in [("moire-spoof", self.moire_spoof), ("frame-spoof", self.frame_spoof)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!("{name} must be a positive number"));
            }
        }
        if self.lag_ms == 0 {
            return Err("lag-ms must be positive".into());
        }
        if !(-1.0..=1.0).contains(&self.planar_spoof)
            || !(-1.0..=1.0).contains(&self.scene_live)
            || self.planar_spoof >= self.scene_live
        {
            return Err("planar-spoof and scene-live must lie in [-1, 1] with planar-spoof < scene-live".into());
        }
        if !(0.0..=1.0).contains(&self.model_spoof)
            || !(0.0..=1.0).contains(&self.model_live)
            || self.model_spoof > self.model_live
        {
            return Err("model-spoof and model-live must lie in [0, 1] with model-spoof <= model-live".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass_their_own_check_and_an_empty_table_is_the_defaults() {
        LivenessConfig::default().check().unwrap();
        let parsed: LivenessConfig = toml::from_str("").unwrap();
        assert_eq!(parsed, LivenessConfig::default());
    }

    #[test]
    fn keys_are_kebab_case_and_unknown_keys_are_refused() {
        let parsed: LivenessConfig = toml::from_str("frame-spoof = 0.8\nstill-live-after-ms = 1500").unwrap();
        assert_eq!(parsed.frame_spoof, 0.8);
        assert_eq!(parsed.still_live_after_ms, 1500);
        let err = toml::from_str::<LivenessConfig>("frame_spoof = 0.8").unwrap_err().to_string();
        assert!(err.contains("frame_spoof"), "{err}");
    }

    #[test]
    fn inverted_temporal_thresholds_are_refused() {
        let config = LivenessConfig { planar_spoof: 0.2, scene_live: 0.1, ..LivenessConfig::default() };
        assert!(config.check().unwrap_err().contains("planar-spoof"));
    }
}
