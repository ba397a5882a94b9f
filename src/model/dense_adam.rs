//! Dense AdamW for the parameters every sample reads (a text projection, tower weights),
//! with state that a model can duplicate along with its parameters.
//!
//! A step computes exactly what candle-nn's `AdamW` computes, operation for operation, so
//! results are bit-identical to it (a test checks this against candle-nn). We keep our own
//! because candle-nn's moments and step counter are private: a model holding one could not
//! be copied with its optimiser state ([`super::Recommender::duplicate`]), nor save and
//! restore it ([`super::Recommender::save_state`]).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use super::{ModelError, ModelState};
use crate::plan::params::OptimizerParams;

/// AdamW over a fixed list of `Var`s, which each step updates in place (the model reads the
/// same `Var`s), with one step counter for all of them.
#[derive(Debug)]
pub(super) struct DenseAdamW {
    parameters: Vec<DenseParameter>,
    /// Steps taken, including steps in which some parameter had no gradient.
    steps: usize,
    hyper: AdamWHyper,
}

/// A parameter, its name in a saved state, and its moments, shaped like it.
#[derive(Debug)]
struct DenseParameter {
    name: String,
    var: Var,
    first_moment: Tensor,
    second_moment: Tensor,
}

#[derive(Clone, Copy, Debug)]
struct AdamWHyper {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    decoupled_decay: f64,
}

