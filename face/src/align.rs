//! Alignment: a similarity transform from the five landmarks onto the
//! embedder's reference points, and the warp that cuts the face chip.

use image::{Rgb, RgbImage};

use crate::geometry::{Landmarks, Point};

/// `p ↦ [a −b; b a]·p + t`: rotation, uniform scale and translation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f32,
    pub b: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Similarity {
    pub fn apply(&self, p: Point) -> Point {
        Point::new(self.a * p.x - self.b * p.y + self.tx, self.b * p.x + self.a * p.y + self.ty)
    }

    /// The scale factor of the transform.
    pub fn scale(&self) -> f32 {
        self.a.hypot(self.b)
    }

    /// The inverse transform; `None` when the transform is degenerate.
    pub fn inverse(&self) -> Option<Similarity> {
        let det = self.a * self.a + self.b * self.b;
        if !(det.is_finite() && det > 1e-12) {
            return None;
        }
        let (a, b) = (self.a / det, -self.b / det);
        Some(Similarity { a, b, tx: -(a * self.tx - b * self.ty), ty: -(b * self.tx + a * self.ty) })
    }

    /// Least-squares similarity taking `from` onto `to` (closed form; no
    /// reflection). `None` when all source points coincide.
    pub fn estimate(from: &[Point], to: &[Point]) -> Option<Similarity> {
        let n = from.len().min(to.len());
        if n < 2 {
            return None;
        }
        let inv_n = 1.0 / n as f32;
        let mean = |ps: &[Point]| {
            let (sx, sy) = ps[..n].iter().fold((0.0, 0.0), |(x, y), p| (x + p.x, y + p.y));
            Point::new(sx * inv_n, sy * inv_n)
        };
        let (fm, tm) = (mean(from), mean(to));
        let (mut dot, mut cross, mut norm) = (0.0f32, 0.0f32, 0.0f32);
        for (f, t) in from[..n].iter().zip(&to[..n]) {
            let (fx, fy) = (f.x - fm.x, f.y - fm.y);
            let (ux, uy) = (t.x - tm.x, t.y - tm.y);
            dot += fx * ux + fy * uy;
            cross += fx * uy - fy * ux;
            norm += fx * fx + fy * fy;
        }
        if !(norm.is_finite() && norm > 1e-9) {
            return None;
        }
        let (a, b) = (dot / norm, cross / norm);
        Some(Similarity { a, b, tx: tm.x - (a * fm.x - b * fm.y), ty: tm.y - (b * fm.x + a * fm.y) })
    }
}

/// Where the chip comes from: the transform (image → chip) and the chip size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChipGeometry {
    pub width: u32,
    pub height: u32,
    pub reference: [Point; 5],
}

impl ChipGeometry {
    pub fn new(width: u32, height: u32, reference: [[f32; 2]; 5]) -> Self {
        Self { width, height, reference: reference.map(|[x, y]| Point::new(x, y)) }
    }

    /// The transform taking the landmarks onto the reference points.
    pub fn transform(&self, landmarks: &Landmarks) -> Option<Similarity> {
        Similarity::estimate(&landmarks.0, &self.reference)
    }

    /// The x about which the reference points are symmetric; mirroring the
    /// chip about it keeps eyes, nose and mouth on their reference points.
    pub fn mirror_axis(&self) -> f32 {
        let r = &self.reference;
        (r[0].x + r[1].x + r[3].x + r[4].x) * 0.25
    }

    /// Cuts the chip for `landmarks` from `image`; `mirror` flips it
    /// horizontally about the reference axis. `None` for degenerate landmarks.
    pub fn cut(&self, image: &RgbImage, landmarks: &Landmarks, mirror: bool) -> Option<RgbImage> {
        let forward = self.transform(landmarks)?;
        let inverse = forward.inverse()?;
        let mirror_about = if mirror { Some(2.0 * self.mirror_axis()) } else { None };
        Some(warp(image, &inverse, forward.scale(), self.width, self.height, mirror_about))
    }
}

