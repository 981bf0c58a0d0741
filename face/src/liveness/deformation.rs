//! Positive evidence of life: the face deforms between two frames in a way a
//! flat picture cannot.
//!
//! A photo, a print or a screen moved by hand is a plane: however it turns,
//! the motion of every point on it fits one homography, and once that motion
//! is undone the picture is unchanged but for sensor noise, which is the same
//! everywhere. A live face is not a plane (the nose stands out of the cheeks:
//! a turn of the head moves it against the plane through the eyes and the
//! mouth) and not rigid (eyelids, lips, brows move on their own).
//!
//! Between the current frame and one about `lag-ms` earlier, a square around
//! the face ([`SIZE`] samples, the face box [`BOX`] samples wide, the
//! earlier frame's geometry for both) is examined:
//!
//! * **Non-planar motion**: textured points on a grid inside the face are
//!   block-matched, one homography is fitted to them (RANSAC, then least
//!   squares); `residual` is the 80th percentile of the transfer errors (in
//!   samples) and `outliers` the fraction of points off the plane by more than
//!   one sample.
//! * **Local change**: the earlier face is warped onto the current one by that
//!   homography (or by the landmarks' similarity when no homography fits),
//!   brightness and contrast are matched over the face, and the remaining
//!   difference is measured in 4×4 cells with each cell's own mean removed (a
//!   rolling screen band or a shadow is smooth within a cell), divided by the
//!   cell's mean gradient (+ [`GRADIENT_FLOOR`]): an apparent misregistration
//!   in samples, so that resampling error on sharp edges counts no more than
//!   on smooth skin. `local` is the largest cell's over the median cell's
//!   (+ [`CHANGE_FLOOR`]): a blink or a moving mouth is a few cells, noise and
//!   resampling are every cell alike.
//!
//! The same square also tells whether the camera froze: the current frame
//! resampled in the previous frame's geometry, compared with that frame
//! ([`frozen_difference`]); a still picture replayed bit for bit gives 0.
//!
//! Limits: a photo bent around a cylinder and turned is not a plane either
//! (its motion departs from a homography like a turning head's does, only
//! smoother); a head that neither turns nor blinks within the window gives
//! no evidence and is not live (the kiosk asks the person to look at it).

use std::time::Duration;

use image::RgbImage;

use super::homography::Homography;
use super::motion::{HALF, SEARCH, match_point};
use super::sampling::{self, LumaSquare, Square};
use crate::align::Similarity;
use crate::detect::Detection;
use crate::geometry::Point;

/// Samples per side of the examined square.
pub(crate) const SIZE: usize = 64;
/// The face box side in samples.
pub(crate) const BOX: f32 = 48.0;
const GRID: usize = 4;
/// Face points and cells: within this many box sides of the centre (Chebyshev).
const REACH: f32 = 0.45;
/// Minimum smaller eigenvalue of the structure tensor for a face point.
const MIN_TEXTURE: f32 = 2.0;
/// Matches whose cost exceeds this (mean squared difference over patch variance + 1) are dropped.
const MAX_MATCH_COST: f32 = 0.5;
const MIN_POINTS: usize = 8;
const RANSAC_ITERATIONS: usize = 48;
/// Inlier threshold of the RANSAC fit, in samples.
const RANSAC_THRESHOLD: f32 = 0.6;
/// A point is off the plane beyond this transfer error (samples).
const OFF_PLANE: f32 = 1.0;
/// Added to the median cell's apparent misregistration (samples).
pub(crate) const CHANGE_FLOOR: f32 = 0.1;
/// Added to a cell's mean gradient (grey levels per sample): sensor noise.
pub(crate) const GRADIENT_FLOOR: f32 = 2.0;
const CELLS: usize = 4;

/// What one frame keeps for later comparisons.
#[derive(Debug, Clone)]
pub(crate) struct FaceSample {
    pub(crate) at: Duration,
    pub(crate) luma: LumaSquare,
    pub(crate) landmarks: [Point; 5],
}

