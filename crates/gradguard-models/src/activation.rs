//! Point-wise activations over slices: forward in place, and the backward from the stored
//! output `y` (every supported activation's derivative is a function of its output).

use crate::spec::Activation;

/// `y = act(y)` in place.
pub fn forward_in_place(act: Activation, y: &mut [f32]) {
    match act {
        Activation::Identity => {}
        Activation::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::LeakyRelu { slope } => y.iter_mut().for_each(|v| {
            if *v < 0.0 {
                *v *= slope
            }
        }),
        Activation::Elu { alpha } => y.iter_mut().for_each(|v| {
            if *v < 0.0 {
                *v = alpha * v.exp_m1()
            }
        }),
        Activation::Tanh => y.iter_mut().for_each(|v| *v = v.tanh()),
        Activation::Sigmoid => y.iter_mut().for_each(|v| *v = sigmoid(*v)),
    }
}

/// Numerically stable logistic function.
#[inline]
pub fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `dz = dy * act'(z)` in place on `dy`, computed from the output `y = act(z)`:
/// sigmoid `y(1-y)`, tanh `1-y²`, relu `[y>0]`, leaky_relu `y>0 ? 1 : slope`,
/// elu `y>0 ? 1 : y+alpha` (= alpha·e^z), identity 1. Requires slope >= 0 and alpha > 0
/// (validated in the spec), so the sign of `y` is the sign of `z`.
pub fn backward_in_place(act: Activation, y: &[f32], dy: &mut [f32]) {
    match act {
        Activation::Identity => {}
        // branch-free selects, so the loops vectorise
        Activation::Relu => dy
            .iter_mut()
            .zip(y)
            .for_each(|(d, &v)| *d = if v > 0.0 { *d } else { 0.0 }),
        Activation::LeakyRelu { slope } => dy
            .iter_mut()
            .zip(y)
            .for_each(|(d, &v)| *d *= if v > 0.0 { 1.0 } else { slope }),
        Activation::Elu { alpha } => dy
            .iter_mut()
            .zip(y)
            .for_each(|(d, &v)| *d *= if v > 0.0 { 1.0 } else { v + alpha }),
        Activation::Tanh => dy.iter_mut().zip(y).for_each(|(d, &v)| *d *= 1.0 - v * v),
        Activation::Sigmoid => dy.iter_mut().zip(y).for_each(|(d, &v)| *d *= v * (1.0 - v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_central_differences() {
        let acts = [
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Relu,
            Activation::LeakyRelu { slope: 0.1 },
            Activation::Elu { alpha: 0.7 },
            Activation::Identity,
        ];
        for act in acts {
            for &z in &[-2.0f64, -0.3, 0.4, 1.7] {
                let f = |z: f64| {
                    let mut v = [z as f32];
                    forward_in_place(act, &mut v);
                    v[0] as f64
                };
                let h = 1e-3;
                let fd = (f(z + h) - f(z - h)) / (2.0 * h);
                let y = [f(z) as f32];
                let mut d = [1.0f32];
                backward_in_place(act, &y, &mut d);
                assert!(
                    (d[0] as f64 - fd).abs() <= 1e-3 * fd.abs().max(1.0),
                    "{act:?} at {z}: {} vs {fd}",
                    d[0]
                );
            }
        }
        assert_eq!(sigmoid(-100.0), 0.0f32.max(sigmoid(-100.0)));
        assert!(sigmoid(-100.0).is_finite() && sigmoid(100.0) == 1.0);
    }
}
