//! Sparse optimisers over row tables: a step reads and writes only the rows of a batch.
//!
//! A [`RowTable`] is a `[rows, members * width]` parameter table (an embedding table whose
//! rows are laid out as scoring rows, see [`crate::scoring`]) plus the optimiser state it
//! needs. [`SparseOptimizer::step`] takes the per-sample gradients of one batch and updates
//! the rows those samples touch; every other row, and its state, is left bit-for-bit alone.
//! Dense optimiser steps over whole tables were measured 15-60x slower on this workload
//! (`docs/dependencies.md`, "candle").
//!
//! The objective each member minimises is the bootstrap-weighted sum over samples of
//! `w · loss(sample)`. The two optimisers differ in where weight decay enters:
//!
//! - **SGD** adds `weight_decay · w · row` to each sample's gradient, i.e. it minimises
//!   `Σ w · (loss + weight_decay/2 · (|user row|² + |item row|²))`, the objective of
//!   Surprise's SVD (Funk-style per-sample regularisation). A row that appears twice in a
//!   batch receives the sum of both samples' gradients (scatter-add).
//! - **Adam** is *lazy* Adam on the same regularised objective: per-sample gradients (with
//!   their L2 term) are first summed per unique row, then each touched (row, member) block
//!   updates its own first and second moments; blocks outside the batch keep their values
//!   and moments unchanged (no decay of untouched state). The L2 term is coupled (in the
//!   gradient), not decoupled as in AdamW: on MovieLens u1, decoupled decay could not
//!   regularise the rarely seen rows (best test RMSE 0.944 against 0.929 coupled, see
//!   `docs/benchmarks.md`). Bias correction uses a **per-(row, member) step counter**,
//!   not the global step: a row first seen late in training (a new item in a replay) then
//!   takes a full-size first step, where a global counter would treat its fresh moments as
//!   long-averaged. A block counts as touched when its member's summed bootstrap weight over
//!   the batch is positive, so each ensemble member is exactly a lazy-Adam model trained on
//!   its own bootstrap sample.

use candle_core::{DType, Device, Tensor};

use super::{ModelError, ModelState};
use crate::plan::params::OptimizerParams;

/// A parameter table of `members` blocks of `width` floats per row, with the state its
/// optimiser keeps.
#[derive(Debug)]
pub struct RowTable {
    values: Tensor,
    moments: Option<Moments>,
    members: usize,
    width: usize,
    /// Scratch for de-duplicating a batch's rows: `slots[row]` is the row's position among
    /// the batch's unique rows, or `u32::MAX`. Always all `u32::MAX` between steps.
    slots: Vec<u32>,
}

/// Lazy-Adam state of a table: moments shaped like the values, counters `[rows, members]`.
#[derive(Debug)]
struct Moments {
    first: Tensor,
    second: Tensor,
    steps: Tensor,
}

