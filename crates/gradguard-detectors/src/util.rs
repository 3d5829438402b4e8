//! Small helpers shared by the detectors and the diagnosis.

use gradguard_core::ParamStats;

/// Formats a measured value for a sentence: plain for moderate magnitudes, scientific
/// otherwise, and `NaN` / `inf` as such.
pub(crate) fn fmt_num(v: f64) -> String {
    gradguard_core::float::fmt_short(v)
}

/// A parameter check for [`gradguard_core::Detector::validate`]: `Err("`name` must be
/// expected, got value")` unless `ok`.
pub(crate) fn require(
    ok: bool,
    name: &str,
    expected: &str,
    value: impl std::fmt::Display,
) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` must be {expected}, got {value}"))
    }
}

/// [`require`] for a parameter that must be a finite number > 0.
pub(crate) fn positive(name: &str, v: f64) -> Result<(), String> {
    require(v.is_finite() && v > 0.0, name, "a finite number > 0", v)
}

/// [`require`] for a parameter that must be a finite number >= 0.
pub(crate) fn non_negative(name: &str, v: f64) -> Result<(), String> {
    require(v.is_finite() && v >= 0.0, name, "a finite number >= 0", v)
}

/// The layer a tensor belongs to: its name up to the last `.` (`layers.0.bias` -> `layers.0`).
pub(crate) fn layer_prefix(name: &str) -> &str {
    match name.rfind('.') {
        Some(i) => &name[..i],
        None => name,
    }
}

/// Whether `hay` contains the lowercase ASCII `needle`, ignoring ASCII case (no allocation).
pub(crate) fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Index of the tensor with the largest finite-or-infinite gradient norm (NaN ignored).
pub(crate) fn argmax_grad_norm(params: &[ParamStats]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, p) in params.iter().enumerate() {
        if p.grad_norm.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if b >= p.grad_norm => {}
            _ => best = Some((i, p.grad_norm)),
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradguard_core::window::median_in_place;
    use gradguard_core::Role;

    #[test]
    fn formats_and_medians() {
        assert_eq!(fmt_num(2.5), "2.5");
        assert_eq!(fmt_num(1.0), "1");
        assert_eq!(fmt_num(31415.9), "3.14e4");
        assert_eq!(fmt_num(f64::NAN), "NaN");
        assert_eq!(fmt_num(f64::NEG_INFINITY), "-inf");
        assert_eq!(median_in_place(&mut [5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median_in_place(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(layer_prefix("rnn.0.bias_hh"), "rnn.0");
        assert_eq!(
            Role::from_name("lstm.0.weight_hh", None),
            Role::RecurrentWeight
        );
        assert_eq!(Role::from_name("layers.2.bias", None), Role::Bias);
        assert_eq!(Role::from_name("head.weight", None), Role::Weight);
        assert_eq!(
            Role::from_name("RNN.Weight_HH_l0", None),
            Role::RecurrentWeight
        );
        assert_eq!(Role::from_name("b", None), Role::Weight);
    }
}
