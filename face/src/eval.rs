//! Verification metrics from genuine and impostor scores.
//!
//! A pair is declared a match when its similarity is ≥ the threshold. Pairs
//! where a face could not be found are scored −∞: a failed genuine pair is a
//! false non-match (it hurts FNMR); a failed impostor pair can never match.

use serde::Serialize;

use crate::manifest::OperatingPoint;

/// Fraction of impostor scores at or above `threshold`.
pub fn fmr(impostor: &[f32], threshold: f32) -> f64 {
    rate(impostor.iter().filter(|&&s| s >= threshold).count(), impostor.len())
}

/// Fraction of genuine scores below `threshold`.
pub fn fnmr(genuine: &[f32], threshold: f32) -> f64 {
    rate(genuine.iter().filter(|&&s| s < threshold).count(), genuine.len())
}

fn rate(count: usize, total: usize) -> f64 {
    if total == 0 { 0.0 } else { count as f64 / total as f64 }
}

/// The lowest threshold whose FMR on `impostor` is at most `target`: the
/// smallest float above the (⌊target·n⌋+1)-th highest impostor score.
pub fn threshold_for_fmr(impostor: &[f32], target: f64) -> f32 {
    let mut sorted: Vec<f32> = impostor.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let allowed = (target * sorted.len() as f64).floor() as usize;
    match sorted.get(allowed) {
        Some(&s) if s.is_finite() => next_up(s),
        Some(_) | None => sorted.last().copied().filter(|s| s.is_finite()).unwrap_or(-1.0),
    }
}

fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let bits = x.to_bits();
    f32::from_bits(if x > 0.0 { bits + 1 } else { bits - 1 })
}

/// Equal error rate and the threshold where FMR and FNMR cross.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EqualErrorRate {
    pub eer: f64,
    pub threshold: f32,
}

/// Sweeps every observed score as a threshold and returns the point where
/// |FMR − FNMR| is smallest (EER = their mean there).
pub fn equal_error_rate(genuine: &[f32], impostor: &[f32]) -> EqualErrorRate {
    let mut scored: Vec<(f32, bool)> = genuine
        .iter()
        .map(|&s| (s, true))
        .chain(impostor.iter().map(|&s| (s, false)))
        .filter(|(s, _)| s.is_finite())
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ng, ni) = (genuine.len().max(1) as f64, impostor.len().max(1) as f64);
    // Threshold at scored[i].0: genuine below it are misses, impostors at or
    // above it are false matches. Failed (−∞) genuine scores are always misses.
    let failed_genuine = genuine.iter().filter(|s| !s.is_finite()).count();
    let mut genuine_below = failed_genuine;
    let mut impostor_at_or_above = impostor.iter().filter(|s| s.is_finite()).count();
    let mut best = EqualErrorRate { eer: 1.0, threshold: 1.0 };
    let mut best_gap = f64::INFINITY;
    let mut i = 0;
    while i < scored.len() {
        let threshold = scored[i].0;
        let (fm, fnm) = (impostor_at_or_above as f64 / ni, genuine_below as f64 / ng);
        if (fm - fnm).abs() < best_gap {
            best_gap = (fm - fnm).abs();
            best = EqualErrorRate { eer: (fm + fnm) / 2.0, threshold };
        }
        while i < scored.len() && scored[i].0 == threshold {
            if scored[i].1 {
                genuine_below += 1;
            } else {
                impostor_at_or_above -= 1;
            }
            i += 1;
        }
    }
    best
}

/// The operating point for each target FMR: threshold, achieved FMR is at
/// most the target, and the FNMR paid for it.
pub fn operating_curve(genuine: &[f32], impostor: &[f32], targets: &[f64]) -> Vec<OperatingPoint> {
    targets
        .iter()
        .map(|&target| {
            let threshold = threshold_for_fmr(impostor, target);
            OperatingPoint { fmr: target, threshold, fnmr: fnmr(genuine, threshold) }
        })
        .collect()
}

/// Open-set identification outcomes at one threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct IdentificationCounts {
    /// Enrolled probes whose best match was their own identity (any score).
    pub rank1_hits: usize,
    /// Enrolled probes.
    pub enrolled: usize,
    /// Enrolled probes not returned as their own identity at or above the threshold.
    pub false_negatives: usize,
    /// Probes of people not in the gallery.
    pub unenrolled: usize,
    /// Unenrolled probes whose best match reached the threshold.
    pub false_positives: usize,
}

