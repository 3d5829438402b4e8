//! C2 (the order in which things become non-finite) and C3 (the classic signs in exploding
//! and healthy runs).

use super::experiments::*;
use super::{Claim, ClaimVerdict, ClaimsError, Counts, Table};
use gradguard_core::{RunSummary, Sign, Verdict};
use serde_json::json;

const C03_LSTM_SPEC: &str = include_str!("../../claims/c03-lstm-adding-clipped.toml");

// ---------------------------------------------------------------------------------------
// C2: NaN order
// ---------------------------------------------------------------------------------------

fn order_text(items: &[(&str, Option<u64>)]) -> String {
    let mut seen: Vec<(&str, u64)> = items
        .iter()
        .filter_map(|(n, s)| s.map(|s| (*n, s)))
        .collect();
    if seen.is_empty() {
        return "none non-finite".into();
    }
    seen.sort_by_key(|x| x.1);
    let mut groups: Vec<(u64, Vec<&str>)> = Vec::new();
    for (n, s) in seen {
        match groups.last_mut() {
            Some(g) if g.0 == s => g.1.push(n),
            _ => groups.push((s, vec![n])),
        }
    }
    groups
        .iter()
        .map(|(s, ns)| format!("{} ({s})", ns.join(" + ")))
        .collect::<Vec<_>>()
        .join(" then ")
}

pub(super) fn c02(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C2";
    let spec = demo_spec(id, "regression-sgd")?;
    let vs = cure_variants(id, &spec, &[])?;
    let outcomes = run_variants(id, ctx, "regression-sgd", vs)?;
    let seeds: Vec<&RunSummary> = outcomes
        .iter()
        .flat_map(|o| o.seeds.iter().map(|s| &s.summary))
        .collect();
    let mut rows = Vec::new();
    let mut per_seed = Vec::new();
    let (mut loss_first, mut grad_first, mut exploded) = (0, 0, 0);
    for s in &seeds {
        let g = sign_step(s, Sign::GradNonfinite);
        let l = sign_step(s, Sign::LossNonfinite);
        let w = sign_step(s, Sign::WeightsNonfinite);
        exploded += usize::from(s.verdict == Verdict::Exploding);
        if let (Some(l), Some(w)) = (l, w) {
            loss_first += usize::from(l < w);
        }
        if let Some(g) = g {
            grad_first += usize::from(l.is_none_or(|l| g < l));
        }
        rows.push(vec![
            s.seed.to_string(),
            s.verdict.as_str().to_string(),
            opt(g),
            opt(l),
            opt(w),
            order_text(&[("gradient", g), ("loss", l), ("weights", w)]),
        ]);
        per_seed.push(json!({"seed": s.seed, "verdict": s.verdict, "grad_nonfinite": g, "loss_nonfinite": l, "weights_nonfinite": w}));
    }
    let n = seeds.len();
    let verdict = ClaimVerdict::from_parts(loss_first, n);
    let why = format!(
        "{exploded}/{n} seeds exploded; the loss became non-finite strictly before the weights in {loss_first}/{n}; the gradient was non-finite before the loss in {grad_first}/{n}."
    );
    Ok(Claim {
        id: id.into(),
        claim: "Exploding gradients make the loss, and then the weights, NaN.".into(),
        experiment: "The classic regression (demo `regression-sgd`: unscaled make_regression targets, MLP 20-25-1 ReLU, SGD lr 0.01 momentum 0.9, batch 32, 100 epochs), no remedy. Per seed, the first step (optimiser updates from 1) at which gradguard's detectors saw a non-finite gradient (`grad_nonfinite`), loss (`loss_nonfinite`) and weight (`weights_nonfinite`). The loss is computed in f64, the gradients and weights are f32; an update from a non-finite gradient is applied (as PyTorch would), and the run stops one step after the weights are non-finite.".into(),
        rule: "Per seed, the claim's order holds when the loss was first non-finite at a step strictly before the weights. Supported when it holds for every seed, not supported when for none, mixed otherwise.".into(),
        tables: vec![Table {
            caption: "first non-finite step of each quantity, per seed".into(),
            columns: ["seed", "verdict", "gradient", "loss", "weights", "order"]
                .iter()
                .map(|c| c.to_string())
                .collect(),
            rows,
        }],
        verdict,
        why,
        notes: vec![
            "gradguard computes the loss in f64, so a huge but finite f32 prediction still gives a finite loss while the f32 gradient (proportional to the error times the activations) overflows to inf first; a framework computing the loss in f32 would see the loss overflow at about the same step.".into(),
            "The weights become non-finite in the update made from a non-finite gradient; the detectors see them at the next step, where the loss computed from those weights is non-finite too.".into(),
        ],
        numbers: json!({ "seeds": per_seed }),
        seconds: 0.0,
    })
}

