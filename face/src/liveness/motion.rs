//! Temporal cue: does the face move against a static scene, or does the face
//! move together with its surroundings as one plane?
//!
//! The kiosk camera is fixed. A live head moves against the scene behind it; a
//! photo or a screen held up to the camera moves the face *and* what surrounds
//! it in the picture (the rest of the photo, its border) together, as one plane
//! — its motion fits a homography. Between the current frame and a frame about
//! [`super::LivenessConfig::lag_ms`] earlier, a square around the face (the
//! face box enlarged `SIZE / BOX` = 3.2 times, resampled so the box is [`BOX`] samples
//! wide, with the *same* geometry in both frames) is examined: textured points
//! on a grid — face points near the centre, surround points beside and above
//! the head (not below the chin: neck and torso move with it) — are block-matched (zero-mean SSD over 9×9 patches, ±3 samples
//! around two hypotheses: static, or moving like the five landmarks), then two
//! models are compared on truncated squared residuals:
//!
//! * plane — one homography for all points (RANSAC, then least squares);
//! * live — the face points follow a homography of their own, the surround
//!   points stay where they were.
//!
//! `evidence = (cost_plane − cost_live) / (points · c²)` lies in [−1, 1]: above
//! zero the face moved against a static scene; below zero face and
//! surroundings moved as one. When the landmarks say the face moved less than
//! [`MIN_FACE_MOTION`] samples the pair is not informative (a person standing
//! still says nothing either way).
//!
//! Limits: a screen replaying a video of a live person shows that person moving
//! against their own static background (the temporal cue reads it as live;
//! the texture cues must catch it); hair and shoulders move with the head, so
//! a live pair can read as mildly planar; a still photo on a stand never moves.

use std::time::Duration;

use image::RgbImage;

use super::homography::Homography;
use super::sampling::{self, LumaSquare, Square};
use crate::align::Similarity;
use crate::detect::Detection;
use crate::geometry::Point;

/// Samples per side of the examined square.
pub(crate) const SIZE: usize = 128;
/// The face box side in samples.
pub(crate) const BOX: f32 = 40.0;
pub(crate) const HALF: usize = 4;
pub(crate) const SEARCH: i32 = 3;
const GRID: usize = 8;
/// Minimum smaller eigenvalue of the structure tensor (mean over the patch,
/// grey levels² per sample²) for a point to be matched.
const MIN_TEXTURE: f32 = 4.0;
/// Matches whose mean squared difference exceeds this fraction of the patch
/// variance (+1) are dropped.
const MAX_MATCH_COST: f32 = 0.5;
/// Residual truncation c, in samples.
const TRUNCATION: f32 = 1.0;
/// Face points: within this many box sides of the centre (Chebyshev).
const FACE_INNER: f32 = 0.45;
/// Surround points: beyond this many box sides of the centre (Chebyshev)…
const SURROUND_OUTER: f32 = 0.85;
/// …and not below the chin (neck and torso move with the head): at most
/// this many box sides below the centre.
const SURROUND_BELOW: f32 = 0.6;
/// Median landmark-predicted displacement of the face points (samples) below
/// which a pair is not informative.
pub(crate) const MIN_FACE_MOTION: f32 = 1.5;
const MIN_MATCHES: usize = 8;
const RANSAC_ITERATIONS: usize = 64;

/// What one frame keeps for later comparisons.
#[derive(Debug, Clone)]
pub(crate) struct MotionSample {
    pub(crate) at: Duration,
    luma: LumaSquare,
    landmarks: [Point; 5],
}

/// One comparison of the current frame with an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MotionMeasure {
    /// Time between the two frames, in milliseconds.
    pub lag_ms: f32,
    /// Matched face and surround points.
    pub face_points: u32,
    pub surround_points: u32,
    /// Median landmark-predicted displacement of the face points, in samples
    /// (the face box is 40 samples wide).
    pub face_motion: f32,
    /// Model evidence in [−1, 1]: > 0 the face moved against a static scene,
    /// < 0 face and surroundings moved as one plane.
    pub evidence: f32,
}

impl MotionMeasure {
    /// Whether the face moved enough for the comparison to say anything.
    pub fn informative(&self) -> bool {
        self.face_motion >= MIN_FACE_MOTION
    }
}

fn square_for(detection: &Detection) -> Square {
    let side = detection.bbox.width.max(detection.bbox.height).max(1.0);
    Square { centre: detection.bbox.center(), step: side / BOX, size: SIZE }
}

/// The sample kept from this frame.
pub(crate) fn sample_frame(frame: &RgbImage, detection: &Detection, at: Duration) -> MotionSample {
    let square = square_for(detection);
    MotionSample { at, luma: sampling::sample(frame, square, 0.0), landmarks: detection.landmarks.0 }
}

