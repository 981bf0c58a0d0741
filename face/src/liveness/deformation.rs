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
//! * **A bent sheet**: a photo bent around a vertical cylinder and turned is
//!   not a plane either, but what it adds to the homography depends on x
//!   alone ([`ColumnBend`]: per grid column, the median residual).
//!   `bent_residual` and `bent_local` are `residual` and `local` with that
//!   bend undone too, and `bent_feature_local` is `bent_local` with the
//!   largest cell taken among those holding the eyes and mouth corners. The
//!   verdict uses these (see `track::shows_life`): a cylinder's motion leaves
//!   nothing once the bend is undone — but its silhouette, shading and the
//!   edges of the model still change cells away from the eyes while it
//!   turns, so the whole-face `bent_local` counts only while the face holds
//!   still (`still-motion`), and the eye and mouth cells count always.
//!
//! The same square also tells whether the camera froze: the current frame
//! resampled in the previous frame's geometry, compared with that frame
//! ([`frozen_difference`]); a still picture replayed bit for bit gives 0.
//!
//! Limits: a sheet bent around a horizontal axis, or creased, is not
//! modelled; a head that neither blinks nor moves its mouth while holding
//! still within the window gives no evidence and is not live (the kiosk asks
//! the person to look at it).

use std::time::Duration;

use image::RgbImage;

use super::bend::ColumnBend;
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
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// `residual` once a bend is undone too: the 80th percentile of the
    /// points' distance from the homography plus a [`ColumnBend`] (a sheet
    /// bent around a vertical axis), in samples.
    #[serde(default)]
    pub bent_residual: f32,
    /// `local` after undoing the homography and the [`ColumnBend`]: a photo
    /// bent around a cylinder and turned leaves nothing; a blink does.
    #[serde(default)]
    pub bent_local: f32,
    /// `bent_local` with the largest cell taken among the cells holding the
    /// eyes and the mouth corners only (the median over all cells).
    #[serde(default)]
    pub bent_feature_local: f32,
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
    let plane = |p: Point| match &fit {
        Some(h) => h.apply(p),
        None => Some(similarity.apply(p)),
    };
    let (local, change) = cell_changes(a, &current, plane).map_or((0.0, 0.0), |c| (c.local(u16::MAX), c.median));
    let (mut bent_from, mut bent_residuals) = (Vec::with_capacity(from.len()), Vec::with_capacity(from.len()));
    for (&f, &t) in from.iter().zip(&to) {
        if let Some(q) = plane(f) {
            bent_from.push(f);
            bent_residuals.push(Point::new(t.x - q.x, t.y - q.y));
        }
    }
    let bend = ColumnBend::fit(&bent_from, &bent_residuals);
    let bent_residual = match &bend {
        Some(bend) => {
            let mut errors: Vec<f32> = bent_from
                .iter()
                .zip(&bent_residuals)
                .map(|(f, r)| {
                    let o = bend.offset(f.x);
                    (r.x - o.x).hypot(r.y - o.y).min(10.0)
                })
                .collect();
            let k = (errors.len() * 4 / 5).min(errors.len().saturating_sub(1));
            errors.select_nth_unstable_by(k, f32::total_cmp);
            errors[k]
        }
        None => residual,
    };
    let bent = |p: Point| {
        let q = plane(p)?;
        Some(match &bend {
            Some(bend) => {
                let o = bend.offset(p.x);
                Point::new(q.x + o.x, q.y + o.y)
            }
            None => q,
        })
    };
    let features = feature_cells(&before);
    let (bent_local, bent_feature_local) =
        cell_changes(a, &current, bent).map_or((0.0, 0.0), |c| (c.local(u16::MAX), c.local(features)));
    Some(DeformationMeasure {
        lag_ms: at.saturating_sub(reference.at).as_secs_f32() * 1e3,
        points: from.len() as u32,
        motion: median(&mut displacement).unwrap_or(0.0),
        residual,
        outliers,
        local,
        change,
        bent_residual,
        bent_local,
        bent_feature_local,
    })
}

/// The face's cells span (first, last) sample in each direction.
fn cell_span() -> (usize, usize) {
    let n = SIZE;
    let centre = n as f32 * 0.5 - 0.5;
    let half = REACH * BOX;
    ((centre - half).ceil().max(0.0) as usize, ((centre + half).floor() as usize).min(n - 1))
}

/// The cell holding sample (x, y), if it lies inside the cells.
fn cell_of(x: f32, y: f32) -> Option<usize> {
    let (lo, hi) = cell_span();
    let span = (hi + 1 - lo) as f32;
    let (u, v) = ((x - lo as f32) / span, (y - lo as f32) / span);
    if !((0.0..1.0).contains(&u) && (0.0..1.0).contains(&v)) {
        return None;
    }
    let (cx, cy) = ((u * CELLS as f32) as usize, (v * CELLS as f32) as usize);
    Some(cy.min(CELLS - 1) * CELLS + cx.min(CELLS - 1))
}

