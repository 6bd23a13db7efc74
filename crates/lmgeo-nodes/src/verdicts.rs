//! The verdicts of the report sections: each claim's test as a pure function
//! of what its node measured, with every threshold named here and listed,
//! with its reason, in docs/method.md ("8. The report's verdicts"). A node
//! measures, publishes its tables and metrics, and then asks one of these
//! functions what the numbers say.

use lmgeo_report::Verdict;

/// Fewest models (sizes) a scaling verdict needs: a line through two points
/// fits them exactly (R² = 1) and leaves no degree of freedom, so only a
/// third point can test the power law.
pub const MIN_MODELS_FOR_FIT: usize = 3;

/// R² (of log y on log N) from which a power law describes the models'
/// means: 90% of the variance of the log metric explained by log size, the
/// usual reading of "follows a power law" in scaling studies.
pub const POWER_LAW_R2_SUPPORTED: f64 = 0.9;

/// R² from which a power law is partial evidence: the fit explains at least
/// as much of the variance as it leaves.
pub const POWER_LAW_R2_PARTLY: f64 = 0.5;

/// Largest relative difference between the GP and the ridge posterior
/// variances at which the two routes agree to round-off: both are solved in
/// f64 with condition numbers up to ~1/sigma^2 = 1e4, which leaves about
/// ten digits.
pub const GP_RIDGE_AGREE: f64 = 1e-6;

/// Largest relative difference at which the routes still agree to three
/// digits (what a figure shows): the identity holds, but the solves lost
/// precision (an ill-conditioned context).
pub const GP_RIDGE_CLOSE: f64 = 1e-3;

/// Relative slack of the centring-trap check `s^2 <= bound`: the two sides
/// come from different computations, so equality holds only to round-off.
pub const CENTRING_BOUND_SLACK: f64 = 1e-9;

/// |Spearman rho| between position and the mean per-position gain beyond
/// which the evidence calls the gain falling or rising (Cohen's "medium"
/// correlation); between the two it says "no clear trend". Wording only:
/// no verdict depends on it.
pub const GAIN_TREND_RHO: f64 = 0.3;

/// Mean Jaccard overlap of the top-k sets below which Lasso and attention
/// select different tokens: the two sets then share less than half of
/// their union.
pub const LASSO_ATTENTION_JACCARD_DIFFER: f64 = 0.5;

/// Ratio of the effect of removing the selected tokens to the effect of
/// removing as many random tokens up to which "not much worse than random"
/// holds: within a factor of two.
pub const ABLATION_RATIO_SPREAD: f64 = 2.0;

/// Ratio of the effect of keeping only the selected tokens to the effect of
/// keeping as many random ones below which the selection preserved the
/// output better than chance.
pub const ABLATION_RATIO_BETTER: f64 = 1.0;

/// ROC AUC above which a distance separates paired texts from random pairs:
/// the lower bound of "acceptable discrimination" (Hosmer & Lemeshow).
pub const AUC_SEPARATES: f64 = 0.7;

/// ROC AUC of chance (a coin flip orders a pair correctly half the time):
/// above it a distance carries some signal.
pub const AUC_CHANCE: f64 = 0.5;

/// Significance level of the shuffled-pairing permutation test of
/// `layer_similarity`: the conventional 5%.
pub const ALIGNMENT_ALPHA: f64 = 0.05;

/// Power law of a measured metric against model size: Supported when the
/// fit is good and the bootstrap interval of the exponent excludes zero,
/// Partly when one of the two holds. Without a fit, an interval, or
/// [`MIN_MODELS_FOR_FIT`] models: Inconclusive.
pub fn power_law(
    models: usize,
    r_squared: Option<f64>,
    exponent_ci: Option<(f64, f64)>,
) -> Verdict {
    let (Some(r2), Some((lower, upper))) = (r_squared, exponent_ci) else {
        return Verdict::Inconclusive;
    };
    let excludes_zero = lower > 0.0 || upper < 0.0;
    if models < MIN_MODELS_FOR_FIT {
        Verdict::Inconclusive
    } else if r2 >= POWER_LAW_R2_SUPPORTED && excludes_zero {
        Verdict::Supported
    } else if r2 >= POWER_LAW_R2_PARTLY || excludes_zero {
        Verdict::Partly
    } else {
        Verdict::NotSupported
    }
}

