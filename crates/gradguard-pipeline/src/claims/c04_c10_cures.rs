//! C4 to C10: the changes said to make exploding gradients less likely (fewer layers,
//! smaller batches, truncated BPTT, ReLU, LSTM, clipping, weight penalties).

use super::experiments::*;
use super::{
    effect, fmt_ratio, helps_verdict, median, Claim, ClaimVerdict, ClaimsError, Effect, Table,
};
use crate::compare::Variant;
use crate::probe::probe_spec;
use crate::spec::ExperimentSpec;
use gradguard_models::spec::{Activation, ModelSpec};
use serde_json::json;

// ---------------------------------------------------------------------------------------
// C4: depth
// ---------------------------------------------------------------------------------------

pub(super) fn c04(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C4";
    let deep = demo_spec(id, "deep-mlp")?;
    let (mut claim, s) = helps_claim(
        id,
        ctx,
        "A network with fewer layers is less likely to explode.",
        "",
        &deep,
        &["fewer_layers"],
        Vec::new(),
        false,
    )?;
    let depths = [2usize, 4, 8, 12];
    let mut sweep = Vec::new();
    let mut growth = Vec::new();
    for &d in &depths {
        let mut spec = copy(id, &deep)?;
        if let ModelSpec::Mlp(m) = &mut spec.model {
            m.hidden = vec![32; d];
        }
        let mut factors = Vec::new();
        let mut totals = Vec::new();
        for &seed in &ctx.seeds {
            let r = probe_spec(&spec, 3, Some(seed))
                .map_err(|e| ClaimsError::Model(id.into(), Box::new(e)))?;
            if let Some(g) = r.layer_growth {
                factors.push(g.factor);
                totals.push(g.total);
            }
        }
        growth.push((median(factors), median(totals)));
        sweep.push(custom_variant(&format!("{d} layers"), spec));
    }
    let sw = stats(&run_variants(id, ctx, "depth-sweep", sweep)?);
    let explode: Vec<usize> = sw.iter().map(|v| v.counts.exploding).collect();
    let monotone = explode.windows(2).all(|w| w[1] >= w[0]) && explode.first() < explode.last();
    let fewer = effects(&s, "none", &["fewer_layers"])
        .first()
        .is_some_and(|e| e.1.helped());
    claim.verdict = ClaimVerdict::from_parts(usize::from(fewer) + usize::from(monotone), 2);
    claim.rule = format!(
        "Two parts. (1) `fewer_layers` on deep-mlp, judged by the shared rule: {HELPS_RULE} (2) In a depth sweep at the same initialisation, the number of exploding seeds never falls as depth grows and is larger at the deepest than at the shallowest. Supported when both hold, mixed when one does, not supported when neither."
    );
    claim.experiment = "Demo `deep-mlp`: an MLP of 10 hidden ReLU layers of 32 units, Glorot-uniform at gain 2.5, on a regression (1000 samples, 20 features, targets scaled by 0.01), SGD lr 0.01 momentum 0.9, batch 32, 20 epochs. Varies: `fewer_layers` (the first 5 hidden layers kept), and a sweep of 2, 4, 8 and 12 hidden layers at the same initialisation. The growth of the error signal per layer (and over the network, from the head back to the first layer) is measured at initialisation.".into();
    let mut t = variants_table("depth sweep at the same initialisation", &sw, "");
    t.columns.pop();
    t.columns.push("growth per layer at init".into());
    t.columns.push("growth over the network at init".into());
    for (row, (f, tot)) in t.rows.iter_mut().zip(&growth) {
        row.pop();
        row.push(fmt_ratio(*f));
        row.push(fmt_ratio(*tot));
    }
    claim.tables.push(t);
    claim.why = format!(
        "{} Depth sweep 2/4/8/12: {} seeds exploding ({}).",
        claim.why,
        explode
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("/"),
        if monotone {
            "rising with depth"
        } else {
            "not rising with depth"
        }
    );
    claim.numbers = json!({ "deep-mlp": s, "depth_sweep": sw, "growth_at_init": growth });
    Ok(claim)
}

// ---------------------------------------------------------------------------------------
// C5 .. C10: the cures
// ---------------------------------------------------------------------------------------

