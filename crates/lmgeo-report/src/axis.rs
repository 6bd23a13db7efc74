//! Numeric and categorical axes with tick placement of our own.
//!
//! plotters' logarithmic coordinate puts ticks only at powers of ten, so an
//! axis spanning less than a decade (a normalised entropy between 0.3 and
//! 0.9, say) gets no tick at all. These axes pick ticks themselves and plug
//! into plotters through its `Ranged` trait.

use std::ops::Range;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};

use crate::error::FigureError;

/// How far (as a fraction of the data span) the axis extends past the data,
/// so markers on the extremes are not cut in half by the frame.
const PAD_FRACTION: f64 = 0.05;

/// A continuous axis, linear or base-10 logarithmic, with precomputed ticks.
#[derive(Debug, Clone)]
pub(crate) struct NumAxis {
    lo: f64,
    hi: f64,
    log: bool,
    major: Vec<f64>,
    minor: Vec<f64>,
    /// Decimals for plain tick labels on a linear axis, so that 0, 0.5, 1
    /// print as 0.0, 0.5, 1.0 and line up. `None` (log axes, whose ticks
    /// differ in magnitude) prints each tick as short as it can be.
    decimals: Option<usize>,
}

impl NumAxis {
    /// An axis covering `values` (all finite, and positive if `log`), padded
    /// on both sides. `include_zero` forces 0 into a linear range (bar
    /// charts) without padding past it.
    pub(crate) fn covering(
        values: impl IntoIterator<Item = f64>,
        log: bool,
        include_zero: bool,
    ) -> Result<NumAxis, FigureError> {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for v in values {
            if v.is_finite() && (!log || v > 0.0) {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if lo > hi {
            return Err(FigureError::Internal(
                "axis requested for no finite values".into(),
            ));
        }
        if log {
            let (llo, lhi) = (lo.log10(), hi.log10());
            let (llo, lhi) = if lhi - llo < 1e-12 {
                // One value (or all equal): show half a decade either side.
                (llo - 0.5, lhi + 0.5)
            } else {
                let pad = (lhi - llo) * PAD_FRACTION;
                (llo - pad, lhi + pad)
            };
            let (lo, hi) = (10f64.powf(llo), 10f64.powf(lhi));
            // Padding can push the ends of extreme data to 0 or infinity.
            if !(lo > 0.0 && hi.is_finite()) {
                return Err(FigureError::RangeOverflow);
            }
            Ok(NumAxis::log(lo, hi))
        } else {
            if include_zero {
                lo = lo.min(0.0);
                hi = hi.max(0.0);
            }
            let span = hi - lo;
            if !span.is_finite() {
                return Err(FigureError::RangeOverflow);
            }
            let (mut plo, mut phi) = if span <= hi.abs().max(lo.abs()) * 1e-12 || span == 0.0 {
                let half = if hi == 0.0 { 1.0 } else { hi.abs() * 0.1 };
                (lo - half, hi + half)
            } else {
                let pad = span * PAD_FRACTION;
                (lo - pad, hi + pad)
            };
            // A bar chart's bars start at zero: padding below zero would float
            // them above the frame for no reason.
            if include_zero {
                if lo == 0.0 {
                    plo = 0.0;
                }
                if hi == 0.0 {
                    phi = 0.0;
                }
            }
            if !(plo.is_finite() && phi.is_finite()) {
                return Err(FigureError::RangeOverflow);
            }
            Ok(NumAxis::linear(plo, phi))
        }
    }

    pub(crate) fn linear(lo: f64, hi: f64) -> NumAxis {
        let (major, minor, decimals) = linear_ticks(lo, hi, 6.0);
        NumAxis {
            lo,
            hi,
            log: false,
            major,
            minor,
            decimals,
        }
    }

    pub(crate) fn log(lo: f64, hi: f64) -> NumAxis {
        let (major, minor, decimals) = log_ticks(lo, hi);
        NumAxis {
            lo,
            hi,
            log: true,
            major,
            minor,
            decimals,
        }
    }

    pub(crate) fn lo(&self) -> f64 {
        self.lo
    }

    pub(crate) fn hi(&self) -> f64 {
        self.hi
    }

    pub(crate) fn major_ticks(&self) -> &[f64] {
        &self.major
    }

    /// Position of `v` along the axis as a fraction (0 at `lo`, 1 at `hi`);
    /// outside [0, 1] when `v` is off the axis, NaN when it cannot be placed.
    pub(crate) fn fraction(&self, v: f64) -> f64 {
        if self.log {
            if v <= 0.0 {
                return f64::NAN;
            }
            (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    pub(crate) fn label(&self, v: f64) -> String {
        format_tick(v, self.decimals)
    }
}

impl Ranged for NumAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = self.fraction(*value);
        let px = f64::from(limit.0) + t * f64::from(limit.1 - limit.0);
        // Saturating float-to-int keeps a stray value from wrapping around;
        // callers clip to the axis before drawing anyway.
        px.round().clamp(-1e6, 1e6) as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        let ticks = if hint.weight().allow_light_points() {
            &self.minor
        } else {
            &self.major
        };
        let max = hint.max_num_points().max(1);
        if ticks.len() <= max {
            ticks.clone()
        } else if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            let step = ticks.len().div_ceil(max);
            ticks.iter().copied().step_by(step).collect()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for NumAxis {
    fn format_ext(&self, value: &f64) -> String {
        self.label(*value)
    }
}

/// "Nice" tick step (1, 2 or 5 times a power of ten) giving about `target`
/// ticks over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn multiples_in(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step - 1e-9).ceil();
    let last = (hi / step + 1e-9).floor();
    if !(first.is_finite() && last.is_finite()) || last - first > 1000.0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut k = first;
    while k <= last {
        let v = k * step;
        // k * step is computed afresh (no accumulated error) and labels are
        // printed with fixed decimals; only zero needs snapping, or it may
        // come out as 1e-17 and print in scientific notation.
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        k += 1.0;
    }
    out
}

fn decimals_for(step: f64) -> usize {
    if step >= 1.0 {
        return 0;
    }
    let mut d = (-step.log10()).floor().max(0.0) as usize;
    // 0.25 needs two decimals although log10 says one.
    while d < 12 {
        let scaled = step * 10f64.powi(d as i32);
        if (scaled - scaled.round()).abs() < 1e-6 * scaled.abs().max(1.0) {
            break;
        }
        d += 1;
    }
    d
}

type Ticks = (Vec<f64>, Vec<f64>, Option<usize>);

fn linear_ticks(lo: f64, hi: f64, target: f64) -> Ticks {
    let span = hi - lo;
    if !(span > 0.0 && span.is_finite()) {
        return (vec![lo], Vec::new(), None);
    }
    let step = nice_step(span, target);
    let major = multiples_in(lo, hi, step);
    let leading = (step / 10f64.powf(step.log10().floor())).round();
    let minor_step = if leading == 2.0 {
        step / 4.0
    } else {
        step / 5.0
    };
    let minor = multiples_in(lo, hi, minor_step)
        .into_iter()
        .filter(|m| major.iter().all(|t| (t - m).abs() > minor_step * 1e-6))
        .collect();
    (major, minor, Some(decimals_for(step)))
}

fn log_ticks(lo: f64, hi: f64) -> Ticks {
    let (llo, lhi) = (lo.log10(), hi.log10());
    let k0 = (llo - 1e-9).ceil() as i32;
    let k1 = (lhi + 1e-9).floor() as i32;
    let decades = k1 - k0 + 1;
    let in_range = |v: f64| v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9);
    if decades >= 3 {
        // Keep about eight labelled decades at most; skipped decades become
        // minor ticks, otherwise 2..9 times each power are.
        let every = (decades as f64 / 8.0).ceil() as i32;
        let mut major = Vec::new();
        let mut minor = Vec::new();
        for k in (k0 - 1)..=(k1 + 1) {
            let p = 10f64.powi(k);
            if in_range(p) {
                if (k - k0).rem_euclid(every) == 0 {
                    major.push(p);
                } else {
                    minor.push(p);
                }
            }
            if every == 1 {
                for m in 2..=9 {
                    let v = f64::from(m) * p;
                    if in_range(v) {
                        minor.push(v);
                    }
                }
            }
        }
        return (major, minor, None);
    }
    // Fewer than three powers of ten in view: label 1, 2 and 5 times powers of ten.
    let mut major = Vec::new();
    let mut minor = Vec::new();
    for k in (llo.floor() as i32 - 1)..=(lhi.ceil() as i32) {
        let p = 10f64.powi(k);
        for m in 1..=9 {
            let v = f64::from(m) * p;
            if in_range(v) {
                if matches!(m, 1 | 2 | 5) {
                    major.push(v);
                } else {
                    minor.push(v);
                }
            }
        }
    }
    if major.len() >= 3 {
        return (major, minor, None);
    }
    // Narrower still (e.g. 0.31 to 0.38): linear ticks read best there, and
    // on so short a stretch the log mapping barely bends them.
    linear_ticks(lo, hi, 4.0)
}

const SUPERSCRIPTS: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];

fn superscript(n: i32) -> String {
    let mut s = String::new();
    if n < 0 {
        s.push('⁻');
    }
    for c in n.unsigned_abs().to_string().chars() {
        let d = c.to_digit(10).unwrap_or(0) as usize;
        s.push(SUPERSCRIPTS[d]);
    }
    s
}

/// Tick label: plain decimals in a readable range, powers of ten otherwise
/// ("10⁸", "2×10⁻⁵").
pub(crate) fn format_tick(v: f64, decimals: Option<usize>) -> String {
    let a = v.abs();
    if v == 0.0 || (1e-3..1e5).contains(&a) {
        return match decimals {
            Some(d) => format!("{:.*}", d, v),
            None => {
                let s = format!("{v:.6}");
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            }
        };
    }
    let e = a.log10().floor() as i32;
    let m = v / 10f64.powi(e);
    let mr = (m * 100.0).round() / 100.0;
    if (mr - 1.0).abs() < 1e-9 {
        format!("10{}", superscript(e))
    } else if (mr + 1.0).abs() < 1e-9 {
        format!("-10{}", superscript(e))
    } else {
        let m = format!("{mr:.2}");
        let m = m.trim_end_matches('0').trim_end_matches('.');
        format!("{m}×10{}", superscript(e))
    }
}

/// A number in prose (legends, cell annotations): three significant digits.
pub(crate) fn format_number(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".into()
        } else if v > 0.0 {
            "∞".into()
        } else {
            "-∞".into()
        };
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if (1e-3..1e5).contains(&a) {
        let e = a.log10().floor() as i32;
        let decimals = (2 - e).max(0) as usize;
        let s = format!("{:.*}", decimals, v);
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{v:.2e}")
    }
}

/// A categorical axis: `n` slots of unit width, labels at the slot centres.
#[derive(Debug, Clone)]
pub(crate) struct CatAxis {
    n: usize,
    /// Heatmap rows run top to bottom, while plotters' y grows upwards.
    reversed: bool,
}

impl CatAxis {
    pub(crate) fn new(n: usize, reversed: bool) -> CatAxis {
        CatAxis { n, reversed }
    }