/// One comparison of the current face with an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeformationMeasure {
    /// Time between the two frames, in milliseconds.
    pub lag_ms: f32,
    /// Face points matched.
    pub points: u32,
    /// Median displacement of the matched points, in samples (the face box
    /// is 48 samples wide).
    pub motion: f32,
    /// 80th percentile of the points' distance from one homography (samples);
    /// 0 when too few points matched.
    pub residual: f32,
    /// Fraction of matched points more than one sample off that homography.
    pub outliers: f32,
    /// Largest cell change over the median cell change (+ floor), changes
    /// measured as apparent misregistration (residual over gradient).
    pub local: f32,
    /// Median cell change (apparent misregistration, samples).
    pub change: f32,
}

fn square_for(detection: &Detection) -> Square {
    let side = detection.bbox.width.max(detection.bbox.height).max(1.0);
    Square { centre: detection.bbox.center(), step: side / BOX, size: SIZE }
}

/// The sample kept from this frame.
pub(crate) fn sample_frame(frame: &RgbImage, detection: &Detection, at: Duration) -> FaceSample {
    FaceSample { at, luma: sampling::sample(frame, square_for(detection), 0.0), landmarks: detection.landmarks.0 }
}

/// Mean absolute luma difference between `previous` and `frame` resampled in
/// `previous`'s geometry, over samples inside the image (grey levels).
pub(crate) fn frozen_difference(previous: &FaceSample, frame: &RgbImage) -> f32 {
    let current = sampling::sample(frame, previous.luma.square, 0.0);
    let (mut sum, mut count) = (0.0f64, 0u32);
    for ((a, b), &valid) in previous.luma.luma.iter().zip(&current.luma).zip(&previous.luma.valid) {
        if valid {
            sum += f64::from((a - b).abs());
            count += 1;
        }
    }
    if count == 0 { f32::INFINITY } else { (sum / f64::from(count)) as f32 }
}

/// Compares the current frame with `reference`, in the reference's geometry.
/// `None` when the landmarks give no motion model.
pub(crate) fn compare(
    reference: &FaceSample,
    frame: &RgbImage,
    detection: &Detection,
    at: Duration,
) -> Option<DeformationMeasure> {
    let square = reference.luma.square;
    if square.size != SIZE {
        return None;
    }
    let current = sampling::sample(frame, square, 0.0);
    let before = reference.landmarks.map(|p| square.to_sample(p));
    let after = detection.landmarks.0.map(|p| square.to_sample(p));
    let similarity = Similarity::estimate(&before, &after)?;
    let a = &reference.luma;
    let (mut from, mut to) = (Vec::new(), Vec::new());
    let mut displacement = Vec::new();
    for (x, y) in face_points(a) {
        let p = Point::new(x as f32, y as f32);
        let moved = similarity.apply(p);
        let (dx, dy) = (moved.x - p.x, moved.y - p.y);
        let mut best = match_point(a, &current, x, y, dx, dy);
        if dx.hypot(dy) > 1.5
            && let Some(still) = match_point(a, &current, x, y, 0.0, 0.0)
            && best.is_none_or(|b| still.2 < b.2)
        {
            best = Some(still);
        }
        let Some((mx, my, cost)) = best else { continue };
        if cost > MAX_MATCH_COST {
            continue;
        }
        from.push(p);
        to.push(Point::new(p.x + mx, p.y + my));
        displacement.push(mx.hypot(my));
    }
    let fit = Homography::ransac(&from, &to, RANSAC_THRESHOLD, RANSAC_ITERATIONS, MIN_POINTS).map(|(h, _)| h);
    let (residual, outliers) = match &fit {
        Some(h) => {
            let mut errors: Vec<f32> = from.iter().zip(&to).map(|(&f, &t)| h.error(f, t).min(10.0)).collect();
            let off = errors.iter().filter(|&&e| e > OFF_PLANE).count() as f32 / errors.len() as f32;
            let k = (errors.len() * 4 / 5).min(errors.len() - 1);
            errors.select_nth_unstable_by(k, f32::total_cmp);
            (errors[k], off)
        }
        None => (0.0, 0.0),
    };
    let warp = |p: Point| match &fit {
        Some(h) => h.apply(p),
        None => Some(similarity.apply(p)),
    };
    let (local, change) = local_change(a, &current, warp);
    Some(DeformationMeasure {
        lag_ms: at.saturating_sub(reference.at).as_secs_f32() * 1e3,
        points: from.len() as u32,
        motion: median(&mut displacement).unwrap_or(0.0),
        residual,
        outliers,
        local,
        change,
    })
}

