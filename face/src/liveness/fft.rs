//! A small in-place radix-2 FFT (complex, f32) for the texture cues: 1-D on
//! power-of-two lengths and 2-D on square power-of-two images. The sizes used
//! here (32…128) make a dependency not worth its build cost.

/// A complex number as (re, im).
pub(crate) type Complex = (f32, f32);

/// Twiddle factors and the bit-reversal permutation for one length.
#[derive(Debug, Clone)]
pub(crate) struct Fft {
    n: usize,
    twiddles: Vec<Complex>,
    reversed: Vec<u32>,
}

impl Fft {
    /// A plan for length `n`; `None` unless `n` is a power of two ≥ 2.
    pub(crate) fn new(n: usize) -> Option<Self> {
        if n < 2 || !n.is_power_of_two() || n > 1 << 20 {
            return None;
        }
        let bits = n.trailing_zeros();
        let twiddles = (0..n / 2)
            .map(|k| {
                let angle = -2.0 * std::f64::consts::PI * k as f64 / n as f64;
                (angle.cos() as f32, angle.sin() as f32)
            })
            .collect();
        let reversed = (0..n as u32).map(|i| i.reverse_bits() >> (32 - bits)).collect();
        Some(Self { n, twiddles, reversed })
    }

    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// The forward transform `X[k] = Σ x[j]·e^(−2πi·jk/n)` of `data` (length n), in place.
    pub(crate) fn forward(&self, data: &mut [Complex]) {
        debug_assert_eq!(data.len(), self.n);
        for (i, &j) in self.reversed.iter().enumerate() {
            let j = j as usize;
            if i < j {
                data.swap(i, j);
            }
        }
        let mut size = 2;
        while size <= self.n {
            let half = size / 2;
            let stride = self.n / size;
            for start in (0..self.n).step_by(size) {
                for k in 0..half {
                    let (wr, wi) = self.twiddles[k * stride];
                    let (br, bi) = data[start + k + half];
                    let t = (br * wr - bi * wi, br * wi + bi * wr);
                    let a = data[start + k];
                    data[start + k] = (a.0 + t.0, a.1 + t.1);
                    data[start + k + half] = (a.0 - t.0, a.1 - t.1);
                }
            }
            size *= 2;
        }
    }

    /// The 2-D forward transform of a row-major n×n image, in place.
    pub(crate) fn forward_2d(&self, data: &mut [Complex]) {
        let n = self.n;
        debug_assert_eq!(data.len(), n * n);
        for row in data.chunks_exact_mut(n) {
            self.forward(row);
        }
        let mut column = vec![(0.0, 0.0); n];
        for x in 0..n {
            for (y, value) in column.iter_mut().enumerate() {
                *value = data[y * n + x];
            }
            self.forward(&mut column);
            for (y, value) in column.iter().enumerate() {
                data[y * n + x] = *value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(data: &[Complex]) -> Vec<Complex> {
        let n = data.len();
        (0..n)
            .map(|k| {
                data.iter().enumerate().fold((0.0f64, 0.0f64), |(re, im), (j, &(xr, xi))| {
                    let angle = -2.0 * std::f64::consts::PI * (j * k) as f64 / n as f64;
                    let (c, s) = (angle.cos(), angle.sin());
                    (re + f64::from(xr) * c - f64::from(xi) * s, im + f64::from(xr) * s + f64::from(xi) * c)
                })
            })
            .map(|(re, im)| (re as f32, im as f32))
            .collect()
    }

    fn signal(n: usize) -> Vec<Complex> {
        (0..n).map(|i| (((i * 7919) % 97) as f32 / 97.0 - 0.5, ((i * 104_729) % 89) as f32 / 89.0 - 0.5)).collect()
    }

    #[test]
    fn forward_matches_the_naive_dft() {
        for n in [2, 4, 8, 64, 128] {
            let x = signal(n);
            let mut fast = x.clone();
            Fft::new(n).unwrap().forward(&mut fast);
            for (a, b) in fast.iter().zip(naive(&x)) {
                assert!((a.0 - b.0).abs() < 1e-3 && (a.1 - b.1).abs() < 1e-3, "n={n}: {a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn two_dimensional_transform_finds_a_plane_wave() {
        let n = 32;
        let (fx, fy) = (5usize, 3usize);
        let mut image: Vec<Complex> = (0..n * n)
            .map(|i| {
                let (x, y) = ((i % n) as f32, (i / n) as f32);
                let phase = 2.0 * std::f32::consts::PI * (fx as f32 * x + fy as f32 * y) / n as f32;
                (phase.cos(), 0.0)
            })
            .collect();
        Fft::new(n).unwrap().forward_2d(&mut image);
        let power: Vec<f32> = image.iter().map(|(re, im)| re * re + im * im).collect();
        let peak = power.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        // A real cosine has its energy at (fx, fy) and its mirror (n - fx, n - fy).
        assert!(peak == fy * n + fx || peak == (n - fy) * n + (n - fx), "peak at {peak}");
        let total: f32 = power.iter().sum();
        assert!((power[fy * n + fx] + power[(n - fy) * n + (n - fx)]) / total > 0.999);
    }

    #[test]
    fn lengths_that_are_not_powers_of_two_are_refused() {
        assert!(Fft::new(0).is_none() && Fft::new(1).is_none() && Fft::new(48).is_none());
        assert_eq!(Fft::new(64).unwrap().len(), 64);
    }
}