    /// Lower edge, in axis units, of the slot holding item `i`.
    pub(crate) fn slot(&self, i: usize) -> f64 {
        if self.reversed {
            (self.n - 1 - i) as f64
        } else {
            i as f64
        }
    }
}

impl Ranged for CatAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = *value / self.n.max(1) as f64;
        let px = f64::from(limit.0) + t * f64::from(limit.1 - limit.0);
        px.round().clamp(-1e6, 1e6) as i32
    }

    // Category labels are drawn by the figure itself (they need rotation,
    // wrapping or thinning), so the mesh gets no key points.
    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        Vec::new()
    }

    fn range(&self) -> Range<f64> {
        0.0..self.n.max(1) as f64
    }
}

impl ValueFormatter<f64> for CatAxis {
    fn format_ext(&self, _value: &f64) -> String {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                "{got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn linear_ticks_are_nice_and_inside() {
        let a = NumAxis::linear(-0.3, 12.4);
        assert_eq!(a.major_ticks(), &[0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
        let labels: Vec<String> = a.major_ticks().iter().map(|&v| a.label(v)).collect();
        assert_eq!(labels, ["0", "2", "4", "6", "8", "10", "12"]);
        let b = NumAxis::linear(0.0, 1.0);
        let labels: Vec<String> = b.major_ticks().iter().map(|&v| b.label(v)).collect();
        assert_eq!(labels, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
    }

    #[test]
    fn log_ticks_over_many_decades_are_powers_of_ten() {
        let a = NumAxis::log(5e6, 2e10);
        assert_eq!(a.major_ticks(), &[1e7, 1e8, 1e9, 1e10]);
        let labels: Vec<String> = a.major_ticks().iter().map(|&v| a.label(v)).collect();
        assert_eq!(labels, ["10⁷", "10⁸", "10⁹", "10¹⁰"]);
        // 2e7 .. 9e9 are minor ticks.
        assert!(a.minor.iter().any(|&m| (m - 2e7).abs() < 1.0));
    }

    #[test]
    fn log_axis_narrower_than_a_decade_still_has_ticks() {
        let a = NumAxis::log(0.3, 0.9);
        assert!(a.major_ticks().len() >= 2, "{:?}", a.major_ticks());
        assert!(a.major_ticks().iter().all(|&t| (0.3..=0.9).contains(&t)));
        let b = NumAxis::log(0.15, 0.9);
        assert_close(b.major_ticks(), &[0.2, 0.4, 0.6, 0.8]);
        let c = NumAxis::log(0.05, 1.2);
        assert_eq!(c.major_ticks(), &[0.05, 0.1, 0.2, 0.5, 1.0]);
        let labels: Vec<String> = c.major_ticks().iter().map(|&v| c.label(v)).collect();
        assert_eq!(labels, ["0.05", "0.1", "0.2", "0.5", "1"]);
    }

    #[test]
    fn very_wide_log_axis_thins_decades() {
        let a = NumAxis::log(1e-20, 1e20);
        assert!(a.major_ticks().len() <= 9, "{:?}", a.major_ticks());
        assert!(a.major_ticks().len() >= 5);
    }

    #[test]
    fn covering_pads_and_handles_degenerate_ranges() {
        let a = NumAxis::covering([2.0, 2.0], false, false).unwrap();
        assert!(a.lo() < 2.0 && a.hi() > 2.0);
        let z = NumAxis::covering([0.0], false, false).unwrap();
        assert!(z.lo() < 0.0 && z.hi() > 0.0);
        let l = NumAxis::covering([100.0], true, false).unwrap();
        assert!(l.lo() < 100.0 && l.hi() > 100.0 && l.lo() > 0.0);
        // Non-positive values are ignored by a log axis, not turned into -inf.
        let m = NumAxis::covering([0.0, -1.0, 10.0, 1000.0], true, false).unwrap();
        assert!(m.lo() > 1.0 && m.lo() < 10.0);
        let bars = NumAxis::covering([0.6, 0.9], false, true).unwrap();
        assert_eq!(bars.lo(), 0.0);
        assert!(NumAxis::covering([f64::NAN], false, false).is_err());
        assert!(matches!(
            NumAxis::covering([-f64::MAX, f64::MAX], false, false),
            Err(FigureError::RangeOverflow)
        ));
        assert!(matches!(
            NumAxis::covering([1.0, f64::MAX], false, false),
            Err(FigureError::RangeOverflow)
        ));
        assert!(matches!(
            NumAxis::covering([1e-320, 1.0, f64::MAX], true, false),
            Err(FigureError::RangeOverflow)
        ));
    }

    #[test]
    fn mapping_round_trips() {
        let a = NumAxis::log(1.0, 1000.0);
        assert!((a.fraction(10.0) - 1.0 / 3.0).abs() < 1e-12);
        assert!((a.fraction(100.0) - 2.0 / 3.0).abs() < 1e-12);
        assert!(a.fraction(0.0).is_nan());
        assert_eq!(a.map(&1000.0, (0, 300)), 300);
        assert_eq!(a.map(&10.0, (0, 300)), 100);
    }

    #[test]
    fn tick_and_number_formats() {
        assert_eq!(format_tick(1e8, None), "10⁸");
        assert_eq!(format_tick(2e-5, None), "2×10⁻⁵");
        assert_eq!(format_tick(0.25, Some(2)), "0.25");
        assert_eq!(format_tick(0.0, Some(1)), "0.0");
        assert_eq!(format_tick(20.0, None), "20");
        assert_eq!(format_number(0.97123), "0.971");
        assert_eq!(format_number(-0.12), "-0.12");
        assert_eq!(format_number(1234.6), "1235");
        assert_eq!(format_number(f64::NAN), "NaN");
        assert_eq!(format_number(1.5e-7), "1.50e-7");
    }
}