/// Samples `width`×`height` output pixels from `image` through `inverse`
/// (chip → image). When the chip is much smaller than the face in the image,
/// the source is first box-filtered so the chip is not aliased.
fn warp(
    image: &RgbImage,
    inverse: &Similarity,
    forward_scale: f32,
    width: u32,
    height: u32,
    mirror_about: Option<f32>,
) -> RgbImage {
    let step = if forward_scale > 0.0 { 1.0 / forward_scale } else { 1.0 };
    let factor = step.floor() as u32;
    if factor >= 2 {
        let (small, offset) = box_downscale_region(image, inverse, width, height, factor);
        let k = 1.0 / factor as f32;
        // image = factor·small + offset  ⇒  small = (image − offset)/factor.
        let scaled = Similarity {
            a: inverse.a * k,
            b: inverse.b * k,
            tx: (inverse.tx - offset.x) * k,
            ty: (inverse.ty - offset.y) * k,
        };
        return sample(&small, &scaled, width, height, mirror_about, (factor as f32 - 1.0) * 0.5 * k);
    }
    sample(image, inverse, width, height, mirror_about, 0.0)
}

fn sample(
    image: &RgbImage,
    inverse: &Similarity,
    width: u32,
    height: u32,
    mirror_about: Option<f32>,
    shift: f32,
) -> RgbImage {
    let mut out = RgbImage::new(width, height);
    for v in 0..height {
        for u in 0..width {
            let x = match mirror_about {
                Some(axis) => axis - u as f32,
                None => u as f32,
            };
            let p = inverse.apply(Point::new(x, v as f32));
            out.put_pixel(u, v, bilinear(image, p.x - shift, p.y - shift));
        }
    }
    out
}

/// Bilinear sample with a black border, like OpenCV's BORDER_CONSTANT.
fn bilinear(image: &RgbImage, x: f32, y: f32) -> Rgb<u8> {
    let (w, h) = (image.width() as i64, image.height() as i64);
    if !(x.is_finite() && y.is_finite()) || x <= -1.0 || y <= -1.0 || x >= w as f32 || y >= h as f32 {
        return Rgb([0, 0, 0]);
    }
    let (x0, y0) = (x.floor() as i64, y.floor() as i64);
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let fetch = |xi: i64, yi: i64| -> [f32; 3] {
        if xi < 0 || yi < 0 || xi >= w || yi >= h {
            [0.0; 3]
        } else {
            image.get_pixel(xi as u32, yi as u32).0.map(f32::from)
        }
    };
    let (p00, p10, p01, p11) = (fetch(x0, y0), fetch(x0 + 1, y0), fetch(x0, y0 + 1), fetch(x0 + 1, y0 + 1));
    let mut px = [0u8; 3];
    for c in 0..3 {
        let top = p00[c] + (p10[c] - p00[c]) * fx;
        let bottom = p01[c] + (p11[c] - p01[c]) * fx;
        px[c] = (top + (bottom - top) * fy).round().clamp(0.0, 255.0) as u8;
    }
    Rgb(px)
}