/// Power law of the simulated metric (no texts, so no interval): by R²
/// alone.
pub fn simulated_power_law(models: usize, r_squared: f64) -> Verdict {
    if models < MIN_MODELS_FOR_FIT {
        Verdict::Inconclusive
    } else if r_squared >= POWER_LAW_R2_SUPPORTED {
        Verdict::Supported
    } else if r_squared >= POWER_LAW_R2_PARTLY {
        Verdict::Partly
    } else {
        Verdict::NotSupported
    }
}

/// Diff-eRank: Supported when it is positive at the last layer of every
/// model, Partly when of some.
pub fn diff_erank(positive_last: usize, models: usize) -> Verdict {
    if models == 0 {
        Verdict::Inconclusive
    } else if positive_last == models {
        Verdict::Supported
    } else if positive_last > 0 {
        Verdict::Partly
    } else {
        Verdict::NotSupported
    }
}

/// The GP = ridge identity, from the largest relative difference of the two
/// posterior variances over every text and layer (`None`: nothing measured).
pub fn gp_ridge(worst_relative_difference: Option<f64>) -> Verdict {
    match worst_relative_difference {
        None => Verdict::Inconclusive,
        Some(worst) if worst < GP_RIDGE_AGREE => Verdict::Supported,
        Some(worst) if worst < GP_RIDGE_CLOSE => Verdict::Partly,
        Some(_) => Verdict::NotSupported,
    }
}

/// Whether a posterior variance lies within the centring trap's bound, up to
/// [`CENTRING_BOUND_SLACK`].
pub fn within_centring_bound(posterior_variance: f64, bound: f64) -> bool {
    posterior_variance <= bound * (1.0 + CENTRING_BOUND_SLACK)
}

/// The centring trap: Supported when every (text, layer) is within its
/// bound.
pub fn centring_trap(within: usize, total: usize) -> Verdict {
    if total == 0 {
        Verdict::Inconclusive
    } else if within == total {
        Verdict::Supported
    } else {
        Verdict::NotSupported
    }
}

/// How the evidence words the trend of the gain with position.
pub fn gain_trend(rho: f64) -> &'static str {
    if rho < -GAIN_TREND_RHO {
        "it falls as the context grows"
    } else if rho > GAIN_TREND_RHO {
        "it rises with the position"
    } else {
        "no clear trend"
    }
}

/// Lasso against attention: the claim has two parts, that the selections
/// differ (mean Jaccard below [`LASSO_ATTENTION_JACCARD_DIFFER`]; NaN, no
/// curve, does not count) and that Lasso's tokens sometimes reconstruct the
/// new token better (a positive fraction of cases). Supported when both
/// hold, Partly when one does; `None` for the fraction: nothing compared.
pub fn lasso_attention(mean_jaccard: f64, fraction_lasso_better: Option<f64>) -> Verdict {
    let Some(fraction) = fraction_lasso_better else {
        return Verdict::Inconclusive;
    };
    let differ = mean_jaccard < LASSO_ATTENTION_JACCARD_DIFFER;
    let sometimes = fraction > 0.0;
    if differ && sometimes {
        Verdict::Supported
    } else if differ || sometimes {
        Verdict::Partly
    } else {
        Verdict::NotSupported
    }
}

/// How many of the (method, k) ratios to random are within
/// [`ABLATION_RATIO_SPREAD`].
pub fn ablation_within_spread(ratios: &[f64]) -> usize {
    ratios
        .iter()
        .filter(|r| **r <= ABLATION_RATIO_SPREAD)
        .count()
}