pub(super) fn c05(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C5";
    let reg = demo_spec(id, "regression-sgd")?;
    let mut b8 = copy(id, &reg)?;
    b8.train.batch_size = 8;
    let (mut claim, s1) = helps_claim(
        id,
        ctx,
        "Smaller batches make exploding gradients less likely.",
        "",
        &reg,
        &["smaller_batch"],
        vec![custom_variant("batch_size=8", b8)],
        false,
    )?;
    let rnn = demo_spec(id, "rnn-long-sequences")?;
    let mut r8 = copy(id, &rnn)?;
    r8.train.batch_size = 8;
    let mut vs = cure_variants(id, &rnn, &["smaller_batch"])?;
    vs.push(custom_variant("batch_size=8", r8));
    let s2 = stats(&run_variants(id, ctx, "rnn-long-sequences", vs)?);
    let e1 = effects(&s1, "none", &["smaller_batch", "batch_size=8"]);
    let e2 = effects(&s2, "none", &["smaller_batch", "batch_size=8"]);
    claim.verdict = helps_verdict(&e1.iter().chain(&e2).map(|e| e.1).collect::<Vec<_>>());
    claim.experiment = "Demo `regression-sgd` (unscaled regression targets, MLP 20-25-1 ReLU, SGD lr 0.01 momentum 0.9, 100 epochs) at batch 32 (as given), 16 (`smaller_batch`) and 8; the number of epochs stays, so a smaller batch makes more updates. Demo `rnn-long-sequences` (plain tanh RNN, W_hh radius 1.5, adding problem of length 100, SGD lr 0.05 momentum 0.9, 300 steps) at batch 32 (as given), 16 and 8, the same number of steps.".into();
    claim.tables.push(variants_table(
        &format!("rnn-long-sequences over {} seed(s)", ctx.seeds.len()),
        &s2,
        "none",
    ));
    if let Some(b) = find(&s2, "none") {
        claim.why = format!(
            "regression-sgd: {} rnn-long-sequences: {}",
            claim.why,
            effects_text(b, &e2, &s2)
        );
    }
    claim.numbers = json!({ "regression-sgd": s1, "rnn-long-sequences": s2 });
    Ok(claim)
}

pub(super) fn c06(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C6";
    let rnn = demo_spec(id, "rnn-long-sequences")?;
    let (claim, _) = helps_claim(
        id,
        ctx,
        "Truncated backpropagation through time makes exploding gradients in recurrent networks less likely.",
        "Demo `rnn-long-sequences`: a plain tanh RNN of 32 units, W_hh orthogonal with spectral radius 1.5, on the adding problem of length 100, SGD lr 0.05 momentum 0.9, batch 32, 300 steps, full BPTT. Varies: gradients through the last 10 (`truncated_bptt=10`) or 20 (`truncated_bptt=20`) steps only.",
        &rnn,
        &["truncated_bptt=10", "truncated_bptt=20"],
        Vec::new(),
        false,
    )?;
    Ok(claim)
}