impl RowTable {
    /// A table holding `values` (`[rows, members * width]`, f32), with zeroed state for
    /// `optimizer`.
    pub fn new(
        values: Tensor,
        members: usize,
        width: usize,
        optimizer: &SparseOptimizer,
    ) -> candle_core::Result<Self> {
        let (rows, cols) = values.dims2()?;
        if cols != members * width {
            candle_core::bail!("row table has {cols} columns, expected {members} x {width}");
        }
        // A private copy: steps write into the table in place, so it must not share its
        // storage with the caller's tensor.
        let values = values.to_dtype(DType::F32)?.copy()?;
        let moments = match optimizer {
            SparseOptimizer::Sgd { .. } => None,
            SparseOptimizer::Adam { .. } => {
                Some(Moments::zeros(rows, members, width, values.device())?)
            }
        };
        Ok(Self {
            values,
            moments,
            members,
            width,
            slots: vec![u32::MAX; rows],
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.slots.len()
    }

    /// The whole table, `[rows, members * width]`.
    pub fn values(&self) -> &Tensor {
        &self.values
    }

    /// Rows `index` (u32, `[n]`) as `[n, members, width]`.
    pub fn gather(&self, index: &Tensor) -> candle_core::Result<Tensor> {
        let n = index.dims1()?;
        self.values
            .index_select(index, 0)?
            .reshape((n, self.members, self.width))
    }

    /// An independent copy of the table and its optimiser state, in new storage: steps
    /// write into tables in place, so a table sharing storage (a clone of its tensors) would
    /// follow the original's steps.
    pub fn duplicate(&self) -> candle_core::Result<Self> {
        let moments = match &self.moments {
            Some(m) => Some(Moments {
                first: m.first.copy()?,
                second: m.second.copy()?,
                steps: m.steps.copy()?,
            }),
            None => None,
        };
        Ok(Self {
            values: self.values.copy()?,
            moments,
            members: self.members,
            width: self.width,
            slots: self.slots.clone(),
        })
    }

    /// Saves the values as `{prefix}.values` and, under Adam, the moments and step
    /// counters as `{prefix}.first_moment`, `{prefix}.second_moment` and `{prefix}.steps`.
    pub(super) fn save(&self, prefix: &str, state: &mut ModelState) -> Result<(), ModelError> {
        state.insert_snapshot(&format!("{prefix}.values"), &self.values)?;
        if let Some(m) = &self.moments {
            state.insert_snapshot(&format!("{prefix}.first_moment"), &m.first)?;
            state.insert_snapshot(&format!("{prefix}.second_moment"), &m.second)?;
            state.insert_snapshot(&format!("{prefix}.steps"), &m.steps)?;
        }
        Ok(())
    }

    /// A table like this one (members, width, optimiser, device) holding what
    /// [`RowTable::save`] saved under `prefix`, with as many rows as were saved.
    pub(super) fn restored(&self, prefix: &str, state: &ModelState) -> Result<Self, ModelError> {
        let name = format!("{prefix}.values");
        let cols = self.members * self.width;
        let rows = match *state.tensor(&name)?.shape.as_slice() {
            [rows, c] if c == cols => rows,
            ref dims => {
                return Err(ModelError::Input(format!(
                    "model state tensor `{name}` has shape {dims:?}, but this model's rows \
                     hold {cols} values"
                )));
            }
        };
        let device = self.values.device();
        let moments = match self.moments {
            Some(_) => Some(Moments {
                first: state.tensor_for(
                    &format!("{prefix}.first_moment"),
                    &[rows, cols],
                    device,
                )?,
                second: state.tensor_for(
                    &format!("{prefix}.second_moment"),
                    &[rows, cols],
                    device,
                )?,
                steps: state.tensor_for(
                    &format!("{prefix}.steps"),
                    &[rows, self.members],
                    device,
                )?,
            }),
            None => None,
        };
        Ok(Self {
            values: state.tensor_for(&name, &[rows, cols], device)?,
            moments,
            members: self.members,
            width: self.width,
            slots: vec![u32::MAX; rows],
        })
    }

    /// Append rows (`[n, members * width]`) with zeroed optimiser state; existing rows and
    /// their state are unchanged.
    pub fn append(&mut self, rows: &Tensor) -> candle_core::Result<()> {
        let n = rows.dims2()?.0;
        if n == 0 {
            return Ok(());
        }
        let device = self.values.device().clone();
        self.values = Tensor::cat(&[&self.values, rows], 0)?.contiguous()?;
        if let Some(m) = &mut self.moments {
            let fresh = Moments::zeros(n, self.members, self.width, &device)?;
            m.first = Tensor::cat(&[&m.first, &fresh.first], 0)?.contiguous()?;
            m.second = Tensor::cat(&[&m.second, &fresh.second], 0)?.contiguous()?;
            m.steps = Tensor::cat(&[&m.steps, &fresh.steps], 0)?.contiguous()?;
        }
        self.slots.resize(self.slots.len() + n, u32::MAX);
        Ok(())
    }
}

impl Moments {
    fn zeros(
        rows: usize,
        members: usize,
        width: usize,
        device: &Device,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            first: Tensor::zeros((rows, members * width), DType::F32, device)?,
            second: Tensor::zeros((rows, members * width), DType::F32, device)?,
            steps: Tensor::zeros((rows, members), DType::F32, device)?,
        })
    }
}

