//! How much a model's output moves when its context changes (method.md
//! section 5): the cosine distance between two hidden states, and the KL
//! divergence and top-1 agreement of two next-token distributions given as
//! logits.

use crate::checks;
use crate::error::Result;

/// `1 - a.b / (|a| |b|)`, in `[0, 2]` up to round-off (not clamped). A zero
/// vector counts as orthogonal to everything (distance 1) instead of making
/// the ratio undefined: a hidden state that vanishes has changed.
///
/// Unlike [`crate::distance::mean_cosine_distance`] (which scales both
/// vectors first, so that huge entries cannot overflow, and errors for a
/// zero vector) this is the plain formula, summed in order.
pub fn cosine_distance(a: &[f64], b: &[f64]) -> Result<f64> {
    checks::data_vector("first vector", a)?;
    checks::same_len("second vector length (= first)", a.len(), b.len())?;
    checks::finite_vector("second vector", b)?;
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x.powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x.powi(2)).sum::<f64>().sqrt();
    checks::finite_output(
        "cosine distance",
        1.0 - dot / (na * nb).max(f64::MIN_POSITIVE),
    )
}

/// `log softmax(x)_i = x_i - log sum_j exp(x_j)`, with the sum taken after
/// subtracting the largest logit so that no exponential overflows.
pub fn log_softmax(logits: &[f64]) -> Result<Vec<f64>> {
    checks::data_vector("logits", logits)?;
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|v| (v - max).exp()).sum();
    let log_sum = max + sum.ln();
    Ok(logits.iter().map(|v| v - log_sum).collect())
}

/// `KL(p || q) = sum_i p_i (log p_i - log q_i)` from log-probabilities (as
/// [`log_softmax`] gives them), in nats. Round-off that makes the sum of two
/// equal distributions slightly negative is clamped to 0.
pub fn kl_divergence(log_p: &[f64], log_q: &[f64]) -> Result<f64> {
    checks::data_vector("log p", log_p)?;
    checks::same_len("log q length (= log p)", log_p.len(), log_q.len())?;
    checks::finite_vector("log q", log_q)?;
    Ok(log_p
        .iter()
        .zip(log_q)
        .map(|(a, b)| a.exp() * (a - b))
        .sum::<f64>()
        .max(0.0))
}

/// The index of the largest value; of equal maxima, the last.
pub fn argmax(values: &[f64]) -> Result<usize> {
    checks::data_vector("values", values)?;
    Ok(values
        .iter()
        .enumerate()
        .max_by(|x, y| x.1.total_cmp(y.1))
        .map(|(i, _)| i)
        .expect("non-empty"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProbeError;

    #[test]
    fn log_softmax_follows_its_definition() {
        let l = log_softmax(&[0.0, 2.0f64.ln()]).unwrap();
        assert!((l[0] - (1.0f64 / 3.0).ln()).abs() < 1e-15);
        assert!((l[1] - (2.0f64 / 3.0).ln()).abs() < 1e-15);
        // Shifting the logits changes nothing, even far from zero.
        let shifted = log_softmax(&[1000.0, 1000.0 + 2.0f64.ln()]).unwrap();
        assert!((shifted[1] - l[1]).abs() < 1e-12);
        assert!(matches!(log_softmax(&[]), Err(ProbeError::Empty { .. })));
    }

    #[test]
    fn kl_matches_its_closed_form() {
        // p = (1/2, 1/2), q = (1/3, 2/3): KL = 0.5 ln(3/2) + 0.5 ln(3/4).
        let p = log_softmax(&[0.0, 0.0]).unwrap();
        let q = log_softmax(&[0.0, 2.0f64.ln()]).unwrap();
        let expected = 0.5 * 1.5f64.ln() + 0.5 * 0.75f64.ln();
        assert!((kl_divergence(&p, &q).unwrap() - expected).abs() < 1e-15);
        assert_eq!(kl_divergence(&p, &p).unwrap(), 0.0);
        assert!(matches!(
            kl_divergence(&p, &q[..1]),
            Err(ProbeError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn cosine_distance_matches_closed_forms() {
        assert!(cosine_distance(&[1.0, 0.0], &[2.0, 0.0]).unwrap().abs() < 1e-15);
        assert_eq!(cosine_distance(&[1.0, 0.0], &[0.0, 3.0]).unwrap(), 1.0);
        // Opposite: 2, up to round-off (|a| |b| = sqrt(2)^2; not clamped).
        let opposite = cosine_distance(&[1.0, 1.0], &[-1.0, -1.0]).unwrap();
        assert!((opposite - 2.0).abs() < 1e-15, "{opposite}");
        // 60 degrees: 1 - cos = 1/2.
        let d = cosine_distance(&[1.0, 0.0], &[0.5, 0.75f64.sqrt()]).unwrap();
        assert!((d - 0.5).abs() < 1e-15);
        assert_eq!(cosine_distance(&[0.0, 0.0], &[1.0, 0.0]).unwrap(), 1.0);
        assert!(matches!(
            cosine_distance(&[1.0], &[f64::NAN]),
            Err(ProbeError::NonFinite { .. })
        ));
    }

    #[test]
    fn argmax_takes_the_last_of_equal_maxima() {
        assert_eq!(argmax(&[0.1, 0.7, 0.2]).unwrap(), 1);
        assert_eq!(argmax(&[0.5, 0.5, 0.1]).unwrap(), 1);
        assert!(argmax(&[]).is_err());
    }
}
