//! Linear layers evaluated on the host, one input row at a time, with the fixed summation
//! order of [`crate::scoring::dot`]: what models whose scoring rows are computed (a text
//! projection, MLP towers) export them with.
//!
//! A matrix product on a device does not promise that a row's result is independent of the
//! other rows in the product (the CPU GEMM picks kernels and blockings by shape: exporting
//! 5 rows and 40 rows gave rows differing in the last bit). The incremental engine needs a
//! row to be a pure function of the parameters (the driver compares maintained scores with
//! rows exported afresh, and a run must give the same bits however its rows were exported), so exports
//! evaluate each row alone, here, in the same order on every device. Training keeps the
//! device's matrix products.

use candle_core::Tensor;

use crate::scoring::dot;

/// A linear map `y = W x + b` with `W` held row-major as `[outputs, inputs]`.
#[derive(Clone, Debug)]
pub(super) struct HostLinear {
    inputs: usize,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl HostLinear {
    /// The map with weights `[outputs, inputs]` and optional bias `[outputs]` (any shape
    /// with that many elements), copied from the device.
    pub(super) fn new(weights: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Self> {
        let (outputs, inputs) = weights.dims2()?;
        let weights = weights.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let bias = match bias {
            Some(b) => b.flatten_all()?.to_vec1::<f32>()?,
            None => vec![0.0; outputs],
        };
        if bias.len() != outputs {
            candle_core::bail!("bias of {} values for {outputs} outputs", bias.len());
        }
        Ok(Self {
            inputs,
            weights,
            bias,
        })
    }

    /// Number of outputs.
    pub(super) fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// Appends `W x + b` to `out`.
    pub(super) fn apply(&self, x: &[f32], out: &mut Vec<f32>) {
        debug_assert_eq!(x.len(), self.inputs);
        for (row, b) in self.weights.chunks_exact(self.inputs).zip(&self.bias) {
            out.push(b + dot(row, x));
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn applies_rows_of_weights_plus_bias() {
        let w =
            Tensor::from_vec(vec![1.0f32, 2.0, 3.0, -1.0, 0.5, 0.0], (2, 3), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(vec![0.5f32, -2.0], 2, &Device::Cpu).unwrap();
        let map = HostLinear::new(&w, Some(&b)).unwrap();
        assert_eq!(map.outputs(), 2);
        let mut out = vec![9.0];
        map.apply(&[1.0, 1.0, 2.0], &mut out);
        assert_eq!(out, vec![9.0, 1.0 + 2.0 + 6.0 + 0.5, -1.0 + 0.5 - 2.0]);
        // A transposed (strided) weight view is read in its logical layout.
        let map = HostLinear::new(&w.t().unwrap(), None).unwrap();
        let mut out = Vec::new();
        map.apply(&[1.0, 2.0], &mut out);
        assert_eq!(out, vec![-1.0, 3.0, 3.0]);
    }
}