// ---------------------------------------------------------------------------------------
// C3: the classic signs, in exploding and in healthy runs
// ---------------------------------------------------------------------------------------

/// A sign is characteristic of explosion when seen in at least this fraction of exploding runs...
const C3_MIN_EXPLODING: f64 = 0.5;
/// ...and in at most this fraction of healthy runs.
const C3_MAX_HEALTHY: f64 = 0.2;

fn sign_words(s: Sign) -> &'static str {
    match s {
        Sign::LossNotConverging => "loss poor",
        Sign::LossUnstable => "loss unstable",
        Sign::LossNonfinite => "loss NaN",
        Sign::WeightsChangeLarge => "weights change a lot",
        Sign::WeightsNonfinite => "weights NaN",
        Sign::GradNormAboveOne => "error gradient consistently above 1.0",
        _ => "",
    }
}

/// Whether a sign seen in `e` of `ne` exploding and `h` of `nh` healthy runs is
/// characteristic of explosion (see [`C3_MIN_EXPLODING`], [`C3_MAX_HEALTHY`]).
pub(super) fn characteristic(e: usize, ne: usize, h: usize, nh: usize) -> bool {
    ne > 0
        && nh > 0
        && e as f64 / ne as f64 >= C3_MIN_EXPLODING
        && h as f64 / nh as f64 <= C3_MAX_HEALTHY
}

