//! Screen cue: periodic colour structure (moiré, sub-pixel stripes) in the
//! face at the camera's native resolution.
//!
//! A camera behind a Bayer filter, then 4:2:0 video or JPEG, keeps little
//! fine colour detail of a real face: at mid-to-high spatial frequencies the
//! chroma carries much less energy than the luma, and what it carries is
//! spread over many frequencies. A screen filmed by a camera adds its
//! red/green/blue sub-pixel grid and the moiré between that grid and the
//! sensor's: a few strong chroma frequencies. The cue is the energy in the
//! strongest chroma frequencies of a band, relative to the luma energy in the
//! same band.

use image::RgbImage;

use super::fft::{Complex, Fft};
use crate::geometry::BoundingBox;

/// Band of spatial frequencies examined, in cycles per pixel (radial).
const BAND: (f32, f32) = (1.0 / 16.0, 1.0 / 4.0);
/// The crop side is the largest power of two at most this fraction of the
/// face box side (the face's inner part), clamped to [`MIN_SIDE`, `MAX_SIDE`].
const CROP_FRACTION: f32 = 0.7;
const MIN_SIDE: usize = 32;
const MAX_SIDE: usize = 128;
/// The "peak" bins: this fraction of the band's bins (at least [`MIN_PEAK_BINS`]).
const PEAK_FRACTION: usize = 32;
const MIN_PEAK_BINS: usize = 4;
/// Luma energy floor per band bin (grey levels² after windowing), so a flat,
/// textureless crop does not divide by almost nothing.
const LUMA_FLOOR: f32 = 4.0;

/// What the moiré cue measured on one frame.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MoireMeasure {
    /// Side of the native-resolution crop that was analysed, in pixels.
    pub side: u32,
    /// Chroma / luma energy in the band (all bins).
    pub chroma_ratio: f32,
    /// Energy of the strongest chroma bins of the band / luma band energy:
    /// the score (higher = more screen-like).
    pub score: f32,
}

/// FFT plans and windows for the three crop sizes.
#[derive(Debug, Clone)]
pub(crate) struct MoireAnalyzer {
    plans: Vec<(Fft, Vec<f32>, Vec<usize>)>,
}

impl MoireAnalyzer {
    pub(crate) fn new() -> Self {
        let mut plans = Vec::new();
        let mut side = MIN_SIDE;
        while side <= MAX_SIDE {
            if let Some(fft) = Fft::new(side) {
                let hann: Vec<f32> = (0..side)
                    .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / (side - 1) as f32).cos())
                    .collect();
                plans.push((fft, hann, band_bins(side)));
            }
            side *= 2;
        }
        Self { plans }
    }

    /// Measures the face inside `bbox`; `None` when the frame is smaller than
    /// the smallest crop.
    pub(crate) fn measure(&self, frame: &RgbImage, bbox: &BoundingBox) -> Option<MoireMeasure> {
        let (width, height) = (frame.width() as usize, frame.height() as usize);
        let wanted = (bbox.width.min(bbox.height) * CROP_FRACTION).max(0.0) as usize;
        let (fft, hann, band) = self
            .plans
            .iter()
            .rev()
            .find(|(fft, _, _)| fft.len() <= wanted.max(MIN_SIDE) && fft.len() <= width.min(height))?;
        let n = fft.len();
        let centre = bbox.center();
        let x0 = ((centre.x - n as f32 * 0.5).round().max(0.0) as usize).min(width - n);
        let y0 = ((centre.y - n as f32 * 0.5).round().max(0.0) as usize).min(height - n);

        let mut luma = vec![(0.0f32, 0.0f32); n * n];
        let mut chroma = vec![(0.0f32, 0.0f32); n * n];
        let (mut mean_y, mut mean_r, mut mean_b) = (0.0f64, 0.0f64, 0.0f64);
        for y in 0..n {
            for x in 0..n {
                let [r, g, b] = frame.get_pixel((x0 + x) as u32, (y0 + y) as u32).0.map(f32::from);
                let i = y * n + x;
                luma[i].0 = 0.299 * r + 0.587 * g + 0.114 * b;
                chroma[i] = (r - g, b - 0.5 * (r + g));
                mean_y += f64::from(luma[i].0);
                mean_r += f64::from(chroma[i].0);
                mean_b += f64::from(chroma[i].1);
            }
        }
        let count = (n * n) as f64;
        let (mean_y, mean_r, mean_b) = ((mean_y / count) as f32, (mean_r / count) as f32, (mean_b / count) as f32);
        for y in 0..n {
            for x in 0..n {
                let w = hann[y] * hann[x];
                let i = y * n + x;
                luma[i].0 = (luma[i].0 - mean_y) * w;
                chroma[i] = ((chroma[i].0 - mean_r) * w, (chroma[i].1 - mean_b) * w);
            }
        }
        fft.forward_2d(&mut luma);
        // Two real channels packed as one complex signal z = cr + i·cb: the
        // summed power of both at bin k is (|Z[k]|² + |Z[−k]|²) / 2.
        fft.forward_2d(&mut chroma);
        let power = |c: Complex| c.0 * c.0 + c.1 * c.1;
        let mut luma_energy = 0.0f64;
        let mut chroma_bins: Vec<f32> = Vec::with_capacity(band.len());
        for &k in band {
            let (kx, ky) = (k % n, k / n);
            let mirror = ((n - ky) % n) * n + (n - kx) % n;
            luma_energy += f64::from(power(luma[k]));
            chroma_bins.push(0.5 * (power(chroma[k]) + power(chroma[mirror])));
        }
        let chroma_energy: f64 = chroma_bins.iter().map(|&v| f64::from(v)).sum();
        let peaks = (band.len() / PEAK_FRACTION).max(MIN_PEAK_BINS).min(chroma_bins.len());
        let first_peak = chroma_bins.len() - peaks;
        chroma_bins.select_nth_unstable_by(first_peak, |a, b| a.total_cmp(b));
        let peak_energy: f64 = chroma_bins[first_peak..].iter().map(|&v| f64::from(v)).sum();
        let luma_energy = luma_energy + f64::from(LUMA_FLOOR) * band.len() as f64;
        Some(MoireMeasure {
            side: n as u32,
            chroma_ratio: (chroma_energy / luma_energy) as f32,
            score: (peak_energy / luma_energy) as f32,
        })
    }
}

