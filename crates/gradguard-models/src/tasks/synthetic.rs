//! Synthetic tasks (formulas on each spec type in [`crate::spec`]).

use super::{split, standardize_columns, Targets, TaskData};
use crate::rng::Rng64;
use crate::spec::{AddingTask, CopyTask, RegressionTask, SineTask};

/// `make_regression` (see [`RegressionTask`]). `rng` draws the data; `shuffle` (a generator
/// of its own, so that the data drawn are the same with and without shuffling) permutes the
/// rows before the split when `r.shuffle_rows`.
pub(super) fn regression(r: &RegressionTask, rng: &mut Rng64, shuffle: &mut Rng64) -> TaskData {
    let (n, f, k) = (r.n_samples, r.n_features, r.n_targets);
    let informative = r.n_informative.min(f);
    let x: Vec<f32> = (0..n * f).map(|_| rng.normal() as f32).collect();
    // coefficients: the informative features (a random subset) get 100 * U(0, 1), others 0.
    let mut order: Vec<usize> = (0..f).collect();
    rng.shuffle(&mut order);
    let mut coef = vec![0f64; f * k];
    for &feat in &order[..informative] {
        for t in 0..k {
            coef[feat * k + t] = 100.0 * rng.uniform();
        }
    }
    let mut y = Vec::with_capacity(n * k);
    for s in 0..n {
        for t in 0..k {
            let mut v = r.bias;
            for j in 0..f {
                v += x[s * f + j] as f64 * coef[j * k + t];
            }
            if r.noise > 0.0 {
                v += r.noise * rng.normal();
            }
            y.push((v * r.target_scale) as f32);
        }
    }
    let (x, y) = if r.shuffle_rows {
        let mut rows: Vec<usize> = (0..n).collect();
        shuffle.shuffle(&mut rows);
        let mut xs = Vec::with_capacity(n * f);
        let mut ys = Vec::with_capacity(n * k);
        for &s in &rows {
            xs.extend_from_slice(&x[s * f..(s + 1) * f]);
            ys.extend_from_slice(&y[s * k..(s + 1) * k]);
        }
        (xs, ys)
    } else {
        (x, y)
    };
    let (mut train, mut test) = split(x, y, n, r.train_fraction);
    if r.standardize_features {
        standardize_columns(&mut train.x, &mut test.x, f);
    }
    if r.standardize_targets {
        standardize_columns(&mut train.y, &mut test.y, k);
    }
    TaskData {
        train,
        test,
        steps: 1,
        input: f,
        outputs: k,
        targets: Targets::Values,
    }
}

pub(super) fn adding(a: &AddingTask, rng: &mut Rng64) -> TaskData {
    let (n, t) = (a.n_samples, a.seq_len);
    let mut x = vec![0f32; n * t * 2];
    let mut y = Vec::with_capacity(n);
    let half = t / 2;
    for s in 0..n {
        for step in 0..t {
            x[(s * t + step) * 2] = rng.uniform() as f32;
        }
        let p1 = rng.below(half.max(1));
        let p2 = half + rng.below((t - half).max(1));
        x[(s * t + p1) * 2 + 1] = 1.0;
        x[(s * t + p2) * 2 + 1] = 1.0;
        y.push(x[(s * t + p1) * 2] + x[(s * t + p2) * 2]);
    }
    let (train, test) = split(x, y, n, a.train_fraction);
    TaskData {
        train,
        test,
        steps: t,
        input: 2,
        outputs: 1,
        targets: Targets::Values,
    }
}