pub(super) fn c03(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C3";
    let reg = demo_spec(id, "regression-sgd")?;
    let deep = demo_spec(id, "deep-mlp")?;
    let rnn = demo_spec(id, "rnn-long-sequences")?;
    let lstm = parse_spec(id, C03_LSTM_SPEC)?;
    let mut outcomes = Vec::new();
    outcomes.extend(
        run_variants(
            id,
            ctx,
            "regression-sgd",
            cure_variants(id, &reg, &["clip_global_norm", "standardise_targets"])?,
        )?
        .into_iter()
        .map(|o| ("regression-sgd", o)),
    );
    outcomes.extend(
        run_variants(
            id,
            ctx,
            "deep-mlp",
            cure_variants(id, &deep, &["smaller_init_gain"])?,
        )?
        .into_iter()
        .map(|o| ("deep-mlp", o)),
    );
    outcomes.extend(
        run_variants(id, ctx, "rnn-long-sequences", cure_variants(id, &rnn, &[])?)?
            .into_iter()
            .map(|o| ("rnn-long-sequences", o)),
    );
    outcomes.extend(
        run_variants(
            id,
            ctx,
            "lstm-adding-clipped",
            cure_variants(id, &lstm, &[])?,
        )?
        .into_iter()
        .map(|o| ("lstm-adding-clipped", o)),
    );
    let all: Vec<&RunSummary> = outcomes
        .iter()
        .flat_map(|(_, o)| o.seeds.iter().map(|s| &s.summary))
        .collect();
    let exploding: Vec<&&RunSummary> = all
        .iter()
        .filter(|s| s.verdict == Verdict::Exploding)
        .collect();
    let healthy: Vec<&&RunSummary> = all
        .iter()
        .filter(|s| s.verdict == Verdict::Healthy)
        .collect();
    let (ne, nh) = (exploding.len(), healthy.len());
    let pct = |k: usize, n: usize| {
        if n == 0 {
            "-".to_string()
        } else {
            format!("{k}/{n} ({:.0}%)", 100.0 * k as f64 / n as f64)
        }
    };
    let mut rows = Vec::new();
    let mut per_sign = Vec::new();
    let mut held = Vec::new();
    let mut common_in_healthy = Vec::new();
    for sign in Sign::CLASSIC {
        let e = exploding
            .iter()
            .filter(|s| sign_step(s, sign).is_some())
            .count();
        let h = healthy
            .iter()
            .filter(|s| sign_step(s, sign).is_some())
            .count();
        let ch = characteristic(e, ne, h, nh);
        if ch {
            held.push(sign.as_str());
        } else {
            common_in_healthy.push(format!(
                "{} ({} exploding, {} healthy)",
                sign.as_str(),
                pct(e, ne),
                pct(h, nh)
            ));
        }
        rows.push(vec![
            format!("{} (`{}`)", sign_words(sign), sign.as_str()),
            pct(e, ne),
            pct(h, nh),
            if ch { "yes" } else { "no" }.into(),
        ]);
        per_sign.push(
            json!({"sign": sign, "exploding_runs": e, "healthy_runs": h, "characteristic": ch}),
        );
    }
    let config_rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|(demo, o)| {
            let c = Counts::of(o.seeds.iter().map(|s| &s.summary));
            vec![
                format!("{demo} + {}", o.name),
                format!("{}/{}", c.exploding, c.runs),
                format!("{}/{}", c.healthy, c.runs),
                format!("{}/{}", c.runs - c.exploding - c.healthy, c.runs),
            ]
        })
        .collect();
    let verdict = ClaimVerdict::from_parts(held.len(), Sign::CLASSIC.len());
    let why = format!(
        "Over {ne} exploding and {nh} healthy runs, {} of the 6 signs are characteristic ({}); not characteristic: {}.",
        held.len(),
        if held.is_empty() { "none".to_string() } else { held.join(", ") },
        if common_in_healthy.is_empty() { "none".to_string() } else { common_in_healthy.join("; ") },
    );
    Ok(Claim {
        id: id.into(),
        claim: "The signs of exploding gradients are: the loss is poor, the loss is unstable, the loss is NaN, the weights change a lot, the weights are NaN, the error gradient stays above 1.0.".into(),
        experiment: "Runs that explode and runs that do not, under gradguard's default detectors, all seeds: `regression-sgd` as given, with `clip_global_norm` (max_norm 1) and with `standardise_targets`; `deep-mlp` as given and with `smaller_init_gain`; `rnn-long-sequences` as given; an LSTM with clipping on the adding problem (claims/c03-lstm-adding-clipped.toml). The runs are pooled by their verdict (exploding or healthy; suspect and not_learning runs are left out), and each sign counted once per run when its detector fired at least once.".into(),
        rule: format!(
            "A sign is characteristic when seen in at least {:.0}% of exploding runs and at most {:.0}% of healthy runs. Supported when all six are characteristic, not supported when none is, mixed otherwise.",
            100.0 * C3_MIN_EXPLODING,
            100.0 * C3_MAX_HEALTHY
        ),
        tables: vec![
            Table {
                caption: "runs where each sign was seen".into(),
                columns: ["sign", "exploding runs", "healthy runs", "characteristic"]
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
                rows,
            },
            Table {
                caption: "the runs".into(),
                columns: ["configuration", "exploding", "healthy", "other"]
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
                rows: config_rows,
            },
        ],
        verdict,
        why,
        notes: Vec::new(),
        numbers: json!({ "exploding_runs": ne, "healthy_runs": nh, "signs": per_sign }),
        seconds: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characteristic_needs_common_in_exploding_and_rare_in_healthy() {
        assert!(characteristic(5, 10, 2, 10));
        assert!(!characteristic(4, 10, 0, 10));
        assert!(!characteristic(10, 10, 3, 10));
        assert!(!characteristic(10, 10, 0, 0));
    }

    #[test]
    fn order_groups_equal_steps() {
        assert_eq!(
            order_text(&[
                ("gradient", Some(3)),
                ("loss", Some(4)),
                ("weights", Some(4))
            ]),
            "gradient (3) then loss + weights (4)"
        );
        assert_eq!(order_text(&[("loss", None)]), "none non-finite");
    }
}
