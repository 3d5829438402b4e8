//! Each detector's rule checked exactly on its boundary: a value equal to the threshold does
//! not fire where the rule says `>`, and fires where it says `>=`, and a value one step past it
//! does the opposite. A mutation of a comparison (`>` to `>=`, or the reverse) fails here.

use gradguard_core::{
    Detector, Finding, Observation, ParamView, Role, Series, SeriesAxis, StepStats,
};
use gradguard_detectors::{
    GradGrowthAcrossLayers, LossNotConverging, LossUnstable, RecurrentRadiusAboveOne,
};

fn detector<D: serde::de::DeserializeOwned>(json: &str) -> D {
    serde_json::from_str(json).expect("parameters")
}

/// Runs `d` over `losses` (steps from 1) and returns the steps it fired at.
fn loss_steps(d: &mut dyn Detector, losses: &[f64]) -> Vec<u64> {
    let stats = StepStats::default();
    let mut fired = Vec::new();
    for (i, &loss) in losses.iter().enumerate() {
        let mut f: Vec<Finding> = Vec::new();
        d.observe(&Observation::new(i as u64 + 1, loss, &stats), &mut f);
        fired.extend(f.iter().map(|f| f.step));
    }
    fired
}

/// Coefficient of variation of [1, 3]: mean 2, population std 1, cv = 0.5 exactly.
#[test]
fn loss_unstable_cv_mode_fires_strictly_above_the_threshold() {
    let at = |threshold: f64| {
        let mut d: LossUnstable = detector(&format!(
            r#"{{"mode":"coefficient_of_variation","window":2,"threshold":{threshold}}}"#
        ));
        loss_steps(&mut d, &[1.0, 3.0])
    };
    assert_eq!(
        at(0.5),
        Vec::<u64>::new(),
        "cv = threshold does not fire (>)"
    );
    assert_eq!(
        at(0.499_999_999),
        vec![2],
        "cv just above the threshold fires"
    );
    // Population, not sample, std: the sample std would be sqrt(2), cv 0.707.
    assert_eq!(at(0.6), Vec::<u64>::new());
    // Not before the window is full.
    let mut d: LossUnstable =
        detector(r#"{"mode":"coefficient_of_variation","window":3,"threshold":0.1}"#);
    assert_eq!(loss_steps(&mut d, &[1.0, 3.0]), Vec::<u64>::new());
}

/// Relative change (default mode): |L_t - prev| / max(|prev|, floor * |L0|, 1e-12).
#[test]
fn loss_unstable_relative_change_fires_strictly_above_the_threshold() {
    let mut d: LossUnstable = detector(r#"{"threshold":1.0}"#);
    // 1 -> 2: change exactly 1.0: not a swing.
    assert_eq!(loss_steps(&mut d, &[1.0, 2.0]), Vec::<u64>::new());
    let mut d: LossUnstable = detector(r#"{"threshold":1.0}"#);
    // 1 -> 2.000001: a swing at step 2.
    assert_eq!(loss_steps(&mut d, &[1.0, 2.000_001]), vec![2]);
}

/// L0 = 2 (mean of the first 1 loss), fraction 0.5: limit 1.0; warm-up 1, windows of 2 steps.
#[test]
fn loss_not_converging_fires_when_the_window_minimum_exceeds_the_limit() {
    let run = |window_losses: [f64; 2]| {
        let mut d: LossNotConverging =
            detector(r#"{"warmup_steps":1,"window":2,"fraction":0.5,"initial_steps":1}"#);
        loss_steps(&mut d, &[2.0, window_losses[0], window_losses[1]])
    };
    assert_eq!(
        run([1.0, 1.5]),
        Vec::<u64>::new(),
        "minimum = limit does not fire (>)"
    );
    assert_eq!(
        run([1.000_001, 1.5]),
        vec![3],
        "minimum above the limit fires at the window's end"
    );
    assert_eq!(
        run([1.5, f64::NAN]),
        vec![3],
        "NaN counts as +inf, not as the minimum"
    );
    // A target replaces the fraction: limit 1.25.
    let mut d: LossNotConverging =
        detector(r#"{"warmup_steps":1,"window":2,"initial_steps":1,"target":1.25}"#);
    assert_eq!(loss_steps(&mut d, &[2.0, 1.25, 3.0]), Vec::<u64>::new());
}

fn layers(values: &[f64]) -> Vec<Series> {
    vec![Series {
        name: "error signal".into(),
        axis: SeriesAxis::Layers,
        values: values.to_vec(),
    }]
}

fn growth_steps(d: &mut GradGrowthAcrossLayers, chain: &[f64], steps: u64) -> Vec<u64> {
    let stats = StepStats::default();
    let series = layers(chain);
    let mut fired = Vec::new();
    for step in 1..=steps {
        let mut obs = Observation::new(step, 1.0, &stats);
        obs.series = &series;
        let mut f = Vec::new();
        d.observe(&obs, &mut f);
        fired.extend(f.iter().map(|f| f.step));
    }
    fired
}

/// Two layers, chain [v1, v2]: total = factor = v1 / v2. Grows when total >= min_total and
/// factor > layer_factor.
#[test]
fn grad_growth_boundaries_are_inclusive_on_the_total_and_strict_on_the_factor() {
    let make = || -> GradGrowthAcrossLayers {
        detector(r#"{"layer_factor":1.5,"layer_min_total":1.5,"patience":1}"#)
    };
    // total = 1.5 = min_total (>=) but factor = 1.5 = layer_factor (not >): no growth.
    assert_eq!(growth_steps(&mut make(), &[1.5, 1.0], 1), Vec::<u64>::new());
    // Both past their bounds.
    assert_eq!(growth_steps(&mut make(), &[1.500_001, 1.0], 1), vec![1]);
    // Factor past, total exactly at min_total: grows (>=).
    let mut d: GradGrowthAcrossLayers =
        detector(r#"{"layer_factor":1.2,"layer_min_total":2.0,"patience":1}"#);
    assert_eq!(growth_steps(&mut d, &[2.0, 1.0], 1), vec![1]);
    // Total just short of min_total: no growth.
    let mut d: GradGrowthAcrossLayers =
        detector(r#"{"layer_factor":1.2,"layer_min_total":2.0,"patience":1}"#);
    assert_eq!(
        growth_steps(&mut d, &[1.999_999, 1.0], 1),
        Vec::<u64>::new()
    );
    // Patience 3: fires at the third growing step, once.
    let mut d: GradGrowthAcrossLayers =
        detector(r#"{"layer_factor":1.2,"layer_min_total":2.0,"patience":3}"#);
    assert_eq!(growth_steps(&mut d, &[4.0, 1.0], 5), vec![3]);
}

/// A 2x2 recurrent weight diag(rho, 0): spectral radius rho. Fires when
/// rho > threshold * (1 + 1e-3).
#[test]
fn recurrent_radius_fires_only_past_its_tolerance() {
    let fires = |rho: f32| {
        let w = [rho, 0.0, 0.0, 0.0];
        let mut g = [0.0f32; 4];
        let mut view = ParamView::new();
        view.push(
            "rnn.weight_hh_l0",
            &[2, 2],
            Role::RecurrentWeight,
            &w,
            &mut g,
        )
        .expect("view");
        let stats = StepStats::measure(&view);
        let mut obs = Observation::new(1, 1.0, &stats);
        obs.view = Some(&view);
        let mut d = RecurrentRadiusAboveOne::default();
        let mut f = Vec::new();
        d.observe(&obs, &mut f);
        !f.is_empty()
    };
    assert!(!fires(1.0), "radius 1 is not above 1");
    assert!(!fires(1.000_9), "inside the 1e-3 tolerance");
    assert!(fires(1.001_1), "past the tolerance");
    assert!(fires(2.0));
}