/// Compares the current frame with `reference`, in the reference's geometry.
/// `None` when too few points could be matched.
pub(crate) fn compare(
    reference: &MotionSample,
    frame: &RgbImage,
    detection: &Detection,
    at: Duration,
) -> Option<MotionMeasure> {
    let square = reference.luma.square;
    let current = sampling::sample(frame, square, 0.0);
    let before = reference.landmarks.map(|p| square.to_sample(p));
    let after = detection.landmarks.0.map(|p| square.to_sample(p));
    let motion = Similarity::estimate(&before, &after)?;
    let a = &reference.luma;
    let mut face: (Vec<Point>, Vec<Point>) = (Vec::new(), Vec::new());
    let mut surround: (Vec<Point>, Vec<Point>) = (Vec::new(), Vec::new());
    let mut predicted = Vec::new();
    let centre = SIZE as f32 * 0.5 - 0.5;
    for (x, y) in textured_points(a) {
        let (u, v) = ((x as f32 - centre) / BOX, (y as f32 - centre) / BOX);
        let reach = u.abs().max(v.abs());
        let region = if reach < FACE_INNER {
            Some(true)
        } else if reach > SURROUND_OUTER && v <= SURROUND_BELOW {
            Some(false)
        } else {
            None
        };
        let Some(is_face) = region else { continue };
        let from = Point::new(x as f32, y as f32);
        let moved = motion.apply(from);
        let hypotheses = [(0.0, 0.0), (moved.x - from.x, moved.y - from.y)];
        let best = hypotheses
            .iter()
            .filter_map(|&(dx, dy)| match_point(a, &current, x, y, dx, dy))
            .min_by(|p, q| p.2.total_cmp(&q.2));
        let Some((dx, dy, cost)) = best else { continue };
        if cost > MAX_MATCH_COST {
            continue;
        }
        let to = Point::new(from.x + dx, from.y + dy);
        if is_face {
            predicted.push(from.distance(moved));
            face.0.push(from);
            face.1.push(to);
        } else {
            surround.0.push(from);
            surround.1.push(to);
        }
    }
    let total = face.0.len() + surround.0.len();
    if total < MIN_MATCHES {
        return None;
    }
    let face_motion = median(&mut predicted).unwrap_or(0.0);
    let c2 = TRUNCATION * TRUNCATION;
    let truncated = |h: Option<&Homography>, from: &[Point], to: &[Point]| -> f32 {
        match h {
            Some(h) => from.iter().zip(to).map(|(&f, &t)| h.error(f, t).powi(2).min(c2)).sum(),
            None => from.len() as f32 * c2,
        }
    };
    let all_from: Vec<Point> = face.0.iter().chain(&surround.0).copied().collect();
    let all_to: Vec<Point> = face.1.iter().chain(&surround.1).copied().collect();
    let plane = Homography::ransac(&all_from, &all_to, TRUNCATION, RANSAC_ITERATIONS, MIN_MATCHES).map(|(h, _)| h);
    let cost_plane = truncated(plane.as_ref(), &all_from, &all_to);
    let face_fit = Homography::ransac(&face.0, &face.1, TRUNCATION, RANSAC_ITERATIONS, MIN_MATCHES).map(|(h, _)| h);
    let cost_face = truncated(face_fit.as_ref(), &face.0, &face.1);
    let cost_static: f32 = surround.0.iter().zip(&surround.1).map(|(f, t)| f.distance(*t).powi(2).min(c2)).sum();
    let evidence = (cost_plane - cost_face - cost_static) / (total as f32 * c2);
    Some(MotionMeasure {
        lag_ms: at.saturating_sub(reference.at).as_secs_f32() * 1e3,
        face_points: face.0.len() as u32,
        surround_points: surround.0.len() as u32,
        face_motion,
        evidence: evidence.clamp(-1.0, 1.0),
    })
}

/// Grid points whose patch has texture in two directions and whose search
/// area lies inside the image.
fn textured_points(a: &LumaSquare) -> Vec<(usize, usize)> {
    let n = SIZE;
    let reach = HALF + SEARCH as usize + 1;
    let mut points = Vec::new();
    for y in (reach..n - reach).step_by(GRID) {
        for x in (reach..n - reach).step_by(GRID) {
            let corners =
                [(x - reach, y - reach), (x + reach, y - reach), (x - reach, y + reach), (x + reach, y + reach)];
            if !corners.iter().all(|&(cx, cy)| a.valid[cy * n + cx]) {
                continue;
            }
            let (mut xx, mut yy, mut xy) = (0.0f32, 0.0f32, 0.0f32);
            for py in y - HALF..=y + HALF {
                for px in x - HALF..=x + HALF {
                    let gx = (a.luma[py * n + px + 1] - a.luma[py * n + px - 1]) * 0.5;
                    let gy = (a.luma[(py + 1) * n + px] - a.luma[(py - 1) * n + px]) * 0.5;
                    xx += gx * gx;
                    yy += gy * gy;
                    xy += gx * gy;
                }
            }
            let count = ((2 * HALF + 1) * (2 * HALF + 1)) as f32;
            let (xx, yy, xy) = (xx / count, yy / count, xy / count);
            let trace = xx + yy;
            let smaller = trace * 0.5 - (trace * trace * 0.25 - (xx * yy - xy * xy)).max(0.0).sqrt();
            if smaller >= MIN_TEXTURE {
                points.push((x, y));
            }
        }
    }
    points
}

