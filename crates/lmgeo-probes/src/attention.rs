//! Attention against Lasso for selecting context tokens (method.md section 4).
//!
//! Given, over the same `t` context tokens, an attention-weight vector (the
//! query's probabilities, already aggregated over heads) and a Lasso
//! coefficient vector, [`compare`] reports for every `k = 1..=k_max` how the
//! two top-k sets overlap and how well each reconstructs the new token, plus
//! rank correlations over the full vectors. Attention ranks by value, Lasso
//! by `|coef|`; ties go to the lower index in both.

use faer::{Mat, MatRef};

use crate::checks;
use crate::error::{ProbeError, Result};
use crate::kernels::{dot, robust_norm};
use crate::lasso::token_ranking_unchecked;

/// How per-head attention probabilities become one weight per token
/// (method.md section 4: mean by default; per-head analysis is the caller
/// passing one head's row to [`compare`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadAggregation {
    /// Mean over heads.
    #[default]
    Mean,
    /// Maximum over heads.
    Max,
}

/// Aggregates the attention of one query over heads: `per_head` is
/// heads x context tokens (one row per head). Errors on an empty or
/// non-finite matrix.
pub fn aggregate_heads(per_head: MatRef<'_, f64>, method: HeadAggregation) -> Result<Vec<f64>> {
    checks::data_matrix("per-head attention", per_head)?;
    let heads = per_head.nrows() as f64;
    Ok((0..per_head.ncols())
        .map(|j| {
            let column = (0..per_head.nrows()).map(|h| per_head[(h, j)]);
            match method {
                HeadAggregation::Mean => column.sum::<f64>() / heads,
                HeadAggregation::Max => column.fold(f64::NEG_INFINITY, f64::max),
            }
        })
        .collect())
}

/// One `k` of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct TopKComparison {
    /// Size of the two sets.
    pub k: usize,
    /// Attention's top-k token indices, best first.
    pub attention_tokens: Vec<usize>,
    /// Lasso's top-k token indices, best first.
    pub lasso_tokens: Vec<usize>,
    /// `|A ∩ L|`.
    pub overlap: usize,
    /// `|A ∩ L| / |A ∪ L|`.
    pub jaccard: f64,
    /// `|A ∩ L| / k`: the share of Lasso's picks that attention also picks
    /// (equal to recall, the sets having the same size).
    pub precision: f64,
    /// `||z - C_A^T beta|| / ||z||` for the least-squares `beta` on
    /// attention's rows only.
    pub attention_residual: f64,
    /// The same for Lasso's rows.
    pub lasso_residual: f64,
}

/// The full comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionComparison {
    /// One entry per `k = 1..=k_max`.
    pub top_k: Vec<TopKComparison>,
    /// Spearman correlation of attention and `|coef|` (average ranks for
    /// ties); `None` when either vector is constant.
    pub spearman: Option<f64>,
    /// Kendall's tau-b of attention and `|coef|`; `None` when either vector
    /// is constant.
    pub kendall_tau_b: Option<f64>,
    /// Number of non-zero Lasso coefficients: beyond it the Lasso top-k
    /// continues with the zero-coefficient tokens closest to entering the
    /// support (see [`crate::lasso::token_ranking`]).
    pub lasso_nonzero: usize,
    /// Every context token in Lasso's order ([`crate::lasso::token_ranking`]).
    pub lasso_order: Vec<usize>,
}

/// Compares attention weights and Lasso coefficients over the rows of
/// `context` (t x d) for the new token `new` (length d).
///
/// Errors: lengths differ, non-finite values, `k_max` outside `1..=t`, or a
/// zero `new`.
pub fn compare(
    attention: &[f64],
    coef: &[f64],
    context: MatRef<'_, f64>,
    new: &[f64],
    k_max: usize,
) -> Result<AttentionComparison> {
    checks::data_matrix("context", context)?;
    let t = context.nrows();
    checks::same_len("attention weights (= context rows)", t, attention.len())?;
    checks::same_len("Lasso coefficients (= context rows)", t, coef.len())?;
    checks::same_len(
        "new token length (= context columns)",
        context.ncols(),
        new.len(),
    )?;
    checks::finite_vector("attention weights", attention)?;
    checks::finite_vector("Lasso coefficients", coef)?;
    checks::finite_vector("new token", new)?;
    if k_max == 0 || k_max > t {
        return Err(ProbeError::InvalidParameter {
            name: "k_max",
            value: k_max as f64,
            reason: "must lie in 1..=number of context tokens",
        });
    }
    if robust_norm(new.iter().copied()) == 0.0 {
        return Err(ProbeError::Degenerate(
            "the new token is zero: its relative residual is undefined".into(),
        ));
    }
    let attention_order = rank_by_value(attention);
    let lasso_order = token_ranking_unchecked(context, new, coef);
    let magnitudes: Vec<f64> = coef.iter().map(|c| c.abs()).collect();

    let mut top_k = Vec::with_capacity(k_max);
    for k in 1..=k_max {
        let a = &attention_order[..k];
        let l = &lasso_order[..k];
        let overlap = a.iter().filter(|i| l.contains(i)).count();
        top_k.push(TopKComparison {
            k,
            attention_tokens: a.to_vec(),
            lasso_tokens: l.to_vec(),
            overlap,
            jaccard: overlap as f64 / (2 * k - overlap) as f64,
            precision: overlap as f64 / k as f64,
            attention_residual: relative_residual_unchecked(context, a, new)?,
            lasso_residual: relative_residual_unchecked(context, l, new)?,
        });
    }
    Ok(AttentionComparison {
        top_k,
        spearman: spearman_unchecked(attention, &magnitudes),
        kendall_tau_b: kendall_tau_b_unchecked(attention, &magnitudes),
        lasso_nonzero: coef.iter().filter(|c| **c != 0.0).count(),
        lasso_order,
    })
}

