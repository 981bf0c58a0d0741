//! The quality gate: is this face worth judging? Size and pose come from the
//! landmarks; sharpness and exposure from the aligned chip, so they do not
//! depend on how large the face was in the frame.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::geometry::{Landmarks, Point};

/// Limits of the quality gate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct QualityConfig {
    /// Minimum distance between the eyes in image pixels.
    pub min_eye_distance: f32,
    /// Minimum variance of the Laplacian over the chip's face area.
    pub min_sharpness: f32,
    /// Acceptable mean brightness (0–255) of the chip's face area.
    pub min_brightness: f32,
    pub max_brightness: f32,
    /// Maximum fraction of face pixels that are clipped black or white.
    pub max_clipped: f32,
    /// Maximum estimated yaw, pitch and roll in degrees.
    pub max_yaw: f32,
    pub max_pitch: f32,
    pub max_roll: f32,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            min_eye_distance: 18.0,
            min_sharpness: 12.0,
            min_brightness: 40.0,
            max_brightness: 220.0,
            max_clipped: 0.25,
            max_yaw: 40.0,
            max_pitch: 35.0,
            max_roll: 35.0,
        }
    }
}

impl QualityConfig {
    /// A gate that accepts every face (for measuring the model alone).
    pub fn permissive() -> Self {
        Self {
            min_eye_distance: 0.0,
            min_sharpness: 0.0,
            min_brightness: 0.0,
            max_brightness: 255.0,
            max_clipped: 1.0,
            max_yaw: 90.0,
            max_pitch: 90.0,
            max_roll: 180.0,
        }
    }

    /// What serde cannot check, named by key (kebab-case, as configured):
    /// every limit a finite number in its range, brightness bounds in order.
    /// The kiosk's and the server's configurations both call it.
    pub fn check(&self) -> Result<(), String> {
        let in_range = |key: &str, value: f32, low: f32, high: f32| {
            if value.is_finite() && (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(format!("{key} must be a number in {low}..={high}, got {value}"))
            }
        };
        in_range("min-eye-distance", self.min_eye_distance, 0.0, 10_000.0)?;
        in_range("min-sharpness", self.min_sharpness, 0.0, 1e9)?;
        in_range("min-brightness", self.min_brightness, 0.0, 255.0)?;
        in_range("max-brightness", self.max_brightness, 0.0, 255.0)?;
        in_range("max-clipped", self.max_clipped, 0.0, 1.0)?;
        in_range("max-yaw", self.max_yaw, 0.0, 90.0)?;
        in_range("max-pitch", self.max_pitch, 0.0, 90.0)?;
        in_range("max-roll", self.max_roll, 0.0, 180.0)?;
        if self.min_brightness >= self.max_brightness {
            return Err(format!(
                "min-brightness ({}) must be below max-brightness ({}): no face could pass",
                self.min_brightness, self.max_brightness
            ));
        }
        Ok(())
    }
}

/// One reason a face fails the gate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "issue", rename_all = "kebab-case")]
pub enum QualityIssue {
    TooSmall { eye_distance: f32, min: f32 },
    Blurred { sharpness: f32, min: f32 },
    TooDark { brightness: f32, min: f32 },
    Overexposed { brightness: f32, max: f32 },
    Clipped { fraction: f32, max: f32 },
    Turned { yaw: f32, max: f32 },
    Tilted { pitch: f32, max: f32 },
    Rolled { roll: f32, max: f32 },
}

impl QualityIssue {
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooSmall { .. } => "too-small",
            Self::Blurred { .. } => "too-blurred",
            Self::TooDark { .. } => "too-dark",
            Self::Overexposed { .. } => "overexposed",
            Self::Clipped { .. } => "clipped",
            Self::Turned { .. } => "turned-away",
            Self::Tilted { .. } => "tilted",
            Self::Rolled { .. } => "rolled",
        }
    }

    /// The issues as one human sentence fragment.
    pub fn list(issues: &[QualityIssue]) -> String {
        issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    }
}

impl std::fmt::Display for QualityIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::TooSmall { eye_distance, min } => {
                write!(f, "face too small ({eye_distance:.0} px between the eyes, {min:.0} needed)")
            }
            Self::Blurred { sharpness, min } => {
                write!(f, "face too blurred (sharpness {sharpness:.1}, {min:.1} needed)")
            }
            Self::TooDark { brightness, min } => {
                write!(f, "face too dark (brightness {brightness:.0}, {min:.0} needed)")
            }
            Self::Overexposed { brightness, max } => {
                write!(f, "face overexposed (brightness {brightness:.0}, at most {max:.0})")
            }
            Self::Clipped { fraction, max } => write!(
                f,
                "{:.0}% of the face is clipped black or white (at most {:.0}%)",
                fraction * 100.0,
                max * 100.0
            ),
            Self::Turned { yaw, max } => write!(f, "face turned {yaw:.0}° sideways (at most {max:.0}°)"),
            Self::Tilted { pitch, max } => write!(f, "face tilted {pitch:.0}° up or down (at most {max:.0}°)"),
            Self::Rolled { roll, max } => write!(f, "head rolled {roll:.0}° (at most {max:.0}°)"),
        }
    }
}