pub(super) fn copy(c: &CopyTask, rng: &mut Rng64) -> TaskData {
    let (n, s, l, d) = (c.n_samples, c.symbols, c.length, c.delay);
    let t = 2 * l + d;
    let ch = s + 2; // symbols, blank, delimiter
    let (blank_in, delim, blank_out) = (s, s + 1, s as f32);
    let mut x = vec![0f32; n * t * ch];
    let mut y = vec![blank_out; n * t];
    for i in 0..n {
        for step in 0..t {
            let sym = if step < l {
                let v = rng.below(s);
                y[i * t + l + d + step] = v as f32;
                v
            } else if step == l + d {
                delim
            } else {
                blank_in
            };
            x[(i * t + step) * ch + sym] = 1.0;
        }
    }
    let (train, test) = split(x, y, n, c.train_fraction);
    TaskData {
        train,
        test,
        steps: t,
        input: ch,
        outputs: s + 1,
        targets: Targets::StepClasses,
    }
}

pub(super) fn sine(sp: &SineTask, rng: &mut Rng64) -> TaskData {
    let (n, t) = (sp.n_samples, sp.seq_len);
    let mut x = Vec::with_capacity(n * t);
    let mut y = Vec::with_capacity(n);
    let tau = 2.0 * std::f64::consts::PI;
    for _ in 0..n {
        let f = sp.min_freq + (sp.max_freq - sp.min_freq) * rng.uniform();
        let phi = tau * rng.uniform();
        for step in 0..t {
            let v = (tau * f * step as f64 + phi).sin()
                + if sp.noise > 0.0 {
                    sp.noise * rng.normal()
                } else {
                    0.0
                };
            x.push(v as f32);
        }
        y.push((tau * f * t as f64 + phi).sin() as f32);
    }
    let (train, test) = split(x, y, n, sp.train_fraction);
    TaskData {
        train,
        test,
        steps: t,
        input: 1,
        outputs: 1,
        targets: Targets::Values,
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::TaskSpec;
    use crate::tasks::build_task;

    #[test]
    fn regression_is_deterministic_and_linear() {
        let spec: TaskSpec = toml::from_str(
            "kind = \"regression\"\nn_samples = 50\nn_features = 4\nn_informative = 2",
        )
        .unwrap();
        let a = build_task(&spec, 3).unwrap();
        let b = build_task(&spec, 3).unwrap();
        let c = build_task(&spec, 4).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.train.x, c.train.x);
        assert_eq!((a.train.n, a.test.n, a.input, a.outputs), (40, 10, 4, 1));
        // noise-free: y lies in the span of 2 features -> targets differ from zero with scale ~100
        let max = a.train.y.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max > 10.0, "{max}");
    }

    /// The data of seed 3 as generated before `shuffle_rows` existed (pinned by a checksum):
    /// `shuffle_rows = false`, the default, keeps them; `true` permutes the same rows.
    #[test]
    fn regression_default_keeps_the_generation_order() {
        let base =
            "kind = \"regression\"\nn_samples = 20\nn_features = 3\nn_informative = 2\nnoise = 0.1";
        let spec: TaskSpec = toml::from_str(base).unwrap();
        let plain = build_task(&spec, 3).unwrap();
        let checksum = [&plain.train.x, &plain.train.y, &plain.test.x, &plain.test.y]
            .iter()
            .flat_map(|v| v.iter())
            .fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
                (h ^ v.to_bits() as u64).wrapping_mul(0x100_0000_01b3)
            });
        // FNV-1a of every value's bits, as generated before `shuffle_rows` existed
        assert_eq!(checksum, 0x687f_8416_4b65_650e);
        let explicit: TaskSpec = toml::from_str(&format!("{base}\nshuffle_rows = false")).unwrap();
        assert_eq!(plain, build_task(&explicit, 3).unwrap());
        let shuffled: TaskSpec = toml::from_str(&format!("{base}\nshuffle_rows = true")).unwrap();
        let s = build_task(&shuffled, 3).unwrap();
        assert_ne!(plain.train.y, s.train.y);
        // the same rows (x, y pairs), permuted: shuffling draws from its own generator
        let rows = |d: &crate::tasks::TaskData| {
            let mut r: Vec<Vec<u32>> = (0..d.train.n)
                .map(|i| (&d.train.x[i * 3..(i + 1) * 3], d.train.y[i]))
                .chain((0..d.test.n).map(|i| (&d.test.x[i * 3..(i + 1) * 3], d.test.y[i])))
                .map(|(x, y)| x.iter().chain([&y]).map(|v| v.to_bits()).collect())
                .collect();
            r.sort();
            r
        };
        assert_eq!(rows(&plain), rows(&s));
        // unshuffled: the first 16 rows train in generation order, the last 4 are held out
        assert_eq!((plain.train.n, plain.test.n), (16, 4));
    }

    /// Standardisation uses the training split's statistics: the training columns have mean 0
    /// and population variance 1; the held-out columns are transformed with the same numbers.
    #[test]
    fn regression_standardisation_uses_training_statistics() {
        let base = "kind = \"regression\"\nn_samples = 50\nn_features = 3\nn_targets = 2\nnoise = 1.0\nbias = 40.0";
        let raw = build_task(&toml::from_str::<TaskSpec>(base).unwrap(), 5).unwrap();
        let z = build_task(
            &toml::from_str::<TaskSpec>(&format!(
                "{base}\nstandardize_targets = true\nstandardize_features = true"
            ))
            .unwrap(),
            5,
        )
        .unwrap();
        for (vals, width) in [(&z.train.x, 3), (&z.train.y, 2)] {
            for c in 0..width {
                let col: Vec<f64> = vals
                    .iter()
                    .skip(c)
                    .step_by(width)
                    .map(|&v| v as f64)
                    .collect();
                let n = col.len() as f64;
                let mean = col.iter().sum::<f64>() / n;
                let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                assert!(
                    mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-5,
                    "{mean} {var}"
                );
            }
        }
        // held-out target column 0: (y - mean_train) / sd_train
        let col: Vec<f64> = raw.train.y.iter().step_by(2).map(|&v| v as f64).collect();
        let n = col.len() as f64;
        let mean = col.iter().sum::<f64>() / n;
        let sd = (col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        let want = (raw.test.y[0] as f64 - mean) / sd;
        assert!(
            (z.test.y[0] as f64 - want).abs() < 1e-5,
            "{} vs {want}",
            z.test.y[0]
        );
        assert_eq!(
            z.target_mean_square().map(|m| (m - 1.0).abs() < 1e-5),
            Some(true)
        );
        assert!(raw.target_mean_square().unwrap() > 100.0);
    }

    #[test]
    fn adding_targets_are_the_marked_sum() {
        let spec: TaskSpec =
            toml::from_str("kind = \"adding\"\nseq_len = 10\nn_samples = 20").unwrap();
        let d = build_task(&spec, 1).unwrap();
        for s in 0..d.train.n {
            let xs = &d.train.x[s * 20..(s + 1) * 20];
            let marks: Vec<usize> = (0..10).filter(|&t| xs[t * 2 + 1] == 1.0).collect();
            assert_eq!(marks.len(), 2);
            assert!(marks[0] < 5 && marks[1] >= 5);
            assert_eq!(d.train.y[s], xs[marks[0] * 2] + xs[marks[1] * 2]);
        }
    }

    #[test]
    fn copy_targets_repeat_the_symbols_after_the_delimiter() {
        let spec: TaskSpec =
            toml::from_str("kind = \"copy\"\nsymbols = 3\nlength = 2\ndelay = 1\nn_samples = 4")
                .unwrap();
        let d = build_task(&spec, 1).unwrap();
        assert_eq!((d.steps, d.input, d.outputs), (5, 5, 4));
        let (x, y) = (&d.train.x[..25], &d.train.y[..5]);
        let sym = |t: usize| (0..5).find(|&c| x[t * 5 + c] == 1.0).unwrap();
        assert_eq!(sym(3), 4, "delimiter at step length + delay");
        assert_eq!(&y[..3], &[3.0, 3.0, 3.0]);
        assert_eq!(y[3] as usize, sym(0));
        assert_eq!(y[4] as usize, sym(1));
    }
}
