//! Low-rank adapters (LoRA, Hu et al. 2021, arXiv:2106.09685) of one projection weight.
//!
//! A projection `y = x W^T + b` with `W` of shape `[out, in]` becomes
//! `y = x W^T + b + (alpha / rank) (x A^T) B^T`: `A` (`[rank, in]`) and `B` (`[out, rank]`)
//! train, `W` stays the pretrained weight. As in Hugging Face PEFT, `A` starts uniform in
//! `±1/sqrt(in)` (its Kaiming-uniform initialisation with `a = sqrt(5)`) and `B` at zero,
//! so the adapted projection starts equal to the pretrained one.

use candle_core::{DType, Device, Tensor, Var};

use crate::model::dense_adam::duplicate_var;
use crate::model::init::uniform_values;
use crate::plan::params::LoraAdapters;

/// The adapter pair `(A, B)` of one projection, and its scale `alpha / rank`.
pub(super) struct LowRank {
    /// `A`, `[rank, in]`.
    down: Var,
    /// `B`, `[out, rank]`.
    up: Var,
    scale: f64,
}

impl LowRank {
    /// Fresh adapters for a `[out, in]` weight: `A` drawn from `seed` and `name`, `B` zero.
    pub(super) fn new(
        lora: LoraAdapters,
        (out, input): (usize, usize),
        seed: u64,
        name: &str,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let bound = 1.0 / (input.max(1) as f64).sqrt();
        let down = uniform_values(seed, name, lora.rank * input, bound);
        Ok(Self {
            down: Var::from_vec(down, (lora.rank, input), device)?,
            up: Var::zeros((out, lora.rank), DType::F32, device)?,
            scale: lora.alpha / lora.rank as f64,
        })
    }

    /// What the adapters add to the projection of `x` (`[rows, in]`): `scale (x A^T) B^T`.
    pub(super) fn delta(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.down.as_tensor().t()?)?
            .matmul(&self.up.as_tensor().t()?)?
            * self.scale
    }

    /// The adapted weight `W + scale B A`, for a forward pass without adapters.
    pub(super) fn merged(&self, weight: &Tensor) -> candle_core::Result<Tensor> {
        weight + (self.up.as_tensor().matmul(self.down.as_tensor())? * self.scale)?
    }

    /// The trained parameters, named `lora_a` and `lora_b`.
    pub(super) fn named_vars(&self) -> [(&'static str, Var); 2] {
        [("lora_a", self.down.clone()), ("lora_b", self.up.clone())]
    }

    /// The same adapters with their own copy of the parameters.
    pub(super) fn duplicate(&self) -> candle_core::Result<Self> {
        Ok(Self {
            down: duplicate_var(&self.down)?,
            up: duplicate_var(&self.up)?,
            scale: self.scale,
        })
    }
}