/// Indices by decreasing value, ties by index.
fn rank_by_value(values: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    idx
}

/// `||z - C_S^T beta|| / ||z||` where `beta` is the least-squares fit of `z`
/// on the rows `rows` of `context`. Rank-deficient selections (repeated or
/// collinear rows) are handled: the fit projects onto the span of the
/// selected rows, computed by a thin SVD with the usual rank cut-off
/// `max(d, k) * eps * s_max`.
pub fn relative_residual(context: MatRef<'_, f64>, rows: &[usize], new: &[f64]) -> Result<f64> {
    checks::context_and_token(context, new)?;
    if let Some(&bad) = rows.iter().find(|&&r| r >= context.nrows()) {
        return Err(ProbeError::SizeMismatch {
            what: "selected row index (must be < context rows)",
            expected: context.nrows(),
            found: bad,
        });
    }
    if robust_norm(new.iter().copied()) == 0.0 {
        return Err(ProbeError::Degenerate(
            "the new token is zero: its relative residual is undefined".into(),
        ));
    }
    relative_residual_unchecked(context, rows, new)
}

fn relative_residual_unchecked(
    context: MatRef<'_, f64>,
    rows: &[usize],
    new: &[f64],
) -> Result<f64> {
    let d = context.ncols();
    let z_norm = robust_norm(new.iter().copied());
    if rows.is_empty() {
        return Ok(1.0);
    }
    let k = rows.len();
    let basis = Mat::from_fn(d, k, |i, j| context[(rows[j], i)]);
    let svd = basis
        .thin_svd()
        .map_err(|e| ProbeError::Numerical(format!("SVD of the selected rows failed: {e:?}")))?;
    let s = svd.S().column_vector();
    let s_max = (0..s.nrows()).map(|i| s[i]).fold(0.0, f64::max);
    let cutoff = d.max(k) as f64 * f64::EPSILON * s_max;
    let u = svd.U();
    let mut residual = new.to_vec();
    for j in 0..s.nrows() {
        if s[j] > cutoff {
            let col: Vec<f64> = (0..d).map(|i| u[(i, j)]).collect();
            let c = dot(&col, &residual);
            // Projecting the running residual (modified Gram-Schmidt order)
            // keeps orthogonality errors from accumulating.
            for (r, u_ij) in residual.iter_mut().zip(&col) {
                *r -= c * u_ij;
            }
        }
    }
    Ok(robust_norm(residual.into_iter()) / z_norm)
}

/// Ranks from 1 to n, tied values sharing the average of their ranks.
pub(crate) fn average_ranks(values: &[f64]) -> Vec<f64> {
    let n = values.len();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; n];
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && values[idx[end]] == values[idx[start]] {
            end += 1;
        }
        // Positions start..end hold ranks start+1..=end; their mean:
        let rank = (start + end + 1) as f64 / 2.0;
        for &i in &idx[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return None;
    }
    Some((sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0))
}

fn paired(x: &[f64], y: &[f64]) -> Result<()> {
    checks::same_len("second vector (= first vector length)", x.len(), y.len())?;
    checks::finite_vector("first vector", x)?;
    checks::finite_vector("second vector", y)?;
    if x.len() < 2 {
        return Err(ProbeError::Degenerate(
            "a rank correlation needs at least 2 pairs".into(),
        ));
    }
    Ok(())
}

/// Spearman's rank correlation (Pearson correlation of average ranks).
/// `Ok(None)` when either vector is constant.
pub fn spearman(x: &[f64], y: &[f64]) -> Result<Option<f64>> {
    paired(x, y)?;
    Ok(spearman_unchecked(x, y))
}

