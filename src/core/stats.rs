//! Statistics every layer shares: percentiles as numpy computes them.

/// The `q`-th percentile (0..=100) of ascending `sorted`, by linear interpolation
/// between the closest ranks (numpy's default `method="linear"`): rank = q/100 × (N − 1).
/// `None` for an empty slice or `q` outside 0..=100.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&q) {
        return None;
    }
    let rank = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = (rank.ceil() as usize).min(sorted.len() - 1);
    let (a, b) = (sorted[lo], sorted[hi]);
    let t = rank - lo as f64;
    // numpy's `_lerp`: interpolate from the nearer end, which keeps the result within
    // [a, b] and exact at the ends.
    Some(if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(v: Option<f64>, want: f64) -> bool {
        v.is_some_and(|v| (v - want).abs() < 1e-9)
    }

    #[test]
    fn percentiles_match_numpy_linear() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&x, 0.0), Some(1.0));
        assert_eq!(percentile(&x, 100.0), Some(4.0));
        assert_eq!(percentile(&x, 50.0), Some(2.5)); // np.percentile([1,2,3,4], 50)
        assert!(close(percentile(&x, 90.0), 3.7));
        assert!(close(percentile(&x, 95.0), 3.85));
        assert!(close(percentile(&x, 99.0), 3.97));
        assert!(close(percentile(&x, 25.0), 1.75));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&x, 101.0), None);
        assert_eq!(percentile(&x, f64::NAN), None);
        // np.percentile(range(1, 11), [90, 99]) = [9.1, 9.91]
        let y: Vec<f64> = (1..=10).map(f64::from).collect();
        assert!(close(percentile(&y, 90.0), 9.1));
        assert!(close(percentile(&y, 99.0), 9.91));
    }
}
