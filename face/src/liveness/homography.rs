//! Fitting a plane's motion: the least-squares homography between matched
//! points (normalised DLT with h33 = 1) and a deterministic RANSAC around it.

use crate::geometry::Point;

/// A 3×3 projective transform, row-major, `h[8] == 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Homography(pub(crate) [f64; 9]);

impl Homography {
    pub(crate) fn apply(&self, p: Point) -> Option<Point> {
        let h = &self.0;
        let (x, y) = (f64::from(p.x), f64::from(p.y));
        let w = h[6] * x + h[7] * y + h[8];
        if w.abs() < 1e-9 {
            return None;
        }
        Some(Point::new(((h[0] * x + h[1] * y + h[2]) / w) as f32, ((h[3] * x + h[4] * y + h[5]) / w) as f32))
    }

    /// Transfer error |H·from − to| in pixels (infinite when H maps `from` to infinity).
    pub(crate) fn error(&self, from: Point, to: Point) -> f32 {
        self.apply(from).map_or(f32::INFINITY, |q| q.distance(to))
    }

    /// Least-squares fit over all pairs (≥ 4, not all collinear); Hartley
    /// normalisation, then the 8 unknowns solved from the normal equations.
    pub(crate) fn fit(from: &[Point], to: &[Point]) -> Option<Homography> {
        let n = from.len().min(to.len());
        if n < 4 {
            return None;
        }
        let (ta, sa) = normalisation(&from[..n])?;
        let (tb, sb) = normalisation(&to[..n])?;
        let mut ata = [[0.0f64; 8]; 8];
        let mut atb = [0.0f64; 8];
        for (f, t) in from[..n].iter().zip(&to[..n]) {
            let (x, y) = ((f64::from(f.x) - ta.0) * sa, (f64::from(f.y) - ta.1) * sa);
            let (u, v) = ((f64::from(t.x) - tb.0) * sb, (f64::from(t.y) - tb.1) * sb);
            let rows =
                [([x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y], u), ([0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y], v)];
            for (row, rhs) in rows {
                for i in 0..8 {
                    atb[i] += row[i] * rhs;
                    for j in 0..8 {
                        ata[i][j] += row[i] * row[j];
                    }
                }
            }
        }
        let h = solve8(ata, atb)?;
        // Undo the normalisations: H = Tb⁻¹ · Hn · Ta.
        let hn = [h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], 1.0];
        let ta_m = [sa, 0.0, -sa * ta.0, 0.0, sa, -sa * ta.1, 0.0, 0.0, 1.0];
        let tb_inv = [1.0 / sb, 0.0, tb.0, 0.0, 1.0 / sb, tb.1, 0.0, 0.0, 1.0];
        let full = multiply(&tb_inv, &multiply(&hn, &ta_m));
        if !(full[8].is_finite() && full[8].abs() > 1e-12) {
            return None;
        }
        let full = full.map(|v| v / full[8]);
        full.iter().all(|v| v.is_finite()).then_some(Homography(full))
    }

    /// RANSAC over minimal 4-point samples (deterministic: a fixed-seed
    /// generator), then a least-squares refit on the largest consensus set.
    /// Returns the fit and the inlier mask; `None` with fewer than
    /// `min_inliers` inliers.
    pub(crate) fn ransac(
        from: &[Point],
        to: &[Point],
        threshold: f32,
        iterations: usize,
        min_inliers: usize,
    ) -> Option<(Homography, Vec<bool>)> {
        let n = from.len().min(to.len());
        if n < 4.max(min_inliers) {
            return None;
        }
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        let mut best: Option<Vec<bool>> = None;
        let mut best_count = 0;
        for _ in 0..iterations {
            let mut sample = [0usize; 4];
            let mut k = 0;
            while k < 4 {
                let candidate = next(n);
                if !sample[..k].contains(&candidate) {
                    sample[k] = candidate;
                    k += 1;
                }
            }
            let (f, t): (Vec<Point>, Vec<Point>) = sample.iter().map(|&i| (from[i], to[i])).unzip();
            let Some(h) = Homography::fit(&f, &t) else { continue };
            let mask: Vec<bool> = (0..n).map(|i| h.error(from[i], to[i]) < threshold).collect();
            let count = mask.iter().filter(|&&m| m).count();
            if count > best_count {
                best_count = count;
                best = Some(mask);
            }
        }
        let mask = best?;
        if best_count < min_inliers {
            return None;
        }
        let (f, t): (Vec<Point>, Vec<Point>) = (0..n).filter(|&i| mask[i]).map(|i| (from[i], to[i])).unzip();
        let h = Homography::fit(&f, &t)?;
        Some((h, mask))
    }
}

fn normalisation(points: &[Point]) -> Option<((f64, f64), f64)> {
    let n = points.len() as f64;
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(x, y), p| (x + f64::from(p.x), y + f64::from(p.y)));
    let centre = (sx / n, sy / n);
    let spread = points.iter().map(|p| (f64::from(p.x) - centre.0).hypot(f64::from(p.y) - centre.1)).sum::<f64>() / n;
    (spread > 1e-9).then(|| (centre, std::f64::consts::SQRT_2 / spread))
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

/// Gaussian elimination with partial pivoting; `None` when singular.
fn solve8(mut a: [[f64; 8]; 8], mut b: [f64; 8]) -> Option<[f64; 8]> {
    let scale = a.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    for col in 0..8 {
        let pivot = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 * scale {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (upper, lower) = a.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        for (offset, row) in lower.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            for (value, &p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *value -= f * p;
            }
            b[col + 1 + offset] -= f * b[col];
        }
    }
    let mut x = [0.0f64; 8];
    for row in (0..8).rev() {
        let s: f64 = (row + 1..8).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRUTH: Homography = Homography([1.05, 0.08, 4.0, -0.06, 0.97, -3.0, 0.0004, -0.0003, 1.0]);

    fn grid() -> Vec<Point> {
        (0..36).map(|i| Point::new(15.0 + (i % 6) as f32 * 22.0, 12.0 + (i / 6) as f32 * 23.0)).collect()
    }

    #[test]
    fn fit_recovers_a_known_homography() {
        let from = grid();
        let to: Vec<Point> = from.iter().map(|&p| TRUTH.apply(p).unwrap()).collect();
        let h = Homography::fit(&from, &to).unwrap();
        for (&f, &t) in from.iter().zip(&to) {
            assert!(h.error(f, t) < 1e-3, "{h:?}");
        }
    }

    #[test]
    fn ransac_ignores_gross_outliers() {
        let from = grid();
        let mut to: Vec<Point> = from.iter().map(|&p| TRUTH.apply(p).unwrap()).collect();
        for i in [3, 10, 17, 25] {
            to[i].x += 9.0;
        }
        let (h, mask) = Homography::ransac(&from, &to, 1.0, 64, 8).unwrap();
        assert_eq!(mask.iter().filter(|&&m| !m).count(), 4);
        assert!(h.error(from[0], to[0]) < 1e-3);
    }

    #[test]
    fn collinear_points_have_no_homography() {
        let from: Vec<Point> = (0..8).map(|i| Point::new(i as f32, 2.0 * i as f32)).collect();
        assert!(Homography::fit(&from, &from).is_none());
    }
}