/// Grid points inside the face whose patch has texture in two directions.
fn face_points(a: &LumaSquare) -> Vec<(usize, usize)> {
    let n = SIZE;
    let centre = n as f32 * 0.5 - 0.5;
    let reach = HALF + SEARCH as usize + 1;
    let mut points = Vec::new();
    for y in (reach..n - reach).step_by(GRID) {
        for x in (reach..n - reach).step_by(GRID) {
            let (u, v) = ((x as f32 - centre) / BOX, (y as f32 - centre) / BOX);
            if u.abs().max(v.abs()) > REACH || !a.valid[y * n + x] {
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

/// (largest cell / (median cell + floor), median cell) of the difference
/// between `b` and `a` warped by `warp`, after a brightness/contrast match.
fn local_change(a: &LumaSquare, b: &LumaSquare, warp: impl Fn(Point) -> Option<Point>) -> (f32, f32) {
    let n = SIZE;
    let centre = n as f32 * 0.5 - 0.5;
    let half = REACH * BOX;
    let (lo, hi) = ((centre - half).ceil().max(0.0) as usize, ((centre + half).floor() as usize).min(n - 1));
    let span = (hi + 1 - lo) as f32;
    let mut pairs: Vec<(usize, f32, f32)> = Vec::with_capacity((hi + 1 - lo) * (hi + 1 - lo));
    let mut gradients = [0.0f64; CELLS * CELLS];
    for y in lo..=hi {
        for x in lo..=hi {
            if !a.valid[y * n + x] {
                continue;
            }
            let Some(q) = warp(Point::new(x as f32, y as f32)) else { continue };
            let Some(value) = bilinear(b, q) else { continue };
            let cx = (((x - lo) as f32 / span) * CELLS as f32) as usize;
            let cy = (((y - lo) as f32 / span) * CELLS as f32) as usize;
            let cell = cy.min(CELLS - 1) * CELLS + cx.min(CELLS - 1);
            let (gx, gy) = if x > 0 && y > 0 && x + 1 < n && y + 1 < n {
                (
                    (a.luma[y * n + x + 1] - a.luma[y * n + x - 1]) * 0.5,
                    (a.luma[(y + 1) * n + x] - a.luma[(y - 1) * n + x]) * 0.5,
                )
            } else {
                (0.0, 0.0)
            };
            gradients[cell] += f64::from(gx.abs() + gy.abs());
            pairs.push((cell, a.luma[y * n + x], value));
        }
    }
    if pairs.len() < CELLS * CELLS * 4 {
        return (0.0, 0.0);
    }
    // Least-squares gain and offset: b ≈ gain · a + offset.
    let count = pairs.len() as f64;
    let (mut sa, mut sb, mut saa, mut sab) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for &(_, va, vb) in &pairs {
        let (va, vb) = (f64::from(va), f64::from(vb));
        sa += va;
        sb += vb;
        saa += va * va;
        sab += va * vb;
    }
    let variance = saa - sa * sa / count;
    let gain = if variance > 1e-6 { ((sab - sa * sb / count) / variance).clamp(0.5, 2.0) } else { 1.0 };
    let offset = (sb - gain * sa) / count;
    let mut sums = [0.0f64; CELLS * CELLS];
    let mut counts = [0u32; CELLS * CELLS];
    let residuals: Vec<(usize, f64)> = pairs
        .iter()
        .map(|&(cell, va, vb)| {
            let r = f64::from(vb) - gain * f64::from(va) - offset;
            sums[cell] += r;
            counts[cell] += 1;
            (cell, r)
        })
        .collect();
    let means: Vec<f64> = sums.iter().zip(&counts).map(|(&s, &c)| if c > 0 { s / f64::from(c) } else { 0.0 }).collect();
    let mut deviation = [0.0f64; CELLS * CELLS];
    for (cell, r) in residuals {
        deviation[cell] += (r - means[cell]).abs();
    }
    let mut cells: Vec<f32> = (0..CELLS * CELLS)
        .filter(|&i| counts[i] >= 4)
        .map(|i| {
            let count = f64::from(counts[i]);
            (deviation[i] / count / (gradients[i] / count + f64::from(GRADIENT_FLOOR))) as f32
        })
        .collect();
    if cells.len() < CELLS * CELLS / 2 {
        return (0.0, 0.0);
    }
    let largest = cells.iter().copied().fold(0.0f32, f32::max);
    let middle = median(&mut cells).unwrap_or(0.0);
    (largest / (middle + CHANGE_FLOOR), middle)
}

fn bilinear(b: &LumaSquare, p: Point) -> Option<f32> {
    let n = SIZE;
    if !(p.x >= 0.0 && p.y >= 0.0 && p.x <= (n - 1) as f32 && p.y <= (n - 1) as f32) {
        return None;
    }
    let (x0, y0) = (p.x.floor() as usize, p.y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(n - 1), (y0 + 1).min(n - 1));
    if !(b.valid[y0 * n + x0] && b.valid[y1 * n + x1]) {
        return None;
    }
    let (fx, fy) = (p.x - x0 as f32, p.y - y0 as f32);
    let at = |x: usize, y: usize| b.luma[y * n + x];
    let upper = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * fx;
    let lower = at(x0, y1) + (at(x1, y1) - at(x0, y1)) * fx;
    Some(upper + (lower - upper) * fy)
}

fn median(values: &mut [f32]) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    let mid = values.len() / 2;
    values.select_nth_unstable_by(mid, f32::total_cmp);
    Some(values[mid])
}

impl FaceSample {
    /// A sample with no pixels: replays of recorded cues, tests of the track logic.
    pub(crate) fn placeholder(at: Duration) -> Self {
        let square = Square { centre: Point::new(0.0, 0.0), step: 1.0, size: 0 };
        Self { at, luma: LumaSquare { square, luma: Vec::new(), valid: Vec::new() }, landmarks: [Point::default(); 5] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{BoundingBox, Landmarks};
    use image::Rgb;

    fn detection(x: f32, y: f32) -> Detection {
        let (w, h) = (100.0, 120.0);
        let l = |fx: f32, fy: f32| Point::new(x + fx * w, y + fy * h);
        Detection {
            bbox: BoundingBox { x, y, width: w, height: h },
            landmarks: Landmarks([l(0.3, 0.4), l(0.7, 0.4), l(0.5, 0.6), l(0.35, 0.8), l(0.65, 0.8)]),
            score: 0.9,
        }
    }

    /// A textured "face" drawn at offset (dx, dy), with an "eye" patch of
    /// brightness `eye` (a blink changes it).
    fn face(dx: f32, dy: f32, eye: u8) -> RgbImage {
        RgbImage::from_fn(320, 240, |x, y| {
            let (u, v) = (x as f32 - dx, y as f32 - dy);
            let t = 128.0 + 50.0 * ((u * 0.21).sin() * (v * 0.17).cos()) + 25.0 * ((u * 0.07 + v * 0.11).sin());
            let in_eye = (120.0..150.0).contains(&u) && (100.0..115.0).contains(&v);
            let value = if in_eye { f32::from(eye) } else { t };
            let value = value.clamp(0.0, 255.0) as u8;
            Rgb([value, value, value])
        })
    }

    #[test]
    fn a_rigidly_shifted_picture_is_planar_and_unchanged() {
        let d0 = detection(100.0, 60.0);
        let reference = sample_frame(&face(0.0, 0.0, 60), &d0, Duration::ZERO);
        let d1 = detection(103.0, 61.0);
        let m = compare(&reference, &face(3.0, 1.0, 60), &d1, Duration::from_millis(200)).unwrap();
        assert!(m.points >= 20, "{m:?}");
        assert!(m.residual < 0.5 && m.outliers < 0.1, "{m:?}");
        assert!(m.local < 3.0, "{m:?}");
    }

    #[test]
    fn a_blink_is_a_local_change() {
        let d = detection(100.0, 60.0);
        let reference = sample_frame(&face(0.0, 0.0, 60), &d, Duration::ZERO);
        let m = compare(&reference, &face(0.0, 0.0, 200), &d, Duration::from_millis(200)).unwrap();
        assert!(m.local > 5.0, "{m:?}");
    }

    #[test]
    fn identical_frames_have_no_difference() {
        let d = detection(100.0, 60.0);
        let image = face(0.0, 0.0, 60);
        let reference = sample_frame(&image, &d, Duration::ZERO);
        assert_eq!(frozen_difference(&reference, &image), 0.0);
        assert!(frozen_difference(&reference, &face(0.0, 0.0, 200)) > 0.5);
    }
}