/// Removing tokens: information is spread when removing the selected tokens
/// is within [`ABLATION_RATIO_SPREAD`] of removing random ones for every
/// (method, k) (Supported), or for at least half of them (Partly).
pub fn ablation_remove(ratios: &[f64]) -> Verdict {
    let worst = ratios.iter().copied().fold(0.0, f64::max);
    if ratios.is_empty() {
        Verdict::Inconclusive
    } else if worst <= ABLATION_RATIO_SPREAD {
        Verdict::Supported
    } else if ablation_within_spread(ratios) * 2 >= ratios.len() {
        Verdict::Partly
    } else {
        Verdict::NotSupported
    }
}

/// How many of the (method, k) ratios to random are below
/// [`ABLATION_RATIO_BETTER`].
pub fn ablation_better(ratios: &[f64]) -> usize {
    ratios
        .iter()
        .filter(|r| **r < ABLATION_RATIO_BETTER)
        .count()
}

/// Keeping tokens: the selection preserves the output better than random for
/// every (method, k) (Supported) or for some (Partly).
pub fn ablation_keep(ratios: &[f64]) -> Verdict {
    let better = ablation_better(ratios);
    if ratios.is_empty() {
        Verdict::Inconclusive
    } else if better == ratios.len() {
        Verdict::Supported
    } else if better > 0 {
        Verdict::Partly
    } else {
        Verdict::NotSupported
    }
}

/// Sentence distances, from the ROC AUCs of the covariance distances at the
/// deepest layer: Supported when most separate (above [`AUC_SEPARATES`]),
/// Partly when any is above [`AUC_CHANCE`].
pub fn sentence_distance(covariance_aucs: &[f64]) -> Verdict {
    let separating = covariance_aucs
        .iter()
        .filter(|a| **a > AUC_SEPARATES)
        .count();
    if covariance_aucs.is_empty() {
        Verdict::Inconclusive
    } else if separating * 2 > covariance_aucs.len() {
        Verdict::Supported
    } else if covariance_aucs.iter().any(|a| *a > AUC_CHANCE) {
        Verdict::Partly
    } else {
        Verdict::NotSupported
    }
}