/// Largest number of rows of `row_len` floats that one elementwise operation may cover.
///
/// On the CPU, candle hands elementwise operations of 64 Ki elements or more to a pool of
/// pinned, spin-waiting threads. On a loaded machine (the dataflow's workers, other
/// processes) those threads wait for cores and a step became 10x slower (measured: u1, dim
/// 128, 5 epochs took 8.0 s instead of 0.7 s at load 5 on 2 cores). Training therefore
/// evaluates a batch in blocks below that size on the CPU, with exactly the same result as
/// one pass (every operation is row-wise). Other devices take the whole batch at once.
pub fn block_rows(device: &Device, row_len: usize) -> usize {
    const CPU_ELEMENTWISE_LIMIT: usize = 64 * 1024 - 1;
    if device.is_cpu() {
        (CPU_ELEMENTWISE_LIMIT / row_len.max(1)).max(1)
    } else {
        usize::MAX
    }
}

/// `(start, len)` of consecutive blocks of at most `block` out of `n`.
pub fn blocks(n: usize, block: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n)
        .step_by(block.max(1))
        .map(move |start| (start, block.min(n - start)))
}

/// A block of one batch's gradients with respect to the rows of one table, one entry per
/// sample.
///
/// Each sample's gradient is given in factored form, `scale · direction`: for models whose
/// raw prediction is linear in the row (MF: `∂raw/∂row = [1, other row's factors]`), `scale`
/// is `w · ∂loss/∂raw`. SGD then forms its update without materialising the gradient.
#[derive(Debug)]
pub struct RowGradients<'a> {
    /// The row each sample touches.
    pub rows: &'a [u32],
    /// The rows' values as gathered before this step, `[n, members, width]`.
    pub values: Tensor,
    /// Weighted derivative of each sample's loss with respect to its raw prediction,
    /// `[n, members, 1]`.
    pub scale: Tensor,
    /// Derivative of the raw prediction with respect to the row, `[n, members, width]`.
    pub direction: Tensor,
    /// Each sample's bootstrap weight in each member, `[n, members]`.
    pub weights: Tensor,
}

/// The row gradients of one training step, collected block by block and applied to the
/// user and item tables at its end: the items' blocks first, then the BPR negatives' (the
/// order in which the optimiser sums the gradients of a row).
#[derive(Debug, Default)]
pub struct StepGradients<'a> {
    users: Vec<RowGradients<'a>>,
    items: Vec<RowGradients<'a>>,
    negatives: Vec<RowGradients<'a>>,
}

impl<'a> StepGradients<'a> {
    /// A block's gradients with respect to its samples' user rows and item rows: the rows
    /// (`users`, `items`), each side's gathered values and direction, and the scale and
    /// bootstrap weights both sides share (see [`RowGradients`]).
    pub fn push_block(
        &mut self,
        (users, items): (&'a [u32], &'a [u32]),
        (user_values, user_direction): (Tensor, Tensor),
        (item_values, item_direction): (Tensor, Tensor),
        scale: Tensor,
        weights: Tensor,
    ) {
        self.users.push(RowGradients {
            rows: users,
            values: user_values,
            scale: scale.clone(),
            direction: user_direction,
            weights: weights.clone(),
        });
        self.items.push(RowGradients {
            rows: items,
            values: item_values,
            scale,
            direction: item_direction,
            weights,
        });
    }

    /// A block's gradients with respect to its BPR negatives' item rows.
    pub fn push_negatives(&mut self, negatives: RowGradients<'a>) {
        self.negatives.push(negatives);
    }

    /// One `optimizer` step on each table.
    pub fn apply(
        mut self,
        optimizer: &SparseOptimizer,
        users: &mut RowTable,
        items: &mut RowTable,
    ) -> candle_core::Result<()> {
        self.items.append(&mut self.negatives);
        optimizer.step(users, &self.users)?;
        optimizer.step(items, &self.items)
    }
}

/// A sparse optimiser and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SparseOptimizer {
    /// Stochastic gradient descent.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// L2 coefficient, applied with each sample's gradient.
        weight_decay: f64,
    },
    /// Lazy Adam with per-(row, member) bias correction.
    Adam {
        /// Learning rate.
        lr: f64,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator epsilon.
        eps: f64,
        /// L2 coefficient, applied with each sample's gradient.
        weight_decay: f64,
    },
}