/// What the gate measured on one face.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    pub eye_distance: f32,
    pub sharpness: f32,
    pub brightness: f32,
    pub clipped: f32,
    pub pose: Pose,
    pub issues: Vec<QualityIssue>,
}

impl QualityReport {
    pub fn passed(&self) -> bool {
        self.issues.is_empty()
    }

    /// A single figure to rank frames of one track: larger, sharper, more
    /// frontal faces score higher.
    pub fn rank(&self) -> f32 {
        let frontal = 1.0 - (self.pose.yaw.abs() / 90.0).min(1.0);
        let sharp = (self.sharpness / 100.0).min(1.0);
        let size = (self.eye_distance / 60.0).min(1.0);
        frontal * 0.5 + sharp * 0.3 + size * 0.2
    }
}

/// Head pose estimated from landmark geometry, in degrees (approximate).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Pose {
    pub yaw: f32,
    pub pitch: f32,
    pub roll: f32,
}

/// Nose-tip depth in front of the eye plane, as a fraction of the distance
/// between the eyes (anthropometric average).
const NOSE_DEPTH: f32 = 0.6;
/// Where the nose tip sits between eye line (0) and mouth line (1) in a frontal face.
const FRONTAL_NOSE_HEIGHT: f32 = 0.53;

impl Pose {
    /// Estimates pose from the five landmarks.
    pub fn from_landmarks(landmarks: &Landmarks) -> Pose {
        let (el, er) = (landmarks.eye_left(), landmarks.eye_right());
        let roll = (er.y - el.y).atan2(er.x - el.x);
        let (cos, sin) = (roll.cos(), roll.sin());
        // Undo the roll around the eye midpoint, then read yaw and pitch.
        let origin = el.midpoint(er);
        let unroll = |p: Point| {
            let (dx, dy) = (p.x - origin.x, p.y - origin.y);
            Point::new(dx * cos + dy * sin, -dx * sin + dy * cos)
        };
        let eye_span = el.distance(er).max(1e-3);
        let nose = unroll(landmarks.nose());
        let mouth = unroll(landmarks.mouth_left().midpoint(landmarks.mouth_right()));
        let yaw = (nose.x / eye_span / NOSE_DEPTH).atan();
        let height = if mouth.y.abs() > 1e-3 { nose.y / mouth.y } else { FRONTAL_NOSE_HEIGHT };
        let pitch = ((height - FRONTAL_NOSE_HEIGHT) * 2.0).clamp(-1.0, 1.0).asin();
        Pose { yaw: yaw.to_degrees(), pitch: pitch.to_degrees(), roll: roll.to_degrees() }
    }
}

/// Measures a face: landmarks from the frame, sharpness and exposure from the
/// chip (the central region inside the reference eye/mouth box).
pub fn assess(landmarks: &Landmarks, chip: &RgbImage, config: &QualityConfig) -> QualityReport {
    let eye_distance = landmarks.eye_distance();
    let pose = Pose::from_landmarks(landmarks);
    let (sharpness, brightness, clipped) = chip_statistics(chip);
    let mut issues = Vec::new();
    if eye_distance < config.min_eye_distance {
        issues.push(QualityIssue::TooSmall { eye_distance, min: config.min_eye_distance });
    }
    if sharpness < config.min_sharpness {
        issues.push(QualityIssue::Blurred { sharpness, min: config.min_sharpness });
    }
    if brightness < config.min_brightness {
        issues.push(QualityIssue::TooDark { brightness, min: config.min_brightness });
    }
    if brightness > config.max_brightness {
        issues.push(QualityIssue::Overexposed { brightness, max: config.max_brightness });
    }
    if clipped > config.max_clipped {
        issues.push(QualityIssue::Clipped { fraction: clipped, max: config.max_clipped });
    }
    if pose.yaw.abs() > config.max_yaw {
        issues.push(QualityIssue::Turned { yaw: pose.yaw.abs(), max: config.max_yaw });
    }
    if pose.pitch.abs() > config.max_pitch {
        issues.push(QualityIssue::Tilted { pitch: pose.pitch.abs(), max: config.max_pitch });
    }
    if pose.roll.abs() > config.max_roll {
        issues.push(QualityIssue::Rolled { roll: pose.roll.abs(), max: config.max_roll });
    }
    QualityReport { eye_distance, sharpness, brightness, clipped, pose, issues }
}