/// Bit mask of the cells holding the eyes and the mouth corners (landmarks
/// 0, 1, 3, 4, in sample coordinates); all cells when none lies inside.
fn feature_cells(landmarks: &[Point; 5]) -> u16 {
    let mask = [0usize, 1, 3, 4]
        .iter()
        .filter_map(|&i| cell_of(landmarks[i].x, landmarks[i].y))
        .fold(0u16, |mask, cell| mask | (1 << cell));
    if mask == 0 { u16::MAX } else { mask }
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

/// Each cell's change between `b` and `a` warped by `warp`, after a
/// brightness/contrast match: the mean absolute residual, the cell's own mean
/// removed, over the cell's mean gradient (+ floor) — an apparent
/// misregistration in samples. `None` when too little of the face is
/// comparable.
struct CellChanges {
    cells: [Option<f32>; CELLS * CELLS],
    median: f32,
}

impl CellChanges {
    /// The largest change among the cells of `mask` (bit i: cell i) over the
    /// median cell's (+ floor).
    fn local(&self, mask: u16) -> f32 {
        let largest = self
            .cells
            .iter()
            .enumerate()
            .filter(|&(i, _)| mask & (1 << i) != 0)
            .filter_map(|(_, c)| *c)
            .fold(0.0f32, f32::max);
        largest / (self.median + CHANGE_FLOOR)
    }
}

fn cell_changes(a: &LumaSquare, b: &LumaSquare, warp: impl Fn(Point) -> Option<Point>) -> Option<CellChanges> {
    let n = SIZE;
    let (lo, hi) = cell_span();
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
        return None;
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
    let mut cells = [None; CELLS * CELLS];
    for (i, cell) in cells.iter_mut().enumerate() {
        if counts[i] >= 4 {
            let count = f64::from(counts[i]);
            *cell = Some((deviation[i] / count / (gradients[i] / count + f64::from(GRADIENT_FLOOR))) as f32);
        }
    }
    let mut present: Vec<f32> = cells.iter().flatten().copied().collect();
    if present.len() < CELLS * CELLS / 2 {
        return None;
    }
    let median = median(&mut present).unwrap_or(0.0);
    Some(CellChanges { cells, median })
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

    /// The textured "face" printed on a sheet bent around a vertical
    /// cylinder (axis through the box centre, radius 0.6 box widths) turned
    /// by `yaw` radians, shading fixed to the camera, over a static scene.
    fn cylinder(yaw: f32) -> RgbImage {
        let (axis, radius) = (150.0f32, 60.0f32);
        RgbImage::from_fn(320, 240, |x, y| {
            let rel = (x as f32 - axis) / radius;
            let value = if rel.abs() >= 0.999 {
                100.0 + 30.0 * ((x as f32 * 0.13).sin() + (y as f32 * 0.19).cos())
            } else {
                let normal = rel.asin();
                let u = axis + radius * (normal - yaw);
                let v = y as f32;
                let t = 128.0 + 50.0 * ((u * 0.21).sin() * (v * 0.17).cos()) + 25.0 * ((u * 0.07 + v * 0.11).sin());
                t * (0.8 + 0.2 * normal.cos())
            };
            let value = value.clamp(0.0, 255.0) as u8;
            Rgb([value, value, value])
        })
    }

    #[test]
    fn a_turned_cylinder_is_not_planar_but_leaves_nothing_once_the_bend_is_undone() {
        let d = detection(100.0, 60.0);
        let reference = sample_frame(&cylinder(0.0), &d, Duration::ZERO);
        let m = compare(&reference, &cylinder(0.14), &d, Duration::from_millis(200)).unwrap();
        assert!(m.points >= 20, "{m:?}");
        // The homography alone leaves the cylinder's bend: the old cue took it for life.
        assert!(m.local >= 2.0 * m.bent_local, "{m:?}");
        assert!(m.bent_residual < 0.6 && m.bent_residual < 0.5 * m.residual, "{m:?}");
        let threshold = super::super::LivenessConfig::default().local_live;
        assert!(m.bent_local < threshold, "{m:?}");
        assert!(m.bent_feature_local <= m.bent_local, "{m:?}");
    }

    #[test]
    fn a_blink_is_a_local_change_once_the_bend_is_undone_too() {
        let d = detection(100.0, 60.0);
        let reference = sample_frame(&face(0.0, 0.0, 60), &d, Duration::ZERO);
        let m = compare(&reference, &face(2.0, 1.0, 200), &detection(102.0, 61.0), Duration::from_millis(200)).unwrap();
        let threshold = super::super::LivenessConfig::default().local_live;
        assert!(m.bent_local > 2.0 * threshold, "{m:?}");
        assert!(m.bent_feature_local > 2.0 * threshold, "{m:?}");
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
