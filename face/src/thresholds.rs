//! Decision thresholds from the calibrated operating curve.
//!
//! The manifest stores, for several false-match rates, the similarity
//! threshold that produced that FMR on the calibration set. A 1:1 decision
//! uses the threshold for the configured FMR. A 1:N search compares the probe
//! with all N enrolled people, so a stranger is falsely identified with
//! probability FPIR ≈ 1 − (1 − FMR)^N ≈ N·FMR; to hold a target FPIR the
//! per-comparison FMR must be FPIR / N, and the threshold rises with N.

use serde::Serialize;

use crate::manifest::OperatingPoint;

/// The threshold chosen for a 1:N search and how it was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OpenSetThreshold {
    pub threshold: f32,
    /// The per-comparison FMR the threshold aims for (target FPIR / N).
    pub per_comparison_fmr: f64,
    /// True when that FMR is below the smallest FMR the calibration measured:
    /// the strictest calibrated threshold is used and the target FPIR is not
    /// guaranteed (use 1:1 verification for galleries this large).
    pub beyond_calibration: bool,
}

/// The threshold giving `fmr`, interpolated log-linearly between calibrated
/// points and clamped to the calibrated range. `None` for an empty curve.
pub fn threshold_for_fmr(curve: &[OperatingPoint], fmr: f64) -> Option<f32> {
    let first = curve.first()?;
    let last = curve.last()?;
    if fmr >= first.fmr {
        return Some(first.threshold);
    }
    if fmr <= last.fmr {
        return Some(last.threshold);
    }
    for pair in curve.windows(2) {
        let (hi, lo) = (pair[0], pair[1]);
        if fmr <= hi.fmr && fmr >= lo.fmr {
            let t = (fmr.ln() - hi.fmr.ln()) / (lo.fmr.ln() - hi.fmr.ln());
            return Some(hi.threshold + (lo.threshold - hi.threshold) * t as f32);
        }
    }
    Some(last.threshold)
}

/// The 1:N threshold for a gallery of `gallery_size` identities and a target
/// false-positive identification rate.
pub fn open_set_threshold(curve: &[OperatingPoint], target_fpir: f64, gallery_size: usize) -> Option<OpenSetThreshold> {
    let n = gallery_size.max(1) as f64;
    let per_comparison_fmr = target_fpir / n;
    let threshold = threshold_for_fmr(curve, per_comparison_fmr)?;
    let smallest = curve.last().map_or(f64::INFINITY, |p| p.fmr);
    Some(OpenSetThreshold { threshold, per_comparison_fmr, beyond_calibration: per_comparison_fmr < smallest })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve() -> Vec<OperatingPoint> {
        vec![
            OperatingPoint { fmr: 1e-2, threshold: 0.90, fnmr: 0.01 },
            OperatingPoint { fmr: 1e-3, threshold: 0.93, fnmr: 0.03 },
            OperatingPoint { fmr: 1e-4, threshold: 0.95, fnmr: 0.08 },
        ]
    }

    #[test]
    fn calibrated_points_are_returned_exactly() {
        assert_eq!(threshold_for_fmr(&curve(), 1e-3), Some(0.93));
    }

    #[test]
    fn between_points_interpolates_in_log_fmr() {
        let t = threshold_for_fmr(&curve(), 10f64.powf(-2.5)).unwrap();
        assert!((t - 0.915).abs() < 1e-5, "{t}");
    }

    #[test]
    fn outside_the_curve_clamps() {
        assert_eq!(threshold_for_fmr(&curve(), 0.5), Some(0.90));
        assert_eq!(threshold_for_fmr(&curve(), 1e-9), Some(0.95));
        assert_eq!(threshold_for_fmr(&[], 1e-3), None);
    }

    #[test]
    fn larger_galleries_need_stricter_thresholds() {
        let small = open_set_threshold(&curve(), 1e-2, 1).unwrap();
        let large = open_set_threshold(&curve(), 1e-2, 100).unwrap();
        assert!(large.threshold > small.threshold);
        assert!(!large.beyond_calibration);
        let huge = open_set_threshold(&curve(), 1e-2, 100_000).unwrap();
        assert!(huge.beyond_calibration);
        assert_eq!(huge.threshold, 0.95);
    }
}