/// Indices (row-major, FFT order) of the bins whose radial frequency is in [`BAND`].
fn band_bins(n: usize) -> Vec<usize> {
    let frequency = |i: usize| {
        let signed = if i < n / 2 { i as f32 } else { i as f32 - n as f32 };
        signed / n as f32
    };
    (0..n * n)
        .filter(|&k| {
            let radius = frequency(k % n).hypot(frequency(k / n));
            (BAND.0..=BAND.1).contains(&radius)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn face_box(side: f32) -> BoundingBox {
        BoundingBox { x: 10.0, y: 10.0, width: side, height: side }
    }

    /// A grey, smoothly shaded "face" with some luma texture.
    fn textured(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            let v = 120.0 + 40.0 * ((x as f32 * 0.37).sin() * (y as f32 * 0.23).cos()) + ((x * 13 + y * 7) % 11) as f32;
            let v = v as u8;
            Rgb([v.saturating_add(20), v, v.saturating_sub(10)])
        })
    }

    #[test]
    fn colour_stripes_score_far_above_plain_texture() {
        let analyzer = MoireAnalyzer::new();
        let plain = textured(160, 160);
        let mut striped = plain.clone();
        for (x, _, p) in striped.enumerate_pixels_mut() {
            // RGB sub-pixel columns with a period of 6 pixels.
            let channel = (x / 2 % 3) as usize;
            p.0[channel] = p.0[channel].saturating_add(60);
        }
        let a = analyzer.measure(&plain, &face_box(140.0)).unwrap();
        let b = analyzer.measure(&striped, &face_box(140.0)).unwrap();
        assert_eq!(a.side, 64);
        assert!(b.score > 10.0 * a.score.max(0.01), "plain {a:?}, striped {b:?}");
    }

    #[test]
    fn crop_side_follows_the_face_and_the_frame() {
        let analyzer = MoireAnalyzer::new();
        let frame = textured(400, 300);
        assert_eq!(analyzer.measure(&frame, &face_box(40.0)).unwrap().side, 32);
        assert_eq!(analyzer.measure(&frame, &face_box(100.0)).unwrap().side, 64);
        assert_eq!(analyzer.measure(&frame, &face_box(250.0)).unwrap().side, 128);
        assert!(analyzer.measure(&textured(20, 20), &face_box(18.0)).is_none());
    }

    #[test]
    fn a_grey_image_has_no_chroma_energy() {
        let analyzer = MoireAnalyzer::new();
        let grey = RgbImage::from_fn(128, 128, |x, y| {
            let v = ((x * 31 + y * 17) % 200) as u8;
            Rgb([v, v, v])
        });
        let m = analyzer.measure(&grey, &face_box(100.0)).unwrap();
        assert!(m.score < 1e-6 && m.chroma_ratio < 1e-6, "{m:?}");
    }
}
