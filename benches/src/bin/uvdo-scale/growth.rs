//! Growth between sizes: the slope of a figure per GiB between two sizes, and the
//! extrapolation of a figure to a larger size along the last slope.

/// A figure at a size: (GiB, value).
pub(crate) type Point = (f64, f64);

/// The slope between two points; `None` when they share an x.
pub(crate) fn slope(a: Point, b: Point) -> Option<f64> {
    let dx = b.0 - a.0;
    (dx.abs() > f64::EPSILON).then(|| (b.1 - a.1) / dx)
}

/// The value at `x` from the last point, along the slope between the last two points (the
/// marginal cost at the largest sizes measured, where fixed costs weigh least). With one
/// point, proportional: the value per unit of x, times x (no fixed part). `None` without
/// points, or when the last x is 0.
pub(crate) fn extrapolate(points: &[Point], x: f64) -> Option<f64> {
    match points {
        [] => None,
        [only] => (only.0 > 0.0).then(|| only.1 / only.0 * x),
        [.., a, b] => Some(b.1 + slope(*a, *b)? * (x - b.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_is_per_unit_of_x() {
        assert_eq!(slope((1.0, 100.0), (4.0, 160.0)), Some(20.0));
        assert_eq!(slope((4.0, 4.0), (16.0, 64.0)), Some(5.0));
        assert_eq!(slope((4.0, 9.0), (16.0, 3.0)), Some(-0.5));
        assert_eq!(slope((1.0, 1.0), (1.0, 2.0)), None);
    }

    #[test]
    fn extrapolation_follows_the_last_slope() {
        // 0.5 s fixed + 0.25 s per GiB: at 1024 GiB, 256.5 s.
        let points = [(1.0, 0.75), (4.0, 1.5), (16.0, 4.5)];
        assert_eq!(extrapolate(&points, 1024.0), Some(256.5));
        // The last slope wins over the first.
        let bent = [(1.0, 1.0), (4.0, 4.0), (16.0, 64.0)];
        assert_eq!(extrapolate(&bent, 32.0), Some(144.0));
        assert_eq!(extrapolate(&[(2.0, 3.0)], 1024.0), Some(1536.0));
        assert_eq!(extrapolate(&[], 1024.0), None);
        assert_eq!(extrapolate(&[(0.0, 3.0)], 1024.0), None);
    }
}