/// Layer similarity: the closest pair of layers aligns beyond chance when
/// its permutation p-value is below [`ALIGNMENT_ALPHA`]; without a null
/// (`permutations = 0`): Inconclusive.
pub fn alignment(p_value: Option<f64>) -> Verdict {
    match p_value {
        Some(p) if p < ALIGNMENT_ALPHA => Verdict::Supported,
        Some(_) => Verdict::NotSupported,
        None => Verdict::Inconclusive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::{Inconclusive, NotSupported, Partly, Supported};

    /// The largest float below `x` (for positive `x`).
    fn below(x: f64) -> f64 {
        f64::from_bits(x.to_bits() - 1)
    }

    #[test]
    fn power_law_thresholds() {
        let ci = Some((-0.2, -0.1));
        let straddles = Some((-0.1, 0.1));
        assert_eq!(power_law(3, Some(0.9), ci), Supported);
        assert_eq!(power_law(3, Some(below(0.9)), ci), Partly);
        assert_eq!(power_law(3, Some(0.99), straddles), Partly);
        assert_eq!(power_law(3, Some(0.5), straddles), Partly);
        assert_eq!(power_law(3, Some(below(0.5)), straddles), NotSupported);
        assert_eq!(power_law(3, Some(0.1), Some((0.1, 0.2))), Partly);
        // An interval that touches zero does not exclude it.
        assert_eq!(power_law(3, Some(0.95), Some((0.0, 0.2))), Partly);
        assert_eq!(power_law(2, Some(1.0), ci), Inconclusive);
        assert_eq!(power_law(5, Some(1.0), None), Inconclusive);
        assert_eq!(power_law(5, None, None), Inconclusive);
    }

    #[test]
    fn simulated_power_law_thresholds() {
        assert_eq!(simulated_power_law(3, 0.9), Supported);
        assert_eq!(simulated_power_law(3, below(0.9)), Partly);
        assert_eq!(simulated_power_law(3, 0.5), Partly);
        assert_eq!(simulated_power_law(3, below(0.5)), NotSupported);
        assert_eq!(simulated_power_law(2, 1.0), Inconclusive);
    }

    #[test]
    fn diff_erank_counts_models() {
        assert_eq!(diff_erank(0, 0), Inconclusive);
        assert_eq!(diff_erank(3, 3), Supported);
        assert_eq!(diff_erank(1, 3), Partly);
        assert_eq!(diff_erank(0, 3), NotSupported);
    }

    #[test]
    fn gp_ridge_thresholds() {
        assert_eq!(gp_ridge(None), Inconclusive);
        assert_eq!(gp_ridge(Some(0.0)), Supported);
        assert_eq!(gp_ridge(Some(below(1e-6))), Supported);
        assert_eq!(gp_ridge(Some(1e-6)), Partly);
        assert_eq!(gp_ridge(Some(below(1e-3))), Partly);
        assert_eq!(gp_ridge(Some(1e-3)), NotSupported);
        assert_eq!(gp_ridge(Some(f64::INFINITY)), NotSupported);
    }

    #[test]
    fn centring_trap_and_its_slack() {
        assert!(within_centring_bound(1.0, 1.0));
        assert!(within_centring_bound(1.0 + 0.5e-9, 1.0));
        assert!(!within_centring_bound(1.0 + 2e-9, 1.0));
        assert_eq!(centring_trap(0, 0), Inconclusive);
        assert_eq!(centring_trap(4, 4), Supported);
        assert_eq!(centring_trap(3, 4), NotSupported);
    }

    #[test]
    fn gain_trend_words() {
        assert_eq!(gain_trend(-0.31), "it falls as the context grows");
        assert_eq!(gain_trend(-0.3), "no clear trend");
        assert_eq!(gain_trend(0.3), "no clear trend");
        assert_eq!(gain_trend(0.31), "it rises with the position");
    }

    #[test]
    fn lasso_attention_thresholds() {
        assert_eq!(lasso_attention(below(0.5), Some(0.1)), Supported);
        assert_eq!(lasso_attention(0.5, Some(0.1)), Partly);
        assert_eq!(lasso_attention(below(0.5), Some(0.0)), Partly);
        assert_eq!(lasso_attention(0.5, Some(0.0)), NotSupported);
        assert_eq!(lasso_attention(f64::NAN, Some(0.0)), NotSupported);
        assert_eq!(lasso_attention(0.1, None), Inconclusive);
    }

    #[test]
    fn ablation_remove_thresholds() {
        assert_eq!(ablation_remove(&[]), Inconclusive);
        assert_eq!(ablation_remove(&[2.0, 0.5]), Supported);
        assert_eq!(ablation_remove(&[2.0 + 1e-12, 0.5]), Partly);
        assert_eq!(ablation_remove(&[3.0, 3.0, 1.0]), NotSupported);
        assert_eq!(ablation_remove(&[3.0, 1.0]), Partly);
        assert_eq!(ablation_within_spread(&[2.0, 2.1, 1.0]), 2);
    }

    #[test]
    fn ablation_keep_thresholds() {
        assert_eq!(ablation_keep(&[]), Inconclusive);
        assert_eq!(ablation_keep(&[below(1.0), 0.2]), Supported);
        assert_eq!(ablation_keep(&[1.0, 0.2]), Partly);
        assert_eq!(ablation_keep(&[1.0, 1.5]), NotSupported);
        assert_eq!(ablation_better(&[1.0, 0.99]), 1);
    }

    #[test]
    fn sentence_distance_thresholds() {
        assert_eq!(sentence_distance(&[]), Inconclusive);
        assert_eq!(sentence_distance(&[0.71, 0.71, 0.2]), Supported);
        // At the threshold a distance does not separate; half is not most.
        assert_eq!(sentence_distance(&[0.7, 0.7, 0.2]), Partly);
        assert_eq!(sentence_distance(&[0.8, 0.4]), Partly);
        assert_eq!(sentence_distance(&[0.5, 0.4]), NotSupported);
        assert_eq!(sentence_distance(&[0.51]), Partly);
    }

    #[test]
    fn alignment_threshold() {
        assert_eq!(alignment(Some(below(0.05))), Supported);
        assert_eq!(alignment(Some(0.05)), NotSupported);
        assert_eq!(alignment(None), Inconclusive);
    }
}