impl From<OptimizerParams> for SparseOptimizer {
    fn from(p: OptimizerParams) -> Self {
        match p {
            OptimizerParams::Sgd { lr, weight_decay } => SparseOptimizer::Sgd { lr, weight_decay },
            OptimizerParams::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => SparseOptimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            },
        }
    }
}

impl SparseOptimizer {
    /// One step over a batch given as consecutive blocks of samples: updates, in place, the
    /// rows of `table` that the batch touches.
    pub fn step(
        &self,
        table: &mut RowTable,
        batch: &[RowGradients<'_>],
    ) -> candle_core::Result<()> {
        match *self {
            SparseOptimizer::Sgd { lr, weight_decay } => {
                for block in batch {
                    sgd_block(table, block, lr, weight_decay)?;
                }
                Ok(())
            }
            SparseOptimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => adam_step(
                table,
                batch,
                AdamStep {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                },
            ),
        }
    }
}

/// Each of `rows` repeated across `cols` columns, as scatter operations take their index.
/// Built on the host, where the rows are already known: materialising a broadcast index on
/// the device was the largest cost of a CPU step.
fn column_index(rows: &[u32], cols: usize, device: &Device) -> candle_core::Result<Tensor> {
    let mut index = Vec::with_capacity(rows.len() * cols);
    for &row in rows {
        index.extend(std::iter::repeat_n(row, cols));
    }
    Tensor::from_vec(index, (rows.len(), cols), device)
}

/// Per-sample gradients of `w · (loss + weight_decay/2 · |row|²)`: the data gradient plus
/// `weight_decay · w · row`, each scaled by `factor`.
fn regularised(
    g: &RowGradients<'_>,
    weight_decay: f64,
    factor: f64,
) -> candle_core::Result<Tensor> {
    // The scalings apply to the small `[n, members, 1]` factors, not to the full rows.
    let data = g.scale.affine(factor, 0.0)?.broadcast_mul(&g.direction)?;
    if weight_decay == 0.0 {
        return Ok(data);
    }
    let decay = g.weights.affine(factor * weight_decay, 0.0)?.unsqueeze(2)?;
    data + g.values.broadcast_mul(&decay)?
}

/// SGD's contribution of one block: its samples' updates are added to their rows (rows that
/// repeat add up, in sample order). Blocks read the values gathered before the step, so a
/// batch in blocks equals the batch in one piece.
///
/// Two ways to add, with bit-identical results: an in-place scatter-add, element by
/// element, whose cost grows with the block; or `index_add`, which adds whole rows
/// (vectorised) into a fresh copy of the table, whose cost grows with the table. The copy
/// wins while the table has at most twice as many rows as the block (MovieLens 100K, batch
/// 1024: a u1 fit went from 0.74 s to 0.31 s); with 9.5x as many rows it lost (0.81 s
/// against 0.40 s on ml-latest-small's item table), so larger tables are scattered.
fn sgd_block(
    table: &mut RowTable,
    g: &RowGradients<'_>,
    lr: f64,
    weight_decay: f64,
) -> candle_core::Result<()> {
    let cols = table.members * table.width;
    let n = g.rows.len();
    let delta = regularised(g, weight_decay, -lr)?.reshape((n, cols))?;
    let device = table.values.device().clone();
    if table.rows() <= 2 * n {
        let index = Tensor::from_slice(g.rows, n, &device)?;
        table.values = table.values.index_add(&index, &delta, 0)?;
        Ok(())
    } else {
        let index = column_index(g.rows, cols, &device)?;
        table.values.scatter_add_set(&index, &delta, 0)
    }
}

struct AdamStep {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

fn adam_step(
    table: &mut RowTable,
    batch: &[RowGradients<'_>],
    h: AdamStep,
) -> candle_core::Result<()> {
    let (members, width) = (table.members, table.width);
    let cols = members * width;
    let device = table.values.device().clone();

    // Unique rows in order of first appearance, and each sample's position among them.
    let mut unique = Vec::new();
    let mut positions = Vec::with_capacity(batch.len());
    for block in batch {
        let mut position = Vec::with_capacity(block.rows.len());
        for &row in block.rows {
            let slot = &mut table.slots[row as usize];
            if *slot == u32::MAX {
                *slot = unique.len() as u32;
                unique.push(row);
            }
            position.push(*slot);
        }
        positions.push(position);
    }
    for &row in &unique {
        table.slots[row as usize] = u32::MAX;
    }

    // Gradients (with their L2 term) and bootstrap weights summed per unique row.
    let n = unique.len();
    let mut grad = Tensor::zeros((n, cols), DType::F32, &device)?;
    let mut weight = Tensor::zeros((n, members), DType::F32, &device)?;
    for (block, position) in batch.iter().zip(positions) {
        let len = position.len();
        let position = Tensor::from_vec(position, len, &device)?;
        let grads = regularised(block, h.weight_decay, 1.0)?.reshape((len, cols))?;
        grad = grad.index_add(&position, &grads, 0)?;
        weight = weight.index_add(&position, &block.weights, 0)?;
    }

    // The update is row-wise, so unique rows are processed in blocks too.
    let Some(moments) = table.moments.as_mut() else {
        candle_core::bail!("row table was built without Adam state");
    };
    for (start, len) in blocks(n, block_rows(&device, cols)) {
        let rows = &unique[start..start + len];
        let index = Tensor::from_slice(rows, len, &device)?;
        let gather3 = |t: &Tensor| t.index_select(&index, 0)?.reshape((len, members, width));
        let g = grad.narrow(0, start, len)?.reshape((len, members, width))?;
        let touched = weight
            .narrow(0, start, len)?
            .gt(0.0)?
            .to_dtype(DType::F32)?; // [len, members]
        let touched3 = touched.unsqueeze(2)?; // broadcasts over width
        let x = gather3(&table.values)?;
        let m = gather3(&moments.first)?;
        let v = gather3(&moments.second)?;
        let t = moments.steps.index_select(&index, 0)?;

        let m_new = ((&g - &m)?
            .affine(1.0 - h.beta1, 0.0)?
            .broadcast_mul(&touched3)?
            + &m)?;
        let v_new = ((g.sqr()? - &v)?
            .affine(1.0 - h.beta2, 0.0)?
            .broadcast_mul(&touched3)?
            + &v)?;
        let t_new = (&t + &touched)?;
        // 1 - beta^t, with t >= 1 so that untouched fresh blocks do not divide by zero
        // (their update is masked out anyway).
        let t_safe = t_new.maximum(1.0)?;
        let correction = |beta: f64| -> candle_core::Result<Tensor> {
            if beta <= 0.0 {
                return t_safe.ones_like()?.unsqueeze(2);
            }
            t_safe
                .affine(beta.ln(), 0.0)?
                .exp()?
                .affine(-1.0, 1.0)?
                .unsqueeze(2)
        };
        let m_hat = m_new.broadcast_div(&correction(h.beta1)?)?;
        let v_hat = v_new.broadcast_div(&correction(h.beta2)?)?;
        let update = (m_hat / v_hat.sqrt()?.affine(1.0, h.eps)?)?;
        let x_new = (&x - update.affine(h.lr, 0.0)?.broadcast_mul(&touched3)?)?;

        let index_cols = column_index(rows, cols, &device)?;
        let flat = |t: Tensor| t.reshape((len, cols));
        table.values.scatter_set(&index_cols, &flat(x_new)?, 0)?;
        moments.first.scatter_set(&index_cols, &flat(m_new)?, 0)?;
        moments.second.scatter_set(&index_cols, &flat(v_new)?, 0)?;
        moments
            .steps
            .scatter_set(&column_index(rows, members, &device)?, &t_new, 0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_every_row_once() {
        let covered: Vec<(usize, usize)> = blocks(10, 4).collect();
        assert_eq!(covered, vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(blocks(0, 4).count(), 0);
        assert_eq!(blocks(3, usize::MAX).collect::<Vec<_>>(), vec![(0, 3)]);
        assert_eq!(block_rows(&Device::Cpu, 165), 397);
        assert_eq!(block_rows(&Device::Cpu, 1 << 20), 1);
    }
}