impl DenseAdamW {
    /// Dense Adam over `vars` (f32, each with its name in a saved state), with zeroed
    /// moments.
    ///
    /// One step updates the parameters whole, so the sparse row optimisers do not apply.
    /// Adam rather than SGD whatever the row optimiser is, because a step on the summed loss
    /// of a batch would be batch-size times larger for a shared parameter than for a row,
    /// and Adam's step does not scale with the gradient. Betas and epsilon come from the
    /// row optimiser when it is Adam (PyTorch's defaults otherwise); `decoupled_decay` is
    /// AdamW's weight decay (0 when the model puts its L2 term in the gradient).
    pub(super) fn new(
        vars: Vec<(String, Var)>,
        row_optimizer: OptimizerParams,
        lr: f64,
        decoupled_decay: f64,
    ) -> candle_core::Result<Self> {
        let (beta1, beta2, eps) = match row_optimizer {
            OptimizerParams::Adam {
                beta1, beta2, eps, ..
            } => (beta1, beta2, eps),
            OptimizerParams::Sgd { .. } => (0.9, 0.999, 1e-8),
        };
        let parameters = vars
            .into_iter()
            .map(|(name, var)| {
                Ok(DenseParameter {
                    name,
                    first_moment: var.as_tensor().zeros_like()?,
                    second_moment: var.as_tensor().zeros_like()?,
                    var,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            parameters,
            steps: 0,
            hyper: AdamWHyper {
                lr,
                beta1,
                beta2,
                eps,
                decoupled_decay,
            },
        })
    }

    /// One step on the gradients in `grads`. A parameter without a gradient there keeps its
    /// value and moments; the step counter advances all the same (as in candle-nn).
    pub(super) fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.steps += 1;
        let h = self.hyper;
        let first_correction = 1.0 / (1.0 - h.beta1.powi(self.steps as i32));
        let second_correction = 1.0 / (1.0 - h.beta2.powi(self.steps as i32));
        let shrink = 1.0 - h.lr * h.decoupled_decay;
        for p in &mut self.parameters {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let first = (p.first_moment.affine(h.beta1, 0.0)? + g.affine(1.0 - h.beta1, 0.0)?)?;
            let second =
                (p.second_moment.affine(h.beta2, 0.0)? + g.sqr()?.affine(1.0 - h.beta2, 0.0)?)?;
            let first_unbiased = first.affine(first_correction, 0.0)?;
            let second_unbiased = second.affine(second_correction, 0.0)?;
            let shrunk = p.var.as_tensor().affine(shrink, 0.0)?;
            let direction = (first_unbiased / second_unbiased.sqrt()?.affine(1.0, h.eps)?)?;
            let value = (shrunk - direction.affine(h.lr, 0.0)?)?;
            p.var.set(&value)?;
            p.first_moment = first;
            p.second_moment = second;
        }
        Ok(())
    }

    /// This optimiser's state (copied moments, step counter, hyper-parameters) bound to
    /// `vars`: the copies of its parameters, in the same order and shapes (the `Var`s of a
    /// duplicated model, see [`duplicate_var`]).
    pub(super) fn duplicate(&self, vars: Vec<Var>) -> candle_core::Result<Self> {
        if vars.len() != self.parameters.len() {
            candle_core::bail!(
                "dense AdamW holds {} parameters, its duplicate was handed {}",
                self.parameters.len(),
                vars.len()
            );
        }
        let parameters = self
            .parameters
            .iter()
            .zip(vars)
            .map(|(p, var)| {
                if var.shape() != p.var.shape() {
                    candle_core::bail!(
                        "dense AdamW parameter of shape {:?} handed a duplicate of shape {:?}",
                        p.var.shape(),
                        var.shape()
                    );
                }
                Ok(DenseParameter {
                    name: p.name.clone(),
                    var,
                    first_moment: p.first_moment.copy()?,
                    second_moment: p.second_moment.copy()?,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            parameters,
            steps: self.steps,
            hyper: self.hyper,
        })
    }

    /// Saves each parameter's value and moments as the tensors `{name}`,
    /// `{name}.first_moment` and `{name}.second_moment`, and the step counter as the scalar
    /// `{key}.steps`.
    pub(super) fn save(&self, key: &str, state: &mut ModelState) -> Result<(), ModelError> {
        for p in &self.parameters {
            state.insert_snapshot(&p.name, p.var.as_tensor())?;
            state.insert_snapshot(&format!("{}.first_moment", p.name), &p.first_moment)?;
            state.insert_snapshot(&format!("{}.second_moment", p.name), &p.second_moment)?;
        }
        state.set_scalar(&format!("{key}.steps"), self.steps)
    }

    /// Sets the parameters (in place, so the model's `Var`s hold the saved values), the
    /// moments and the step counter to what [`DenseAdamW::save`] saved under `key`. Every
    /// part is read and checked before anything changes.
    pub(super) fn load(&mut self, key: &str, state: &ModelState) -> Result<(), ModelError> {
        let steps = state.scalar(&format!("{key}.steps"))?;
        let saved = self
            .parameters
            .iter()
            .map(|p| {
                let (dims, device) = (p.var.dims(), p.var.device());
                Ok([
                    state.tensor_for(&p.name, dims, device)?,
                    state.tensor_for(&format!("{}.first_moment", p.name), dims, device)?,
                    state.tensor_for(&format!("{}.second_moment", p.name), dims, device)?,
                ])
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        for (p, [value, first, second]) in self.parameters.iter_mut().zip(saved) {
            p.var.set(&value)?;
            p.first_moment = first;
            p.second_moment = second;
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
impl DenseAdamW {
    /// Whether a moment still holds an autograd graph (it must not: it would keep every
    /// step's graph alive).
    pub(super) fn moments_track_ops(&self) -> bool {
        self.parameters
            .iter()
            .any(|p| p.first_moment.track_op() || p.second_moment.track_op())
    }
}

/// A new `Var` holding a copy of `var`'s values in its own storage: writing either leaves
/// the other alone (a cloned `Var` shares its storage).
pub(super) fn duplicate_var(var: &Var) -> candle_core::Result<Var> {
    Var::from_tensor(&var.as_tensor().copy()?)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::Optimizer;

    use super::*;

    fn host(var: &Var) -> Vec<f32> {
        var.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    }

    /// Deterministic gradients of `var`'s shape for step `step`, of mixed signs and scales.
    fn gradient(var: &Var, step: usize, salt: f32) -> Tensor {
        let n = var.elem_count();
        let values: Vec<f32> = (0..n)
            .map(|k| {
                ((k as f32 * 1.37 + step as f32 * 0.61 + salt).sin()) * 10f32.powi(k as i32 % 3 - 1)
            })
            .collect();
        Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap()
    }

    /// Two parameters (values from `seed`), the second without a gradient every third step.
    fn parameters(seed: f32) -> Vec<Var> {
        let values = |n: usize, salt: f32| -> Vec<f32> {
            (0..n)
                .map(|k| (k as f32 * 0.77 + salt).cos() * 0.3)
                .collect()
        };
        vec![
            Var::from_vec(values(12, seed), (3, 4), &Device::Cpu).unwrap(),
            Var::from_vec(values(5, seed + 1.0), (1, 5), &Device::Cpu).unwrap(),
        ]
    }

    /// `vars` named `p0`, `p1`, ...
    fn named(vars: &[Var]) -> Vec<(String, Var)> {
        vars.iter()
            .enumerate()
            .map(|(k, var)| (format!("p{k}"), var.clone()))
            .collect()
    }

    fn grads_at(vars: &[Var], step: usize) -> GradStore {
        let mut grads = GradStore::default();
        for (k, var) in vars.iter().enumerate() {
            if k == 1 && step % 3 == 2 {
                continue;
            }
            grads.insert(var.as_tensor(), gradient(var, step, k as f32));
        }
        grads
    }

    #[test]
    fn steps_are_bit_identical_to_candle_nn_adamw() {
        let row_optimizers = [
            OptimizerParams::Adam {
                lr: 0.01,
                beta1: 0.8,
                beta2: 0.95,
                eps: 1e-6,
                weight_decay: 0.3,
            },
            OptimizerParams::Sgd {
                lr: 0.05,
                weight_decay: 0.1,
            },
        ];
        for row_optimizer in row_optimizers {
            let (lr, decay) = (0.02, 0.05);
            let ours_vars = parameters(0.5);
            let theirs_vars = parameters(0.5);
            let mut ours = DenseAdamW::new(named(&ours_vars), row_optimizer, lr, decay).unwrap();
            let (beta1, beta2, eps) = match row_optimizer {
                OptimizerParams::Adam {
                    beta1, beta2, eps, ..
                } => (beta1, beta2, eps),
                OptimizerParams::Sgd { .. } => (0.9, 0.999, 1e-8),
            };
            let mut theirs = candle_nn::AdamW::new(
                theirs_vars.clone(),
                candle_nn::ParamsAdamW {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay: decay,
                },
            )
            .unwrap();
            for step in 0..8 {
                ours.step(&grads_at(&ours_vars, step)).unwrap();
                theirs.step(&grads_at(&theirs_vars, step)).unwrap();
                for (a, b) in ours_vars.iter().zip(&theirs_vars) {
                    assert_eq!(host(a), host(b), "{row_optimizer:?}, step {step}");
                }
            }
            assert_ne!(
                host(&ours_vars[0]),
                host(&parameters(0.5)[0]),
                "the steps moved"
            );
        }
    }

    #[test]
    fn a_duplicate_steps_like_the_original_and_independently_of_it() {
        let row_optimizer = OptimizerParams::Adam {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let vars = parameters(2.0);
        let mut original = DenseAdamW::new(named(&vars), row_optimizer, 0.01, 0.01).unwrap();
        for step in 0..4 {
            original.step(&grads_at(&vars, step)).unwrap();
        }
        let copies: Vec<Var> = vars.iter().map(|v| duplicate_var(v).unwrap()).collect();
        let mut copy = original.duplicate(copies.clone()).unwrap();
        let at_copy: Vec<Vec<f32>> = copies.iter().map(host).collect();

        // The original steps alone: the copy's parameters do not move.
        original.step(&grads_at(&vars, 4)).unwrap();
        assert_eq!(copies.iter().map(host).collect::<Vec<_>>(), at_copy);
        // The copy takes the same step from the same state: the same bits.
        copy.step(&grads_at(&copies, 4)).unwrap();
        for (a, b) in vars.iter().zip(&copies) {
            assert_eq!(host(a), host(b));
        }
        // And later steps too (moments and step counter were carried over).
        for step in 5..8 {
            original.step(&grads_at(&vars, step)).unwrap();
            copy.step(&grads_at(&copies, step)).unwrap();
        }
        for (a, b) in vars.iter().zip(&copies) {
            assert_eq!(host(a), host(b));
        }

        let wrong = vec![Var::zeros((2, 2), DType::F32, &Device::Cpu).unwrap()];
        assert!(original.duplicate(wrong).is_err());
    }

    #[test]
    fn a_loaded_optimiser_steps_like_the_saved_one() {
        let row_optimizer = OptimizerParams::Sgd {
            lr: 0.05,
            weight_decay: 0.0,
        };
        let vars = parameters(1.0);
        let mut original = DenseAdamW::new(named(&vars), row_optimizer, 0.01, 0.02).unwrap();
        for step in 0..3 {
            original.step(&grads_at(&vars, step)).unwrap();
        }
        let mut state = ModelState {
            kind: "test".into(),
            tensors: Default::default(),
            scalars: serde_json::json!({}),
        };
        original.save("dense", &mut state).unwrap();

        let fresh = parameters(1.0);
        let mut loaded = DenseAdamW::new(named(&fresh), row_optimizer, 0.01, 0.02).unwrap();
        loaded.load("dense", &state).unwrap();
        assert_eq!(loaded.steps, 3);
        for step in 3..6 {
            original.step(&grads_at(&vars, step)).unwrap();
            loaded.step(&grads_at(&fresh, step)).unwrap();
        }
        for (a, b) in vars.iter().zip(&fresh) {
            assert_eq!(host(a), host(b));
        }

        state.tensors.remove("p1.second_moment");
        let err = loaded.load("dense", &state).unwrap_err().to_string();
        assert!(err.contains("no tensor `p1.second_moment`"), "{err}");
    }
}
