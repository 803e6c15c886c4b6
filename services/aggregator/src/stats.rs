//! Statistics of the A/B comparison: Wilson score intervals and the two-proportion z-test.

use serde::Serialize;

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The 95% Wilson score interval of `x` successes in `n` trials; (0, 1) when `n` is 0.
pub fn wilson(x: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (x, n) = (x as f64, n as f64);
    let p = x / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Two-sided p-value of the pooled two-proportion z-test; `None` when undefined (an empty arm,
/// or both rates 0 or both 1).
pub fn two_proportion_p(xa: u64, na: u64, xb: u64, nb: u64) -> Option<(f64, f64)> {
    if na == 0 || nb == 0 {
        return None;
    }
    let (pa, pb) = (xa as f64 / na as f64, xb as f64 / nb as f64);
    let pooled = (xa + xb) as f64 / (na + nb) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / na as f64 + 1.0 / nb as f64)).sqrt();
    if se == 0.0 {
        return None;
    }
    let z = (pb - pa) / se;
    Some((z, erfc(z.abs() / std::f64::consts::SQRT_2)))
}

/// Complementary error function: Numerical Recipes' `erfcc` Chebyshev fit, fractional error
/// below 1.2e-7 everywhere (plenty for a p-value).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// One arm of a comparison.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Arm {
    /// Channel or variant.
    pub value: String,
    /// Leads that reached the first stage of the pair.
    pub entered: u64,
    /// Of those, leads that reached the second stage.
    pub converted: u64,
    /// converted / entered (0 when entered is 0).
    pub rate: f64,
    /// 95% Wilson interval of the rate.
    pub ci95: [f64; 2],
}

impl Arm {
    /// An arm from its counts.
    pub fn new(value: &str, entered: u64, converted: u64) -> Self {
        let (lo, hi) = wilson(converted, entered);
        Self {
            value: value.into(),
            entered,
            converted,
            rate: if entered == 0 {
                0.0
            } else {
                converted as f64 / entered as f64
            },
            ci95: [lo, hi],
        }
    }
}

/// The comparison of arm B against arm A.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    /// Baseline.
    pub a: Arm,
    /// Challenger.
    pub b: Arm,
    /// rate(B) − rate(A).
    pub absolute_lift: f64,
    /// (rate(B) − rate(A)) / rate(A); null when rate(A) is 0.
    pub relative_lift: Option<f64>,
    /// z statistic; null when undefined.
    pub z: Option<f64>,
    /// Two-sided p-value; null when undefined.
    pub p_value: Option<f64>,
    /// Smallest arm size for a verdict.
    pub min_sample: u64,
    /// `insufficient_data`, `significant` (p < 0.05) or `not_significant`.
    pub verdict: &'static str,
    /// The verdict in plain words.
    pub summary: String,
}

/// Compares two arms; below `min_sample` leads in either arm the verdict is `insufficient_data`.
pub fn compare(a: Arm, b: Arm, min_sample: u64) -> Comparison {
    let absolute_lift = b.rate - a.rate;
    let relative_lift = (a.rate > 0.0).then(|| absolute_lift / a.rate);
    let zp = two_proportion_p(a.converted, a.entered, b.converted, b.entered);
    let (verdict, summary) = if a.entered < min_sample || b.entered < min_sample {
        (
            "insufficient_data",
            format!(
                "not enough data: {} and {} leads, at least {min_sample} needed in each",
                a.entered, b.entered
            ),
        )
    } else {
        match zp {
            Some((_, p)) if p < 0.05 => (
                "significant",
                format!(
                    "{} converts {} than {} ({:+.1} points, p = {:.3})",
                    b.value,
                    if absolute_lift > 0.0 {
                        "better"
                    } else {
                        "worse"
                    },
                    a.value,
                    absolute_lift * 100.0,
                    p
                ),
            ),
            _ => (
                "not_significant",
                format!(
                    "no significant difference between {} and {}{}",
                    a.value,
                    b.value,
                    zp.map(|(_, p)| format!(" (p = {p:.3})"))
                        .unwrap_or_default()
                ),
            ),
        }
    };
    Comparison {
        a,
        b,
        absolute_lift,
        relative_lift,
        z: zp.map(|(z, _)| z),
        p_value: zp.map(|(_, p)| p),
        min_sample,
        verdict,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_published_values() {
        // 81 of 263 (a textbook example): 0.2553 .. 0.3662.
        let (lo, hi) = wilson(81, 263);
        assert!(
            (lo - 0.2553).abs() < 5e-4 && (hi - 0.3662).abs() < 5e-4,
            "{lo} {hi}"
        );
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        let (lo, _) = wilson(0, 10);
        assert_eq!(lo, 0.0);
    }

    #[test]
    fn z_test_matches_a_worked_example() {
        // 200/1000 vs 250/1000: pooled 0.225, se = sqrt(0.225 · 0.775 · 2/1000) = 0.018675,
        // z = 0.05 / se = 2.6774, p = 2 (1 − Φ(2.6774)) = 0.00742.
        let (z, p) = two_proportion_p(200, 1000, 250, 1000).unwrap();
        assert!((z - 2.6774).abs() < 1e-3, "{z}");
        assert!((p - 0.00742).abs() < 1e-4, "{p}");
        assert!(two_proportion_p(0, 10, 0, 10).is_none());
        assert!(two_proportion_p(1, 0, 0, 10).is_none());
    }

    #[test]
    fn verdicts() {
        let c = compare(Arm::new("A", 50, 10), Arm::new("B", 50, 20), 100);
        assert_eq!(c.verdict, "insufficient_data");
        assert!(c.summary.starts_with("not enough data"));
        let c = compare(Arm::new("A", 1000, 200), Arm::new("B", 1000, 250), 100);
        assert_eq!(c.verdict, "significant");
        assert!((c.relative_lift.unwrap() - 0.25).abs() < 1e-9);
        let c = compare(Arm::new("A", 1000, 200), Arm::new("B", 1000, 205), 100);
        assert_eq!(c.verdict, "not_significant");
    }
}