/// Box-averages `factor`×`factor` blocks of the part of `image` the chip
/// covers. Returns the small image and the image position of its (0, 0) block.
fn box_downscale_region(
    image: &RgbImage,
    inverse: &Similarity,
    width: u32,
    height: u32,
    factor: u32,
) -> (RgbImage, Point) {
    let corners = [
        inverse.apply(Point::new(0.0, 0.0)),
        inverse.apply(Point::new(width as f32, 0.0)),
        inverse.apply(Point::new(0.0, height as f32)),
        inverse.apply(Point::new(width as f32, height as f32)),
    ];
    let (iw, ih) = (image.width() as f32, image.height() as f32);
    let min_x = corners.iter().map(|p| p.x).fold(f32::INFINITY, f32::min).floor().clamp(0.0, iw);
    let min_y = corners.iter().map(|p| p.y).fold(f32::INFINITY, f32::min).floor().clamp(0.0, ih);
    let max_x = corners.iter().map(|p| p.x).fold(f32::NEG_INFINITY, f32::max).ceil().clamp(0.0, iw);
    let max_y = corners.iter().map(|p| p.y).fold(f32::NEG_INFINITY, f32::max).ceil().clamp(0.0, ih);
    let (x0, y0) = (min_x as u32, min_y as u32);
    let sw = ((max_x as u32).saturating_sub(x0)) / factor;
    let sh = ((max_y as u32).saturating_sub(y0)) / factor;
    let mut small = RgbImage::new(sw.max(1), sh.max(1));
    let area = factor * factor;
    for sy in 0..sh {
        for sx in 0..sw {
            let mut sum = [0u32; 3];
            for dy in 0..factor {
                for dx in 0..factor {
                    let p = image.get_pixel(x0 + sx * factor + dx, y0 + sy * factor + dy).0;
                    for c in 0..3 {
                        sum[c] += u32::from(p[c]);
                    }
                }
            }
            small.put_pixel(sx, sy, Rgb(sum.map(|s| ((s + area / 2) / area) as u8)));
        }
    }
    (small, Point::new(x0 as f32, y0 as f32))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE: [[f32; 2]; 5] = [[47.5, 46.6], [100.5, 46.6], [74.0, 76.6], [50.4, 103.0], [97.6, 103.0]];

    #[test]
    fn estimate_recovers_a_known_similarity() {
        let truth = Similarity { a: 0.8, b: 0.3, tx: 5.0, ty: -7.0 };
        let from = [
            Point::new(10.0, 20.0),
            Point::new(40.0, 22.0),
            Point::new(25.0, 40.0),
            Point::new(15.0, 55.0),
            Point::new(37.0, 56.0),
        ];
        let to = from.map(|p| truth.apply(p));
        let est = Similarity::estimate(&from, &to).unwrap();
        for (x, y) in [(est.a, truth.a), (est.b, truth.b), (est.tx, truth.tx), (est.ty, truth.ty)] {
            assert!((x - y).abs() < 1e-4, "{est:?} vs {truth:?}");
        }
    }

    #[test]
    fn inverse_undoes_the_transform() {
        let t = Similarity { a: 1.7, b: -0.4, tx: 12.0, ty: 3.0 };
        let back = t.inverse().unwrap();
        let p = Point::new(33.0, -8.0);
        let q = back.apply(t.apply(p));
        assert!((p.x - q.x).abs() < 1e-3 && (p.y - q.y).abs() < 1e-3);
    }

    #[test]
    fn coincident_landmarks_are_degenerate() {
        let geometry = ChipGeometry::new(150, 150, REFERENCE);
        let image = RgbImage::new(64, 64);
        let landmarks = Landmarks([Point::new(5.0, 5.0); 5]);
        assert!(geometry.cut(&image, &landmarks, false).is_none());
    }

    #[test]
    fn landmarks_on_the_reference_give_an_identity_cut() {
        let geometry = ChipGeometry::new(150, 150, REFERENCE);
        let mut image = RgbImage::new(150, 150);
        for (x, y, p) in image.enumerate_pixels_mut() {
            *p = Rgb([(x % 256) as u8, (y % 256) as u8, 7]);
        }
        let chip = geometry.cut(&image, &Landmarks(geometry.reference), false).unwrap();
        assert_eq!(chip.get_pixel(10, 20).0, [10, 20, 7]);
        assert_eq!(chip.get_pixel(140, 130).0, [140, 130, 7]);
    }

    #[test]
    fn mirrored_chip_is_the_flip_about_the_reference_axis() {
        let geometry = ChipGeometry::new(150, 150, REFERENCE);
        let mut image = RgbImage::new(150, 150);
        for (x, _, p) in image.enumerate_pixels_mut() {
            *p = Rgb([x as u8, 0, 0]);
        }
        let mirror = geometry.cut(&image, &Landmarks(geometry.reference), true).unwrap();
        // axis 74 → output u samples input 148 - u.
        assert_eq!(mirror.get_pixel(0, 5).0[0], 148);
        assert_eq!(mirror.get_pixel(48, 5).0[0], 100);
    }

    #[test]
    fn large_faces_are_box_filtered_not_aliased() {
        // A fine checkerboard at 8x the chip scale must come out uniform grey.
        let geometry = ChipGeometry::new(150, 150, REFERENCE);
        let image =
            RgbImage::from_fn(1200, 1200, |x, y| if (x + y) % 2 == 0 { Rgb([255, 255, 255]) } else { Rgb([0, 0, 0]) });
        let landmarks = Landmarks(geometry.reference.map(|p| Point::new(p.x * 8.0, p.y * 8.0)));
        let chip = geometry.cut(&image, &landmarks, false).unwrap();
        let v = chip.get_pixel(75, 75).0[0];
        assert!((120..=135).contains(&v), "centre pixel {v}");
    }
}
