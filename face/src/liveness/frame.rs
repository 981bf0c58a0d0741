//! Paper-edge and bezel cue: straight edges that enclose the face.
//!
//! A printed photo or a phone held up to the camera usually shows its edge
//! (a paper border, a screen bezel) around the face: long straight edges on
//! three or four sides. A live scene has a door frame or a wall corner on one
//! or two sides at most. The face box (as a square on its longer side) is
//! enlarged [`EXPAND`] times and resampled to a context image in which the box
//! is [`BOX`] pixels wide; edges are thinned along the gradient so that each
//! edge pixel votes once into a Hough space of (normal direction pointing away
//! from the face centre, distance from the face centre). A line's support is
//! the number of edge pixels within one angle bin and one pixel of it, in box
//! lengths. The score is the support of the third-strongest line among lines
//! whose normals are at least 45° apart.
//!
//! Limits: a photo or screen that fills the camera's view shows no edge; a
//! live face in front of a framed picture or a window may show one.

use image::RgbImage;

use super::sampling::{self, Square};
use crate::geometry::BoundingBox;

/// The context covers the face box enlarged this many times.
pub(crate) const EXPAND: f32 = 4.5;
/// The face box side in context pixels.
pub(crate) const BOX: f32 = 48.0;
const SIZE: usize = (BOX * EXPAND) as usize;
const ANGLES: usize = 64;
/// Minimum gradient magnitude of an edge pixel (grey levels per pixel).
const MIN_GRADIENT: f32 = 6.0;
/// Lines closer to the face centre than this (in box sides) are the face's own.
const MIN_DISTANCE: f32 = 0.4;
/// Context pixels this close to the image border do not vote (the image
/// border itself is not an edge in the scene).
const BORDER_MARGIN: f32 = 2.0;

/// What the frame cue measured on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct FrameMeasure {
    /// Supports (in face-box lengths) of the four strongest distinct lines,
    /// strongest first.
    pub lines: [f32; 4],
    /// The support of the third line: the score (higher = more enclosed).
    pub score: f32,
}

/// Measures straight edges around the face in `bbox`.
pub(crate) fn measure(frame: &RgbImage, bbox: &BoundingBox) -> FrameMeasure {
    let side = bbox.width.max(bbox.height).max(1.0) * EXPAND;
    let square = Square { centre: bbox.center(), step: side / SIZE as f32, size: SIZE };
    let context = sampling::sample(frame, square, BORDER_MARGIN);
    let lines = strongest_lines(&context.luma, &context.valid);
    FrameMeasure { lines, score: lines[2] }
}

