//! Comparing two proportions: the pooled two-proportion z test and its two-sided p-value under
//! the normal approximation, and the log odds ratio with its standard error.

/// z of `x1 / n1` against `x2 / n2` with the pooled standard error
/// `sqrt(p (1 − p) (1/n1 + 1/n2))`, `p = (x1 + x2) / (n1 + n2)`. Positive when the first
/// proportion is the larger. NaN when either sample is empty or the pooled proportion is 0 or 1
/// (no variance to compare against).
pub fn two_proportion_z(x1: usize, n1: usize, x2: usize, n2: usize) -> f64 {
    if n1 == 0 || n2 == 0 {
        return f64::NAN;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let pooled = (x1 + x2) as f64 / (n1f + n2f);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f)).sqrt();
    if se == 0.0 {
        return f64::NAN;
    }
    (x1 as f64 / n1f - x2 as f64 / n2f) / se
}

/// Natural log of the odds ratio of `x1 / n1` against `x2 / n2`, and its standard error
/// `sqrt(Σ 1 / cell)`, with 0.5 added to each cell of the 2 × 2 table (Haldane–Anscombe) so a
/// count of 0 gives a finite value. NaN for both when either sample is empty.
pub fn log_odds_ratio(x1: usize, n1: usize, x2: usize, n2: usize) -> (f64, f64) {
    if n1 == 0 || n2 == 0 || x1 > n1 || x2 > n2 {
        return (f64::NAN, f64::NAN);
    }
    let cell = |x: usize| x as f64 + 0.5;
    let (a, b, c, d) = (cell(x1), cell(n1 - x1), cell(x2), cell(n2 - x2));
    ((a * d / (b * c)).ln(), (1.0 / a + 1.0 / b + 1.0 / c + 1.0 / d).sqrt())
}

/// Two-sided p-value of a standard normal `z`: `P(|Z| ≥ |z|) = erfc(|z| / √2)`. NaN for NaN.
pub fn normal_two_sided_p(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    erfc(z.abs() / std::f64::consts::SQRT_2).min(1.0)
}

/// The complementary error function for x ≥ 0, Chebyshev fit with fractional error below 1.2e-7
/// everywhere (Numerical Recipes' `erfcc`); std has no erfc.
fn erfc(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * x);
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07 + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    t * poly.exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_of_a_hand_worked_pair_of_proportions() {
        // 30/50 against 20/100: pooled p = 50/150 = 1/3, se = sqrt(1/3 · 2/3 · (1/50 + 1/100))
        // = sqrt(2/9 · 0.03) = sqrt(1/150) = 0.0816497; (0.6 − 0.2) / 0.0816497 = 4.898979.
        let z = two_proportion_z(30, 50, 20, 100);
        assert!((z - 4.898_979).abs() < 1e-5, "{z}");
        assert!((two_proportion_z(20, 100, 30, 50) + z).abs() < 1e-12, "swapping the samples flips the sign");
    }

    #[test]
    fn z_is_undefined_without_variance_or_samples() {
        assert!(two_proportion_z(0, 10, 0, 20).is_nan());
        assert!(two_proportion_z(10, 10, 20, 20).is_nan());
        assert!(two_proportion_z(1, 0, 3, 20).is_nan());
    }

    #[test]
    fn log_odds_ratio_of_a_hand_worked_table() {
        // 30/50 against 20/100: cells 30, 20, 20, 80, each + 0.5: ln(30.5 · 80.5 / (20.5 · 20.5))
        // = ln(5.842356) = 1.765134; se = sqrt(1/30.5 + 1/20.5 + 1/20.5 + 1/80.5) = 0.377849.
        let (lor, se) = log_odds_ratio(30, 50, 20, 100);
        assert!((lor - 1.765_134).abs() < 1e-6 && (se - 0.377_849).abs() < 1e-6, "{lor} {se}");
        // All 8 against 40 of 52: ln(8.5 · 12.5 / (0.5 · 40.5)) = 1.657640, finite despite the 0.
        assert!((log_odds_ratio(8, 8, 40, 52).0 - 1.657_640).abs() < 1e-6);
        assert!(log_odds_ratio(0, 0, 3, 5).0.is_nan());
    }

    #[test]
    fn p_values_match_the_normal_table() {
        // Standard normal table: P(|Z| ≥ 1.96) = 0.0499958, P(|Z| ≥ 1) = 0.3173105,
        // P(|Z| ≥ 3) = 0.0026998; z = 0 gives 1.
        for (z, p) in [(1.96, 0.049_995_8), (-1.0, 0.317_310_5), (3.0, 0.002_699_8), (0.0, 1.0)] {
            let got = normal_two_sided_p(z);
            assert!((got - p).abs() < 1e-7, "z {z}: {got} vs {p}");
        }
        assert!(normal_two_sided_p(f64::NAN).is_nan());
    }
}
