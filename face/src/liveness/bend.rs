//! A smooth bend on top of a plane's motion: what a photo bent around a
//! vertical cylinder and turned adds to a homography.
//!
//! A sheet bent around a vertical axis and turned about it moves each of its
//! columns sideways by an amount that depends on the column alone (on the
//! angle of the sheet's normal there): beyond the homography, the motion
//! field is a function of x only, smooth, with no occlusion. A live head's
//! departure from a plane is not: the nose stands out of the cheeks in the
//! same column, the eye sockets sink in, eyelids and lips move on their own.
//!
//! [`ColumnBend`] is that model fitted to the residual vectors (matched point
//! minus homography) of points on a regular grid: per grid column, the
//! median residual, linearly interpolated between columns. A cylinder's
//! motion, once the homography and the bend are undone, is gone; a face's
//! nose, blink or mouth is not — it is a few points of a column, and the
//! median ignores them.
//!
//! A sheet bent around a horizontal axis and tilted (rows instead of
//! columns) is not modelled: none of the generated attacks does it.

use crate::geometry::Point;

/// Columns need this many points to take part in the fit.
const MIN_COLUMN_POINTS: usize = 3;

/// Per-column offsets (samples) added to the plane's motion.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ColumnBend {
    /// Column positions (reference x, samples), ascending, with each
    /// column's median residual (dx, dy).
    columns: Vec<(f32, f32, f32)>,
}

impl ColumnBend {
    /// Fits the bend to `residuals[i]` = matched position − plane's
    /// prediction of the point `from[i]`. Points sharing an x (a grid column)
    /// form a column. `None` with fewer than two usable columns.
    pub(crate) fn fit(from: &[Point], residuals: &[Point]) -> Option<Self> {
        let mut points: Vec<(f32, f32, f32)> = from.iter().zip(residuals).map(|(f, r)| (f.x, r.x, r.y)).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut columns = Vec::new();
        let mut start = 0;
        while start < points.len() {
            let x = points[start].0;
            let end = start + points[start..].iter().take_while(|p| (p.0 - x).abs() < 0.5).count();
            if end - start >= MIN_COLUMN_POINTS {
                let mut dx: Vec<f32> = points[start..end].iter().map(|p| p.1).collect();
                let mut dy: Vec<f32> = points[start..end].iter().map(|p| p.2).collect();
                columns.push((x, median(&mut dx), median(&mut dy)));
            }
            start = end;
        }
        (columns.len() >= 2).then_some(Self { columns })
    }

    /// The bend's offset at reference abscissa `x`: linear between columns,
    /// the nearest column's beyond the outermost ones.
    pub(crate) fn offset(&self, x: f32) -> Point {
        let c = &self.columns;
        let (first, last) = (c[0], c[c.len() - 1]);
        if x <= first.0 {
            return Point::new(first.1, first.2);
        }
        if x >= last.0 {
            return Point::new(last.1, last.2);
        }
        let i = c.partition_point(|col| col.0 <= x).clamp(1, c.len() - 1);
        let (a, b) = (c[i - 1], c[i]);
        let t = (x - a.0) / (b.0 - a.0).max(1e-6);
        Point::new(a.1 + (b.1 - a.1) * t, a.2 + (b.2 - a.2) * t)
    }
}

fn median(values: &mut [f32]) -> f32 {
    let mid = values.len() / 2;
    values.select_nth_unstable_by(mid, f32::total_cmp);
    values[mid]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Vec<Point> {
        (0..8).flat_map(|y| (0..8).map(move |x| Point::new(10.0 + 4.0 * x as f32, 10.0 + 4.0 * y as f32))).collect()
    }

    #[test]
    fn a_motion_that_depends_on_x_alone_is_absorbed() {
        let from = grid();
        let residuals: Vec<Point> = from.iter().map(|p| Point::new(0.002 * (p.x - 24.0).powi(3), 0.1)).collect();
        let bend = ColumnBend::fit(&from, &residuals).unwrap();
        for (p, r) in from.iter().zip(&residuals) {
            let o = bend.offset(p.x);
            assert!((o.x - r.x).abs() < 1e-4 && (o.y - r.y).abs() < 1e-4, "{p:?}: {o:?} vs {r:?}");
        }
        let between = bend.offset(16.0);
        assert!((between.x - 0.5 * (0.002 * (-10.0f32).powi(3) + 0.002 * (-6.0f32).powi(3))).abs() < 1e-4);
    }

    #[test]
    fn a_bump_in_a_few_points_of_a_column_is_left_over() {
        let from = grid();
        let nose = |p: &Point| (p.x - 22.0).abs() < 1.0 && (22.0..=30.0).contains(&p.y);
        let residuals: Vec<Point> =
            from.iter().map(|p| if nose(p) { Point::new(2.0, 0.0) } else { Point::new(0.0, 0.0) }).collect();
        let bend = ColumnBend::fit(&from, &residuals).unwrap();
        assert_eq!(bend.offset(22.0), Point::new(0.0, 0.0));
        let left: Vec<f32> =
            from.iter().zip(&residuals).filter(|(p, _)| nose(p)).map(|(p, r)| r.x - bend.offset(p.x).x).collect();
        assert!(left.len() == 3 && left.iter().all(|&d| d == 2.0), "{left:?}");
    }

    #[test]
    fn too_few_columns_give_no_bend() {
        let from = vec![Point::new(10.0, 10.0), Point::new(10.0, 14.0), Point::new(10.0, 18.0)];
        assert!(ColumnBend::fit(&from, &from).is_none());
    }
}
