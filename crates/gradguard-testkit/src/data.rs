//! Owned parameter data, and one remedy run over it.

use gradguard_core::{
    Action, ParamInfo, ParamView, Remedy, RemedyContext, RemedyError, Role, StepStats,
};

/// One owned parameter tensor (name, shape, role, weights, gradients).
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedParam {
    /// Its name.
    pub name: String,
    /// Its shape, outermost first.
    pub shape: Vec<usize>,
    /// What it is for.
    pub role: Role,
    /// Weights, row-major.
    pub weights: Vec<f32>,
    /// Gradients, row-major.
    pub grads: Vec<f32>,
}

/// Owned parameters that lend a [`ParamView`]: the data of one test case.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnedParams {
    /// The tensors, in order.
    pub params: Vec<OwnedParam>,
}

impl OwnedParams {
    /// No tensors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tensor (builder style). Panics when the lengths disagree with the shape: this is
    /// test-fixture code, and the message names the tensor.
    pub fn with(
        mut self,
        name: &str,
        shape: &[usize],
        role: Role,
        weights: &[f32],
        grads: &[f32],
    ) -> Self {
        let numel: usize = shape.iter().product();
        assert!(
            weights.len() == numel && grads.len() == numel,
            "test tensor `{name}`: shape {shape:?} needs {numel} values, got {} weights and {} grads",
            weights.len(),
            grads.len()
        );
        self.params.push(OwnedParam {
            name: name.to_string(),
            shape: shape.to_vec(),
            role,
            weights: weights.to_vec(),
            grads: grads.to_vec(),
        });
        self
    }

    /// Adds a weight tensor with zero weights and the given gradients.
    pub fn with_grads(self, name: &str, shape: &[usize], grads: &[f32]) -> Self {
        let w = vec![0.0; grads.len()];
        self.with(name, shape, Role::Weight, &w, grads)
    }

    /// A view over the tensors.
    pub fn view(&mut self) -> ParamView<'_> {
        let mut v = ParamView::with_capacity(self.params.len());
        for p in &mut self.params {
            // Lengths were checked when the tensor was added (or by the strategy).
            let _ = v.push(&p.name, &p.shape, p.role, &p.weights, &mut p.grads);
        }
        v
    }

    /// Fresh statistics of the current data.
    pub fn measure(&mut self) -> StepStats {
        StepStats::measure(&self.view())
    }

    /// Global L2 norm of the gradients (f64).
    pub fn grad_norm(&self) -> f64 {
        self.params
            .iter()
            .flat_map(|p| &p.grads)
            .map(|&g| g as f64 * g as f64)
            .sum::<f64>()
            .sqrt()
    }

    /// Every gradient, flattened in order.
    pub fn flat_grads(&self) -> Vec<f32> {
        self.params
            .iter()
            .flat_map(|p| p.grads.iter().copied())
            .collect()
    }

    /// Whether every gradient is finite.
    pub fn grads_finite(&self) -> bool {
        self.params
            .iter()
            .all(|p| p.grads.iter().all(|g| g.is_finite()))
    }

    /// Multiplies every gradient by `a` (in f32).
    pub fn scaled(&self, a: f32) -> Self {
        let mut c = self.clone();
        for p in &mut c.params {
            p.grads.iter_mut().for_each(|g| *g *= a);
        }
        c
    }
}

/// What one remedy run did.
#[derive(Debug)]
pub struct Outcome {
    /// What `apply` returned.
    pub result: Result<Action, RemedyError>,
    /// The statistics as the remedy left them.
    pub stats: StepStats,
    /// The penalty the remedy reported.
    pub penalty: f64,
    /// Whether the remedy said it changed gradients.
    pub changed: bool,
    /// The view's descriptions after the run (names, shapes, roles).
    pub infos: Vec<ParamInfo>,
}

impl Outcome {
    /// Whether the run returned `Ok` with an action that lets the update through.
    pub fn applies_update(&self) -> bool {
        matches!(&self.result, Ok(a) if !a.withholds_update())
    }
}

/// Measures `data`, runs `remedy` once at `step` with `loss`, and returns what happened
/// (`data` holds the edited gradients afterwards).
pub fn run_remedy<R: Remedy + ?Sized>(
    remedy: &mut R,
    data: &mut OwnedParams,
    step: u64,
    loss: f64,
) -> Outcome {
    let mut view = data.view();
    let mut stats = StepStats::measure(&view);
    let mut ctx = RemedyContext::new(step, loss, &mut view, &mut stats);
    let result = remedy.apply(&mut ctx);
    let (penalty, changed) = (ctx.penalty(), ctx.changed());
    let infos = view.infos();
    Outcome {
        result,
        stats,
        penalty,
        changed,
        infos,
    }
}