fn spearman_unchecked(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() < 2 {
        return None;
    }
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Kendall's tau-b, `(concordant - discordant) / sqrt((n0 - ties_x)(n0 - ties_y))`
/// with `n0 = n (n - 1) / 2`; `O(n^2)`, fine for context lengths.
/// `Ok(None)` when either vector is constant.
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> Result<Option<f64>> {
    paired(x, y)?;
    Ok(kendall_tau_b_unchecked(x, y))
}

fn kendall_tau_b_unchecked(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len();
    let (mut score, mut ties_x, mut ties_y) = (0i64, 0u64, 0u64);
    for i in 0..n {
        for j in (i + 1)..n {
            let sx = (x[i] - x[j]).signum() * f64::from(x[i] != x[j]);
            let sy = (y[i] - y[j]).signum() * f64::from(y[i] != y[j]);
            ties_x += u64::from(x[i] == x[j]);
            ties_y += u64::from(y[i] == y[j]);
            score += (sx * sy) as i64;
        }
    }
    let n0 = (n * (n.saturating_sub(1)) / 2) as u64;
    let denominator = ((n0 - ties_x) as f64) * ((n0 - ties_y) as f64);
    if denominator == 0.0 {
        return None;
    }
    Some((score as f64 / denominator.sqrt()).clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::mat;

    #[test]
    fn heads_aggregate_by_mean_or_max() {
        let per_head = mat![[0.5, 0.25, 0.25], [0.0, 0.5, 0.5]];
        assert_eq!(
            aggregate_heads(per_head.as_ref(), HeadAggregation::Mean).unwrap(),
            vec![0.25, 0.375, 0.375]
        );
        assert_eq!(
            aggregate_heads(per_head.as_ref(), HeadAggregation::Max).unwrap(),
            vec![0.5, 0.5, 0.5]
        );
        let bad = mat![[0.5, f64::NAN]];
        assert!(aggregate_heads(bad.as_ref(), HeadAggregation::Mean).is_err());
    }

    #[test]
    fn average_ranks_share_ties() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 10.0, 5.0]),
            vec![2.5, 4.0, 2.5, 1.0]
        );
    }

    #[test]
    fn perfect_and_reversed_orders() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let y = [10.0, 20.0, 30.0, 40.0];
        let r: Vec<f64> = y.iter().rev().copied().collect();
        let close = |v: Option<f64>, want: f64| (v.unwrap() - want).abs() < 1e-15;
        assert!(close(spearman(&x, &y).unwrap(), 1.0));
        assert!(close(kendall_tau_b(&x, &y).unwrap(), 1.0));
        assert!(close(spearman(&x, &r).unwrap(), -1.0));
        assert!(close(kendall_tau_b(&x, &r).unwrap(), -1.0));
        assert_eq!(spearman(&x, &[1.0; 4]).unwrap(), None);
        assert_eq!(kendall_tau_b(&[2.0; 4], &x).unwrap(), None);
        assert!(spearman(&[1.0], &[2.0]).is_err());
    }

    #[test]
    fn residual_of_spanning_rows_is_zero_and_of_orthogonal_rows_one() {
        let c = mat![[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]];
        let z = [2.0, -3.0, 0.0];
        assert!(relative_residual(c.as_ref(), &[0, 1], &z).unwrap() < 1e-15);
        // Rows 0 and 2 span the same plane; row 2 twice is rank one.
        assert!(relative_residual(c.as_ref(), &[2, 0], &z).unwrap() < 1e-15);
        let dup = relative_residual(c.as_ref(), &[2, 2], &z).unwrap();
        // Projection of (2, -3) on (1, 1)/sqrt2 is -1/sqrt2; residual (2.5, -2.5).
        assert!((dup - (12.5f64).sqrt() / 13f64.sqrt()).abs() < 1e-15);
        assert!(relative_residual(c.as_ref(), &[3], &z).is_err());
    }

    #[test]
    fn compare_counts_overlaps() {
        let c = mat![
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
            [1.0, 1.0, 1.0]
        ];
        let z = [1.0, 2.0, 0.0];
        let attention = [0.1, 0.5, 0.1, 0.3];
        let coef = [1.0, 2.0, 0.0, 0.0];
        let cmp = compare(&attention, &coef, c.as_ref(), &z, 3).unwrap();
        assert_eq!(cmp.lasso_nonzero, 2);
        let k2 = &cmp.top_k[1];
        assert_eq!(k2.attention_tokens, vec![1, 3]);
        assert_eq!(k2.lasso_tokens, vec![1, 0]);
        assert_eq!(k2.overlap, 1);
        assert!((k2.jaccard - 1.0 / 3.0).abs() < 1e-15);
        assert_eq!(k2.precision, 0.5);
        assert!(k2.lasso_residual < 1e-15);
        assert!(k2.attention_residual > 0.1);
        assert!(compare(&attention, &coef, c.as_ref(), &z, 5).is_err());
        assert!(compare(&attention, &coef, c.as_ref(), &[0.0; 3], 2).is_err());
        assert!(compare(&attention[..3], &coef, c.as_ref(), &z, 2).is_err());
    }
}