/// Variance of the 4-neighbour Laplacian, mean luma and clipped fraction over
/// the central face region of the chip (the middle 60% of each side).
pub fn chip_statistics(chip: &RgbImage) -> (f32, f32, f32) {
    let (w, h) = chip.dimensions();
    let (x0, x1) = (w / 5, w - w / 5);
    let (y0, y1) = (h / 5, h - h / 5);
    if x1 <= x0 + 2 || y1 <= y0 + 2 {
        return (0.0, 0.0, 1.0);
    }
    let luma = |x: u32, y: u32| {
        let p = chip.get_pixel(x, y).0;
        0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
    };
    let (mut sum, mut clipped, mut count) = (0.0f64, 0u32, 0u32);
    let (mut lap_sum, mut lap_sq, mut lap_count) = (0.0f64, 0.0f64, 0u32);
    for y in y0..y1 {
        for x in x0..x1 {
            let v = luma(x, y);
            sum += f64::from(v);
            count += 1;
            if !(8.0..=247.0).contains(&v) {
                clipped += 1;
            }
            if x > x0 && x + 1 < x1 && y > y0 && y + 1 < y1 {
                let lap = luma(x - 1, y) + luma(x + 1, y) + luma(x, y - 1) + luma(x, y + 1) - 4.0 * v;
                lap_sum += f64::from(lap);
                lap_sq += f64::from(lap) * f64::from(lap);
                lap_count += 1;
            }
        }
    }
    let n = f64::from(lap_count.max(1));
    let mean_lap = lap_sum / n;
    let variance = (lap_sq / n - mean_lap * mean_lap).max(0.0);
    (variance as f32, (sum / f64::from(count)) as f32, clipped as f32 / count as f32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn limits_that_no_face_could_pass_or_that_are_not_numbers_are_refused_by_name() {
        QualityConfig::default().check().unwrap();
        QualityConfig::permissive().check().unwrap();
        let refused = |c: QualityConfig| c.check().unwrap_err();
        assert!(refused(QualityConfig { max_yaw: f32::NAN, ..QualityConfig::default() }).starts_with("max-yaw"));
        assert!(
            refused(QualityConfig { min_eye_distance: -1.0, ..QualityConfig::default() })
                .starts_with("min-eye-distance")
        );
        let inverted =
            refused(QualityConfig { min_brightness: 200.0, max_brightness: 10.0, ..QualityConfig::default() });
        assert!(inverted.contains("below max-brightness"), "{inverted}");
        assert!(
            refused(QualityConfig { min_brightness: 300.0, ..QualityConfig::default() }).starts_with("min-brightness")
        );
    }

    use super::*;
    use image::Rgb;

    fn frontal() -> Landmarks {
        Landmarks([
            Point::new(47.5, 46.6),
            Point::new(100.5, 46.6),
            Point::new(74.0, 76.6),
            Point::new(50.4, 103.0),
            Point::new(97.6, 103.0),
        ])
    }

    #[test]
    fn reference_landmarks_are_frontal() {
        let pose = Pose::from_landmarks(&frontal());
        assert!(pose.yaw.abs() < 1.0 && pose.roll.abs() < 1.0 && pose.pitch.abs() < 3.0, "{pose:?}");
    }

    #[test]
    fn nose_off_centre_reads_as_yaw() {
        let mut l = frontal();
        l.0[2].x += 30.0;
        assert!(Pose::from_landmarks(&l).yaw > 30.0);
    }

    #[test]
    fn rotated_face_reads_as_roll_only() {
        let angle = 30f32.to_radians();
        let l = Landmarks(
            frontal()
                .0
                .map(|p| Point::new(p.x * angle.cos() - p.y * angle.sin(), p.x * angle.sin() + p.y * angle.cos())),
        );
        let pose = Pose::from_landmarks(&l);
        assert!((pose.roll - 30.0).abs() < 0.5 && pose.yaw.abs() < 1.0, "{pose:?}");
    }

    #[test]
    fn flat_chip_is_blurred_and_small_face_too_small() {
        let chip = RgbImage::from_pixel(150, 150, Rgb([128, 128, 128]));
        let small = frontal().scaled(0.2);
        let report = assess(&small, &chip, &QualityConfig::default());
        let codes: Vec<_> = report.issues.iter().map(QualityIssue::code).collect();
        assert!(codes.contains(&"too-small") && codes.contains(&"too-blurred"), "{codes:?}");
    }

    #[test]
    fn dark_and_bright_chips_fail_exposure() {
        let dark = RgbImage::from_pixel(150, 150, Rgb([5, 5, 5]));
        let bright = RgbImage::from_pixel(150, 150, Rgb([250, 250, 250]));
        let config = QualityConfig::default();
        let dark_codes: Vec<_> = assess(&frontal(), &dark, &config).issues.iter().map(QualityIssue::code).collect();
        let bright_codes: Vec<_> = assess(&frontal(), &bright, &config).issues.iter().map(QualityIssue::code).collect();
        assert!(dark_codes.contains(&"too-dark") && dark_codes.contains(&"clipped"));
        assert!(bright_codes.contains(&"overexposed"));
    }

    #[test]
    fn textured_chip_is_sharp() {
        let chip = RgbImage::from_fn(150, 150, |x, y| {
            let v = if (x / 3 + y / 3) % 2 == 0 { 60 } else { 190 };
            Rgb([v, v, v])
        });
        let report = assess(&frontal(), &chip, &QualityConfig::default());
        assert!(report.passed(), "{:?}", report.issues);
    }
}
