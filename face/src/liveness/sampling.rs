//! Resampling a square of the frame, around the face, into a small luma image
//! with a fixed geometry (shared by the frame and motion cues).

use image::RgbImage;

use crate::geometry::Point;

/// Where a sampled square comes from: `size`×`size` samples, sample (u, v)
/// centred on image point `centre + ((u, v) + 0.5 − size/2) · step − 0.5`
/// (pixel-centre convention: image pixel x covers [x − 0.5, x + 0.5]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Square {
    pub(crate) centre: Point,
    /// Image pixels per sample.
    pub(crate) step: f32,
    pub(crate) size: usize,
}

impl Square {
    /// Image → sample coordinates.
    pub(crate) fn to_sample(self, p: Point) -> Point {
        let half = self.size as f32 * 0.5;
        Point::new(
            (p.x + 0.5 - self.centre.x) / self.step + half - 0.5,
            (p.y + 0.5 - self.centre.y) / self.step + half - 0.5,
        )
    }

    /// Sample → image coordinates.
    pub(crate) fn to_image(self, u: f32, v: f32) -> Point {
        let half = self.size as f32 * 0.5;
        Point::new(
            self.centre.x + (u + 0.5 - half) * self.step - 0.5,
            self.centre.y + (v + 0.5 - half) * self.step - 0.5,
        )
    }
}

/// Luma samples of a [`Square`] and whether each lies inside the image with
/// `margin` samples to spare.
#[derive(Debug, Clone)]
pub(crate) struct LumaSquare {
    pub(crate) square: Square,
    pub(crate) luma: Vec<f32>,
    pub(crate) valid: Vec<bool>,
}

/// BT.601 luma of an 8-bit RGB pixel.
pub(crate) fn luma(p: [u8; 3]) -> f32 {
    0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
}

/// Samples `square` from `frame` bilinearly; when a sample spans two or more
/// image pixels the covered region is box-averaged first, so the result is
/// not aliased. Samples outside the image repeat the nearest edge value and
/// are marked invalid.
pub(crate) fn sample(frame: &RgbImage, square: Square, margin: f32) -> LumaSquare {
    let n = square.size;
    let factor = square.step.floor().max(1.0) as u32;
    let (width, height) = frame.dimensions();
    let extent = square.step * n as f32 * 0.5 + 1.0;
    let left = ((square.centre.x - extent).floor().max(0.0) as u32).min(width);
    let top = ((square.centre.y - extent).floor().max(0.0) as u32).min(height);
    let right = ((square.centre.x + extent).ceil().max(0.0) as u32).min(width);
    let bottom = ((square.centre.y + extent).ceil().max(0.0) as u32).min(height);
    let (sw, sh) = (((right - left) / factor) as usize, ((bottom - top) / factor) as usize);
    let mut luma_out = vec![0.0f32; n * n];
    let mut valid = vec![false; n * n];
    if sw == 0 || sh == 0 {
        return LumaSquare { square, luma: luma_out, valid };
    }
    let mut small = vec![0.0f32; sw * sh];
    let area = factor as f32 * factor as f32;
    for sy in 0..sh {
        for sx in 0..sw {
            let mut sum = 0.0;
            for dy in 0..factor {
                for dx in 0..factor {
                    sum += luma(frame.get_pixel(left + sx as u32 * factor + dx, top + sy as u32 * factor + dy).0);
                }
            }
            small[sy * sw + sx] = sum / area;
        }
    }
    let k = 1.0 / factor as f32;
    let shift = (factor as f32 - 1.0) * 0.5;
    let margin = margin * square.step;
    let (max_x, max_y) = (width as f32 - 1.0 - margin, height as f32 - 1.0 - margin);
    for v in 0..n {
        for u in 0..n {
            let p = square.to_image(u as f32, v as f32);
            let i = v * n + u;
            valid[i] = p.x >= margin && p.y >= margin && p.x <= max_x && p.y <= max_y;
            let sx = ((p.x - left as f32 - shift) * k).clamp(0.0, (sw - 1) as f32);
            let sy = ((p.y - top as f32 - shift) * k).clamp(0.0, (sh - 1) as f32);
            let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(sw - 1), (y0 + 1).min(sh - 1));
            let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
            let upper = small[y0 * sw + x0] + (small[y0 * sw + x1] - small[y0 * sw + x0]) * fx;
            let lower = small[y1 * sw + x0] + (small[y1 * sw + x1] - small[y1 * sw + x0]) * fx;
            luma_out[i] = upper + (lower - upper) * fy;
        }
    }
    LumaSquare { square, luma: luma_out, valid }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn sampling_at_unit_step_reproduces_the_pixels() {
        let frame = RgbImage::from_fn(64, 48, |x, y| Rgb([(x * 3) as u8, (y * 5) as u8, 0]));
        let square = Square { centre: Point::new(32.0, 24.0), step: 1.0, size: 16 };
        let s = sample(&frame, square, 0.0);
        let p = square.to_image(3.0, 7.0);
        let expected = luma(frame.get_pixel(p.x as u32, p.y as u32).0);
        assert!((s.luma[7 * 16 + 3] - expected).abs() < 1e-3);
        assert!(s.valid.iter().all(|&v| v));
    }

    #[test]
    fn coordinates_round_trip_and_outside_samples_are_invalid() {
        let square = Square { centre: Point::new(10.0, 10.0), step: 2.5, size: 32 };
        let p = Point::new(13.7, 2.2);
        let q = square.to_image(square.to_sample(p).x, square.to_sample(p).y);
        assert!((p.x - q.x).abs() < 1e-4 && (p.y - q.y).abs() < 1e-4);
        let frame = RgbImage::from_pixel(40, 40, Rgb([9, 9, 9]));
        let s = sample(&frame, square, 0.0);
        assert!(!s.valid[0] && s.valid[16 * 32 + 16]);
        assert!((s.luma[0] - 9.0).abs() < 1e-3);
    }

    #[test]
    fn a_fine_checkerboard_shrunk_four_times_is_flat_grey() {
        let frame = RgbImage::from_fn(200, 200, |x, y| if (x + y) % 2 == 0 { Rgb([255; 3]) } else { Rgb([0; 3]) });
        let s = sample(&frame, Square { centre: Point::new(100.0, 100.0), step: 4.0, size: 24 }, 0.0);
        assert!(s.luma.iter().all(|v| (v - 127.5).abs() < 2.0));
    }
}