/// Block-matches the patch at (x, y) of `a` in `b` (squares of one size) within ±SEARCH of the
/// displacement (dx, dy): the sub-pixel displacement and the match cost (mean
/// squared zero-mean difference over the patch variance + 1).
pub(crate) fn match_point(
    a: &LumaSquare,
    b: &LumaSquare,
    x: usize,
    y: usize,
    dx: f32,
    dy: f32,
) -> Option<(f32, f32, f32)> {
    let n = a.square.size as i32;
    if b.square.size != a.square.size || x < HALF || y < HALF || x + HALF >= a.square.size || y + HALF >= a.square.size
    {
        return None;
    }
    let half = HALF as i32;
    let side = 2 * half + 1;
    let count = (side * side) as f32;
    let mut patch = [0.0f32; 81];
    let mut mean = 0.0;
    for (k, value) in patch.iter_mut().enumerate() {
        let (px, py) = (x as i32 - half + k as i32 % side, y as i32 - half + k as i32 / side);
        *value = a.luma[(py * n + px) as usize];
        mean += *value;
    }
    mean /= count;
    let mut variance = 0.0;
    for value in &mut patch {
        *value -= mean;
        variance += *value * *value;
    }
    variance /= count;
    let (cx, cy) = (x as i32 + dx.round() as i32, y as i32 + dy.round() as i32);
    let width = (2 * SEARCH + 1) as usize;
    let mut costs = vec![f32::INFINITY; width * width];
    for oy in -SEARCH..=SEARCH {
        for ox in -SEARCH..=SEARCH {
            let (qx, qy) = (cx + ox, cy + oy);
            if qx - half < 0 || qy - half < 0 || qx + half >= n || qy + half >= n {
                continue;
            }
            let (mut sum, mut sum_sq, mut cross) = (0.0f32, 0.0f32, 0.0f32);
            for (k, &p) in patch.iter().enumerate() {
                let q = b.luma[((qy - half + k as i32 / side) * n + qx - half + k as i32 % side) as usize];
                sum += q;
                sum_sq += q * q;
                cross += p * q;
            }
            // Σ(p − (q − q̄))² with Σp = 0.
            let ssd = variance * count + sum_sq - sum * sum / count - 2.0 * cross;
            costs[((oy + SEARCH) * (2 * SEARCH + 1) + ox + SEARCH) as usize] = ssd.max(0.0) / count;
        }
    }
    let (best, &c0) = costs.iter().enumerate().min_by(|p, q| p.1.total_cmp(q.1))?;
    if !c0.is_finite() {
        return None;
    }
    let (bx, by) = (best % width, best / width);
    let parabola = |minus: f32, plus: f32| {
        let d = minus - 2.0 * c0 + plus;
        if d > 0.0 && minus.is_finite() && plus.is_finite() { (0.5 * (minus - plus) / d).clamp(-0.5, 0.5) } else { 0.0 }
    };
    let sx = if bx > 0 && bx + 1 < width { parabola(costs[best - 1], costs[best + 1]) } else { 0.0 };
    let sy = if by > 0 && by + 1 < width { parabola(costs[best - width], costs[best + width]) } else { 0.0 };
    Some((
        (cx - x as i32) as f32 + bx as f32 - SEARCH as f32 + sx,
        (cy - y as i32) as f32 + by as f32 - SEARCH as f32 + sy,
        c0 / (variance + 1.0),
    ))
}

fn median(values: &mut [f32]) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    let mid = values.len() / 2;
    values.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    Some(values[mid])
}

impl MotionSample {
    /// A sample with no pixels: replays of recorded cues, tests of the track logic.
    pub(crate) fn placeholder(at: Duration) -> Self {
        let square = Square { centre: Point::new(0.0, 0.0), step: 1.0, size: 0 };
        Self { at, luma: LumaSquare { square, luma: Vec::new(), valid: Vec::new() }, landmarks: [Point::default(); 5] }
    }
}