/// Supports of the four strongest lines with normals ≥ 45° apart, strongest first.
fn strongest_lines(context: &[f32], valid: &[bool]) -> [f32; 4] {
    let n = SIZE;
    let at = |x: usize, y: usize| context[y * n + x];
    let mut gx = vec![0.0f32; n * n];
    let mut gy = vec![0.0f32; n * n];
    let mut magnitude = vec![0.0f32; n * n];
    for y in 1..n - 1 {
        for x in 1..n - 1 {
            let dx = (at(x + 1, y - 1) + 2.0 * at(x + 1, y) + at(x + 1, y + 1))
                - (at(x - 1, y - 1) + 2.0 * at(x - 1, y) + at(x - 1, y + 1));
            let dy = (at(x - 1, y + 1) + 2.0 * at(x, y + 1) + at(x + 1, y + 1))
                - (at(x - 1, y - 1) + 2.0 * at(x, y - 1) + at(x + 1, y - 1));
            let i = y * n + x;
            gx[i] = dx / 8.0;
            gy[i] = dy / 8.0;
            magnitude[i] = gx[i].hypot(gy[i]);
        }
    }
    let distances = (n as f32 * 0.75) as usize + 2;
    let mut votes = vec![0u32; ANGLES * distances];
    let centre = n as f32 * 0.5 - 0.5;
    let min_distance = MIN_DISTANCE * BOX;
    let two_pi = 2.0 * std::f32::consts::PI;
    for y in 2..n - 2 {
        for x in 2..n - 2 {
            let i = y * n + x;
            let m = magnitude[i];
            if m <= MIN_GRADIENT || !valid[i] {
                continue;
            }
            // Thin the edge: keep local maxima along the gradient (4 directions).
            let direction = gy[i].atan2(gx[i]);
            let sector = ((direction / std::f32::consts::FRAC_PI_4).round() as i32).rem_euclid(4);
            let (ox, oy): (isize, isize) = match sector {
                0 => (1, 0),
                1 => (1, 1),
                2 => (0, 1),
                _ => (-1, 1),
            };
            let ahead = magnitude[(y as isize + oy) as usize * n + (x as isize + ox) as usize];
            let behind = magnitude[(y as isize - oy) as usize * n + (x as isize - ox) as usize];
            if m < ahead || m <= behind {
                continue;
            }
            let (px, py) = (x as f32 - centre, y as f32 - centre);
            let (sin, cos) = direction.sin_cos();
            let mut rho = px * cos + py * sin;
            let mut theta = direction;
            if rho < 0.0 {
                rho = -rho;
                theta += std::f32::consts::PI;
            }
            if rho < min_distance {
                continue;
            }
            let a = ((theta.rem_euclid(two_pi) / two_pi * ANGLES as f32) as usize).min(ANGLES - 1);
            let r = (rho as usize).min(distances - 1);
            votes[a * distances + r] += 1;
        }
    }
    // Best window (±1 angle bin, ±1 px) per angle.
    let mut best = [0u32; ANGLES];
    for (a, slot) in best.iter_mut().enumerate() {
        for r in 0..distances {
            let mut sum = 0;
            for da in [ANGLES - 1, 0, 1] {
                let row = (a + da) % ANGLES;
                for rr in r.saturating_sub(1)..=(r + 1).min(distances - 1) {
                    sum += votes[row * distances + rr];
                }
            }
            *slot = (*slot).max(sum);
        }
    }
    let mut order: Vec<usize> = (0..ANGLES).collect();
    order.sort_by(|&a, &b| best[b].cmp(&best[a]));
    let mut chosen: Vec<usize> = Vec::with_capacity(4);
    for a in order {
        let apart = |b: usize| {
            let d = a.abs_diff(b);
            d.min(ANGLES - d) >= ANGLES / 8
        };
        if chosen.iter().all(|&b| apart(b)) {
            chosen.push(a);
            if chosen.len() == 4 {
                break;
            }
        }
    }
    let mut lines = [0.0f32; 4];
    for (slot, &a) in lines.iter_mut().zip(&chosen) {
        *slot = best[a] as f32 / BOX;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn scene(border: bool) -> (RgbImage, BoundingBox) {
        // A textured backdrop, a 60-px "face" blob, and optionally a white
        // paper edge 30 px outside the face on all four sides.
        let mut image = RgbImage::from_fn(400, 400, |x, y| {
            let v = 90 + ((x * 7 + y * 13) % 23) as u8;
            Rgb([v, v, v])
        });
        if border {
            for (x, y, p) in image.enumerate_pixels_mut() {
                let inside = (110..290).contains(&x) && (110..290).contains(&y);
                let paper = (100..300).contains(&x) && (100..300).contains(&y);
                if paper && !inside {
                    *p = Rgb([240, 240, 240]);
                }
            }
        }
        for (x, y, p) in image.enumerate_pixels_mut() {
            let (dx, dy) = (x as f32 - 200.0, y as f32 - 200.0);
            if dx * dx / 900.0 + dy * dy / 1600.0 < 1.0 {
                *p = Rgb([200, 150, 130]);
            }
        }
        (image, BoundingBox { x: 170.0, y: 160.0, width: 60.0, height: 80.0 })
    }

    #[test]
    fn a_paper_border_around_the_face_scores_as_a_frame() {
        let (image, bbox) = scene(true);
        let m = measure(&image, &bbox);
        assert!(m.score > 1.0 && m.lines[3] > 1.0, "{m:?}");
    }

    #[test]
    fn a_face_without_a_border_does_not() {
        let (image, bbox) = scene(false);
        let m = measure(&image, &bbox);
        assert!(m.score < 0.2, "{m:?}");
    }

    #[test]
    fn the_image_border_is_not_an_edge() {
        // A face box so large that the context extends past every image side.
        let (image, _) = scene(false);
        let m = measure(&image, &BoundingBox { x: 50.0, y: 50.0, width: 300.0, height: 300.0 });
        assert!(m.score < 0.2, "{m:?}");
    }
}