pub(super) fn c07(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C7";
    let deep = demo_spec(id, "deep-mlp")?;
    let vs = cure_variants(id, &deep, &["activation=tanh", "activation=sigmoid"])?;
    let s = stats(&run_variants(id, ctx, "deep-mlp", vs)?);
    // ReLU is the change: each saturating activation is its base.
    let relu = find(&s, "none").map(|v| v.counts);
    let mut eff = Vec::new();
    for base in ["activation=tanh", "activation=sigmoid"] {
        if let (Some(b), Some(r)) = (find(&s, base), relu) {
            eff.push((base, effect(&b.counts, &r)));
        }
    }
    let verdict = helps_verdict(&eff.iter().map(|e| e.1).collect::<Vec<_>>());
    // Growth of the error signal per layer at initialisation, per activation and gain.
    let mut growth_rows = Vec::new();
    let mut growth = Vec::new();
    for gain in [2.5, 1.0] {
        for act in [Activation::Relu, Activation::Tanh, Activation::Sigmoid] {
            let mut spec = copy(id, &deep)?;
            if let ModelSpec::Mlp(m) = &mut spec.model {
                m.activation = Some(act);
                m.activations = None;
                m.init.gain = gain;
            }
            let mut f = Vec::new();
            let mut tot = Vec::new();
            for &seed in &ctx.seeds {
                let r = probe_spec(&spec, 3, Some(seed))
                    .map_err(|e| ClaimsError::Model(id.into(), Box::new(e)))?;
                if let Some(g) = r.layer_growth {
                    f.push(g.factor);
                    tot.push(g.total);
                }
            }
            let (f, tot) = (median(f), median(tot));
            growth_rows.push(vec![
                act.name().to_string(),
                format!("{gain}"),
                fmt_ratio(f),
                fmt_ratio(tot),
            ]);
            growth.push(json!({"activation": act.name(), "gain": gain, "factor_per_layer": f, "total": tot}));
        }
    }
    let sig = |gain: f64| {
        growth
            .iter()
            .find(|g| g["activation"] == "sigmoid" && g["gain"] == gain)
            .and_then(|g| g["factor_per_layer"].as_f64())
    };
    let mut notes = Vec::new();
    if let (Some(a), Some(b)) = (sig(2.5), sig(1.0)) {
        notes.push(if a < 1.0 && b < 1.0 {
            format!("Sigmoid's error signal shrinks layer by layer ({} per layer at gain 2.5, {} at gain 1): its problem is vanishing, not exploding, gradients.", fmt_ratio(Some(a)), fmt_ratio(Some(b)))
        } else {
            format!("Sigmoid's error signal changes by {} per layer at gain 2.5 and {} at gain 1.", fmt_ratio(Some(a)), fmt_ratio(Some(b)))
        });
    }
    let why = format!(
        "ReLU (as given) had {}; {}.",
        relu.map_or("-".into(), |c| counts_text(&c)),
        eff.iter()
            .filter_map(|(b, e)| find(&s, b).map(|v| format!(
                "against {} ({}): {}",
                b.trim_start_matches("activation="),
                counts_text(&v.counts),
                e.as_str()
            )))
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(Claim {
        id: id.into(),
        claim: "Using ReLU instead of sigmoid or tanh makes exploding gradients less likely.".into(),
        experiment: "Demo `deep-mlp` (10 hidden layers of 32 units, Glorot-uniform at gain 2.5, SGD lr 0.01 momentum 0.9, batch 32, 20 epochs) with ReLU (as given), tanh and sigmoid. The growth of the error signal per layer at initialisation is also measured for each activation at gain 2.5 and at the standard gain 1.".into(),
        rule: format!("ReLU is the change, and each saturating activation is a base: {HELPS_RULE}"),
        tables: vec![
            variants_table(&format!("deep-mlp over {} seed(s); the effect column reads against the base `none` (ReLU), the verdict uses ReLU against each activation", ctx.seeds.len()), &s, "none"),
            Table {
                caption: "error-signal growth per layer at initialisation (from the head back to the first layer; medians over the seeds)".into(),
                columns: ["activation", "init gain", "factor per layer", "over the network"]
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
                rows: growth_rows,
            },
        ],
        verdict,
        why,
        notes,
        numbers: json!({ "deep-mlp": s, "growth_at_init": growth }),
        seconds: 0.0,
    })
}

pub(super) fn c08(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C8";
    let rnn = demo_spec(id, "rnn-long-sequences")?;
    let (claim, _) = helps_claim(
        id,
        ctx,
        "An LSTM instead of a plain RNN makes exploding gradients less likely.",
        "Demo `rnn-long-sequences` (plain tanh RNN of 32 units, W_hh spectral radius 1.5, adding problem of length 100, SGD lr 0.05 momentum 0.9, batch 32, 300 steps, full BPTT) with the cell replaced by an LSTM (`cell=lstm`) or a GRU (`cell=gru`), same initialisers.",
        &rnn,
        &["cell=lstm", "cell=gru"],
        Vec::new(),
        false,
    )?;
    Ok(claim)
}

pub(super) fn c09(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C9";
    let reg = demo_spec(id, "regression-sgd")?;
    let (mut claim, s) = helps_claim(
        id,
        ctx,
        "Gradient clipping (by norm or by value) prevents exploding gradients. Keras' defaults are clipnorm=1 and clipvalue=0.5.",
        "Demo `regression-sgd` (unscaled regression targets, MLP 20-25-1 ReLU, SGD lr 0.01 momentum 0.9, batch 32, 100 epochs) without clipping and with `clip_global_norm` (max_norm 1, all gradients together as torch's clip_grad_norm_ and Keras' global_clipnorm), `clip_norm` (max_norm 1 per tensor, as Keras' clipnorm) and `clip_value` (0.5 per element, as Keras' clipvalue).",
        &reg,
        &["clip_global_norm", "clip_norm", "clip_value"],
        Vec::new(),
        true,
    )?;
    let part = |n: &str| {
        find(&s, n).map_or("-".into(), |v| {
            format!(
                "{} (held-out/const {})",
                counts_text(&v.counts),
                fmt_ratio(v.median_test_vs_const)
            )
        })
    };
    claim.notes = vec![
        "Documented fact, not a measurement: Keras 3 optimizers default to clipnorm=None, clipvalue=None and global_clipnorm=None, i.e. no clipping at all (keras/src/optimizers/base_optimizer.py, `BaseOptimizer.__init__` signature); PyTorch clips only when clip_grad_norm_ or clip_grad_value_ is called. So \"clipnorm=1 and clipvalue=0.5\" are example values, not defaults.".into(),
        format!(
            "What those example values do here: max_norm 1 per tensor (`clip_norm`): {}; clip value 0.5 (`clip_value`): {}; max_norm 1 over all gradients (`clip_global_norm`): {}.",
            part("clip_norm"),
            part("clip_value"),
            part("clip_global_norm")
        ),
    ];
    Ok(claim)
}

pub(super) fn c10(ctx: &Ctx) -> Result<Claim, ClaimsError> {
    let id = "C10";
    let reg = demo_spec(id, "regularization")?;
    let sgd = demo_spec(id, "regression-sgd")?;
    let labels = ["l1", "l2", "l1=0.01", "l2=0.01"];
    let strong = |spec: &ExperimentSpec| -> Result<Vec<Variant>, ClaimsError> {
        Ok(vec![
            custom_variant(
                "l1=0.01",
                with_remedy(id, spec, "kind = \"l1\"\nl1 = 0.01")?,
            ),
            custom_variant(
                "l2=0.01",
                with_remedy(id, spec, "kind = \"l2\"\nl2 = 0.01")?,
            ),
        ])
    };
    let (mut claim, s1) = helps_claim(
        id,
        ctx,
        "L1 or L2 weight penalties make exploding gradients less likely.",
        "",
        &reg,
        &labels[..2],
        strong(&reg)?,
        false,
    )?;
    let mut vs = cure_variants(id, &sgd, &labels[..2])?;
    vs.extend(strong(&sgd)?);
    let s2 = stats(&run_variants(id, ctx, "regression-sgd", vs)?);
    let mut all: Vec<Effect> = effects(&s1, "none", &labels).iter().map(|e| e.1).collect();
    let e2 = effects(&s2, "none", &labels);
    all.extend(e2.iter().map(|e| e.1));
    claim.verdict = helps_verdict(&all);
    claim.experiment = "Demo `regularization` (the unscaled regression at lr 0.001, MLP 20-25-1 ReLU, SGD momentum 0.9, batch 32, 100 epochs: at the edge of exploding) and demo `regression-sgd` (the same at lr 0.01), each without a penalty, with L1 and with L2 at 0.001 (`l1`, `l2`: the remedies' documented example strengths) and at 0.01 (the strengths the `regularization` demo's comment names); L2 has Keras semantics (the penalty's gradient added to the loss's).".into();
    claim.tables.push(variants_table(
        &format!("regression-sgd over {} seed(s)", ctx.seeds.len()),
        &s2,
        "none",
    ));
    if let Some(b) = find(&s2, "none") {
        claim.why = format!(
            "regularization: {} regression-sgd: {}",
            claim.why,
            effects_text(b, &e2, &s2)
        );
    }
    claim.numbers = json!({ "regularization": s1, "regression-sgd": s2 });
    Ok(claim)
}
