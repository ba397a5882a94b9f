//! The encoder on any candle device (the GPU path): candle-transformers' `BertModel` on
//! padded, length-sorted batches, with mean pooling over the attention mask and L2
//! normalisation done on the device.
//!
//! On the CPU the encoder uses its own forward pass (`super::cpu`); this path also runs
//! there, which is how the tests compare the two implementations.

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

use super::profile::StageTimes;
use super::tokens::Ragged;

/// A candle-transformers BERT on a device.
pub struct CandleBert {
    model: BertModel,
    device: Device,
    pad_id: u32,
}

impl CandleBert {
    /// Load the model from `vb` (whose device is where it will run).
    pub fn load(vb: VarBuilder, config: &Config) -> candle_core::Result<Self> {
        let device = vb.device().clone();
        Ok(Self {
            model: BertModel::load(vb, config)?,
            device,
            pad_id: config.pad_token_id as u32,
        })
    }

    /// Embed each batch of sequences and write row `seq` of `out` (`hidden` floats per
    /// sequence) for every sequence index in `batches`.
    pub fn encode(
        &self,
        tokens: &Ragged,
        batches: &[Vec<usize>],
        hidden: usize,
        out: &mut [f32],
        times: &mut StageTimes,
    ) -> candle_core::Result<()> {
        let start = std::time::Instant::now();
        for batch in batches {
            let width = batch
                .iter()
                .map(|&s| tokens.get(s).len())
                .max()
                .unwrap_or(0);
            if width == 0 {
                continue;
            }
            let mut ids = Vec::with_capacity(batch.len() * width);
            let mut mask = Vec::with_capacity(batch.len() * width);
            for &seq in batch {
                let seq = tokens.get(seq);
                ids.extend_from_slice(seq);
                ids.extend(std::iter::repeat_n(self.pad_id, width - seq.len()));
                mask.extend(std::iter::repeat_n(1u32, seq.len()));
                mask.extend(std::iter::repeat_n(0u32, width - seq.len()));
            }
            let shape = (batch.len(), width);
            let ids = Tensor::from_vec(ids, shape, &self.device)?;
            let mask = Tensor::from_vec(mask, shape, &self.device)?;
            let types = ids.zeros_like()?;
            let states = self.model.forward(&ids, &types, Some(&mask))?;
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = states.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?;
            let mean = summed.broadcast_div(&counts)?;
            let norm = mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
            let rows = mean.broadcast_div(&norm)?.to_vec2::<f32>()?;
            for (&seq, row) in batch.iter().zip(rows) {
                out[seq * hidden..(seq + 1) * hidden].copy_from_slice(&row);
            }
        }
        times.forward += start.elapsed().as_secs_f64();
        Ok(())
    }
}