impl IdentificationCounts {
    pub fn rank1(&self) -> f64 {
        rate(self.rank1_hits, self.enrolled)
    }
    pub fn fnir(&self) -> f64 {
        rate(self.false_negatives, self.enrolled)
    }
    pub fn fpir(&self) -> f64 {
        rate(self.false_positives, self.unenrolled)
    }
}

/// One probe's two best gallery identities (`best: None` when no face was found).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOutcome {
    pub enrolled: bool,
    /// The best candidate's score and whether it is the probe's own identity.
    pub best: Option<(f32, bool)>,
    /// The second-best identity's score.
    pub runner_up: Option<f32>,
}

/// Counts rank-1 hits, FNIR and FPIR under the open-set `rule` (threshold
/// and margin over the runner-up).
pub fn identification_counts(outcomes: &[ProbeOutcome], rule: &crate::thresholds::OpenSetRule) -> IdentificationCounts {
    let mut counts = IdentificationCounts::default();
    for outcome in outcomes {
        let accepted = outcome.best.is_some_and(|(score, _)| {
            score >= rule.threshold && outcome.runner_up.is_none_or(|second| score - second >= rule.margin)
        });
        if outcome.enrolled {
            counts.enrolled += 1;
            let correct = matches!(outcome.best, Some((_, true)));
            counts.rank1_hits += usize::from(correct);
            if !(correct && accepted) {
                counts.false_negatives += 1;
            }
        } else {
            counts.unenrolled += 1;
            counts.false_positives += usize::from(accepted);
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_for_fmr_allows_exactly_the_budget() {
        let impostor: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let t = threshold_for_fmr(&impostor, 1e-2);
        // Ten of 1000 scores may match at FMR 1e-2, an eleventh may not.
        assert_eq!(fmr(&impostor, t), 0.01);
        assert!(fmr(&impostor, t - 0.001) > 0.01);
        let strict = threshold_for_fmr(&impostor, 1e-4);
        assert_eq!(fmr(&impostor, strict), 0.0);
    }

    #[test]
    fn perfectly_separated_scores_have_zero_eer() {
        let genuine = [0.9, 0.95, 0.99];
        let impostor = [0.1, 0.2, 0.3, 0.4];
        let e = equal_error_rate(&genuine, &impostor);
        assert_eq!(e.eer, 0.0);
        assert!(e.threshold > 0.4 && e.threshold <= 0.9);
    }

    #[test]
    fn overlapping_scores_give_the_crossing_point() {
        let genuine = [0.2, 0.6, 0.7, 0.8];
        let impostor = [0.1, 0.3, 0.5, 0.65];
        let e = equal_error_rate(&genuine, &impostor);
        assert!((e.eer - 0.25).abs() < 1e-9, "{e:?}");
    }

    #[test]
    fn failed_genuine_pairs_count_as_misses() {
        let genuine = [f32::NEG_INFINITY, 0.9];
        assert_eq!(fnmr(&genuine, 0.5), 0.5);
        let impostor = [f32::NEG_INFINITY, 0.1];
        assert_eq!(fmr(&impostor, 0.05), 0.5);
    }

    #[test]
    fn identification_counts_follow_the_definitions() {
        let o = |enrolled, best, runner_up| ProbeOutcome { enrolled, best, runner_up };
        let outcomes = [
            o(true, Some((0.9, true)), Some(0.5)),
            o(true, Some((0.4, true)), None),
            o(true, Some((0.95, false)), None),
            o(true, None, None),
            o(true, Some((0.9, true)), Some(0.89)),
            o(false, Some((0.7, false)), None),
            o(false, Some((0.3, false)), None),
            o(false, Some((0.8, false)), Some(0.79)),
        ];
        let no_margin = crate::thresholds::OpenSetRule { threshold: 0.5, margin: 0.0 };
        let c = identification_counts(&outcomes, &no_margin);
        assert_eq!((c.rank1_hits, c.enrolled, c.false_negatives), (3, 5, 3));
        assert_eq!((c.unenrolled, c.false_positives), (3, 2));
        assert_eq!(c.rank1(), 0.6);
        // A margin turns the close calls into misses and rejections.
        let margin = crate::thresholds::OpenSetRule { threshold: 0.5, margin: 0.05 };
        let c = identification_counts(&outcomes, &margin);
        assert_eq!((c.false_negatives, c.false_positives), (4, 1));
    }
}
