//! The non-matrix-product parts of a BERT layer on the CPU: layer norm, GELU, softmax
//! attention over one sequence, mean pooling and L2 normalisation.
//!
//! Each is a plain loop written so the compiler can vectorise it: reductions keep 16
//! partial sums (one vector's worth) instead of one, which is what lets them vectorise
//! under strict IEEE rules, and short rows are padded to whole vectors. On x86-64 each
//! function is compiled twice, once for AVX-512, and picks at run time.
//!
//! `exp` and `erf` are our own branch-free approximations (a scalar `libm` call per
//! element would not vectorise and would cost more than the matrix products around it);
//! their accuracy is checked against float64 references in the tests below.

/// Lanes per vector of partial sums.
const LANES: usize = 16;

/// Compile `body` for AVX-512, for AVX2 with FMA and for the baseline target, and pick
/// at run time. (`mul_add` is a single instruction in the first two, a slow but exact
/// library call in the third, which only CPUs older than 2013 take.)
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                {
                    // SAFETY: the features `avx512` is compiled for were detected.
                    return unsafe { avx512($($arg),*) };
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the features `avx2` is compiled for were detected.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// Sum of `x`, with 16 partial sums so that it vectorises.
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `e^x` for `f32`, branch-free: `x = n·ln2 + r` with `|r| <= ln2/2`, `e^r` by its Taylor
/// polynomial to degree 7 (truncation error below 1e-8 relative), `2^n` through the
/// exponent bits. Relative error a few ulp. Inputs below -86 give about 1e-37, not 0:
/// results never become subnormal, which would make every later operation on them take
/// a slow microcode path on x86.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that `n * LN2_HI` is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5·2^23 rounds to an integer (ties to even) held in the low mantissa bits;
    // reading it from the bits avoids a float-to-int conversion that would not vectorise.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-86.0, 88.0);
    let shifted = x.mul_add(LOG2E, ROUND);
    let n = shifted - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p: f32 = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p.mul_add(r, c);
    }
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    p * scale
}

/// `1 + erf(z)`, branch-free, by Abramowitz & Stegun 7.1.26 (`erfc(a) = t·P(t)·e^{-a²}`,
/// `t = 1/(1 + p·a)`, absolute error below 1.5e-7), using `1 + erf(z) = erfc(-z)` for
/// negative `z` so that small results keep their relative accuracy.
#[inline(always)]
fn one_plus_erf(z: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152_1;
    const A5: f32 = 1.061_405_4;
    // erfc(9) is 4e-37: beyond 9 the result is 0 or 2 to within 1e-36, and clamping
    // keeps every intermediate normal (see `exp`).
    let a = z.abs().min(9.0);
    let t = 1.0 / P.mul_add(a, 1.0);
    let poly = t * A5
        .mul_add(t, A4)
        .mul_add(t, A3)
        .mul_add(t, A2)
        .mul_add(t, A1);
    let erfc_a = poly * exp(-a * a);
    if z >= 0.0 { 2.0 - erfc_a } else { erfc_a }
}

/// GELU as BERT defines it (`x/2 · (1 + erf(x/√2))`).
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * one_plus_erf(x * std::f32::consts::FRAC_1_SQRT_2)
}

/// GELU with the tanh approximation (`hidden_act: gelu_approximate`).
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    // tanh(u) = 1 - 2 / (1 + e^{2u}); 1 + tanh(u) = 2 - 2 / (1 + e^{2u}).
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    let u = C * (x + 0.044_715 * x * x * x);
    let one_plus_tanh = 2.0 - 2.0 / (1.0 + exp(2.0 * u));
    0.5 * x * one_plus_tanh
}

/// The feed-forward activation of a BERT layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU, `hidden_act: gelu` (BERT, MiniLM).
    GeluErf,
    /// Tanh-approximated GELU, `hidden_act: gelu_approximate`.
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
}

multiversion! {
    /// Apply `act` to every element of `x` in place.
    pub fn activate(x: &mut [f32], act: Activation) {
        match act {
            Activation::GeluErf => x.iter_mut().for_each(|v| *v = gelu_erf(*v)),
            Activation::GeluTanh => x.iter_mut().for_each(|v| *v = gelu_tanh(*v)),
            Activation::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
    }
}

multiversion! {
    /// For each row of `x` (rows of `gamma.len()` floats): `x = LayerNorm(x + residual)`
    /// with `residual` given, or `x = LayerNorm(x)` without.
    pub fn layer_norm(
        x: &mut [f32],
        residual: Option<&[f32]>,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) {
        let hidden = gamma.len();
        for (row, x_row) in x.chunks_exact_mut(hidden).enumerate() {
            if let Some(residual) = residual {
                for (v, &r) in x_row.iter_mut().zip(&residual[row * hidden..][..hidden]) {
                    *v += r;
                }
            }
            let mean = sum(x_row) / hidden as f32;
            let mut acc = [0f32; LANES];
            let chunks = x_row.chunks_exact(LANES);
            let tail: f32 = chunks.remainder().iter().map(|&v| (v - mean) * (v - mean)).sum();
            for chunk in chunks {
                for (a, &v) in acc.iter_mut().zip(chunk) {
                    *a += (v - mean) * (v - mean);
                }
            }
            let var = (acc.iter().sum::<f32>() + tail) / hidden as f32;
            let inv_std = 1.0 / (var + eps).sqrt();
            for ((v, &g), &b) in x_row.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * inv_std * g + b;
            }
        }
    }
}

/// Shape of the fused query/key/value rows that [`attention`] reads.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    /// Number of attention heads.
    pub count: usize,
    /// Width of one head (`hidden / count`).
    pub dim: usize,
}

/// Scratch space for [`attention`], reused across sequences.
#[derive(Default)]
pub struct AttentionScratch {
    queries: Vec<f32>,
    keys_t: Vec<f32>,
    scores: Vec<f32>,
    inv_totals: Vec<f32>,
}

/// Softmax self-attention over one sequence, every head.
///
/// `qkv` holds the sequence's tokens, one row of `3 * hidden` floats each: queries,
/// keys, values, each split into `heads.count` blocks of `heads.dim`. Writes one row
/// of `hidden` floats per token into `out` (heads side by side, as BERT concatenates
/// them). No mask: a sequence is never padded here.
pub fn attention(qkv: &[f32], out: &mut [f32], heads: Heads, scratch: &mut AttentionScratch) {
    #[cfg(target_arch = "x86_64")]
    if avx512_attention::applies(qkv, heads) {
        // SAFETY: `applies` checked the CPU features and the shapes the kernel needs.
        unsafe { avx512_attention::attention(qkv, out, heads, scratch) };
        return;
    }
    attention_portable(qkv, out, heads, scratch);
}

multiversion! {
    /// [`attention`] in plain Rust.
    fn attention_portable(
        qkv: &[f32],
        out: &mut [f32],
        heads: Heads,
        scratch: &mut AttentionScratch,
    ) {
        let hidden = heads.count * heads.dim;
        let len = qkv.len() / (3 * hidden);
        // Keys are transposed per head so that one query's scores are a sum of
        // `dim` vector updates; the row is padded to whole vectors with zero keys.
        let padded = len.div_ceil(LANES).max(1) * LANES;
        let scale = 1.0 / (heads.dim as f32).sqrt();
        scratch.keys_t.clear();
        scratch.keys_t.resize(heads.dim * padded, 0.0);
        scratch.scores.clear();
        scratch.scores.resize(padded, 0.0);
        for h in 0..heads.count {
            let q_col = h * heads.dim;
            let k_col = hidden + h * heads.dim;
            let v_col = 2 * hidden + h * heads.dim;
            for (j, token) in qkv.chunks_exact(3 * hidden).enumerate() {
                for (d, &k) in token[k_col..k_col + heads.dim].iter().enumerate() {
                    scratch.keys_t[d * padded + j] = k;
                }
            }
            for (i, token) in qkv.chunks_exact(3 * hidden).enumerate() {
                let scores = &mut scratch.scores[..];
                scores.fill(0.0);
                for (d, &q) in token[q_col..q_col + heads.dim].iter().enumerate() {
                    let q = q * scale;
                    let keys = &scratch.keys_t[d * padded..][..padded];
                    for (chunk, k_chunk) in
                        scores.chunks_exact_mut(LANES).zip(keys.chunks_exact(LANES))
                    {
                        for (s, &k) in chunk.iter_mut().zip(k_chunk) {
                            *s = q.mul_add(k, *s);
                        }
                    }
                }
                // Padding lanes must not win the max nor add to the total.
                scores[len..].fill(f32::NEG_INFINITY);
                let mut lane_max = [f32::NEG_INFINITY; LANES];
                for chunk in scores.chunks_exact(LANES) {
                    for (m, &s) in lane_max.iter_mut().zip(chunk) {
                        *m = m.max(s);
                    }
                }
                let max = lane_max.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                for chunk in scores.chunks_exact_mut(LANES) {
                    for s in chunk.iter_mut() {
                        *s = exp(*s - max);
                    }
                }
                scores[len..].fill(0.0);
                let inv_total = 1.0 / sum(scores);
                let o = &mut out[i * hidden + q_col..][..heads.dim];
                o.fill(0.0);
                for (&p, value_row) in scores[..len].iter().zip(qkv.chunks_exact(3 * hidden)) {
                    let p = p * inv_total;
                    for (o, &v) in o.iter_mut().zip(&value_row[v_col..v_col + heads.dim]) {
                        *o = p.mul_add(v, *o);
                    }
                }
            }
        }
    }
}

/// AVX-512 versions of `exp` and erf GELU on 16 lanes, shared by the attention kernel
/// and the matrix-product epilogue.
#[cfg(target_arch = "x86_64")]
pub mod avx512_math {
    use std::arch::x86_64::{
        __m512, _CMP_GE_OQ, _mm512_abs_ps, _mm512_cmp_ps_mask, _mm512_fmadd_ps, _mm512_fnmadd_ps,
        _mm512_mask_blend_ps, _mm512_max_ps, _mm512_min_ps, _mm512_mul_ps, _mm512_rcp14_ps,
        _mm512_scalef_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_sub_ps,
    };

    /// `e^x` on 16 lanes, the same approximation as [`super::exp`].
    ///
    /// # Safety
    /// The CPU must support AVX-512F. (Not a `#[target_feature]` function so that it can
    /// be inlined into the kernels, which are.)
    #[inline(always)]
    pub unsafe fn exp16(x: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe {
            const ROUND: f32 = 12_582_912.0;
            let x = _mm512_min_ps(
                _mm512_max_ps(x, _mm512_set1_ps(-86.0)),
                _mm512_set1_ps(88.0),
            );
            let round = _mm512_set1_ps(ROUND);
            let n = _mm512_sub_ps(
                _mm512_fmadd_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E), round),
                round,
            );
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
            let mut p = _mm512_set1_ps(1.0 / 5040.0);
            for c in [
                1.0 / 720.0,
                1.0 / 120.0,
                1.0 / 24.0,
                1.0 / 6.0,
                0.5,
                1.0,
                1.0,
            ] {
                p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
            }
            _mm512_scalef_ps(p, n)
        }
    }

    /// Erf GELU on 16 lanes: the same formula as [`super::gelu_erf`], with the division
    /// replaced by a 14-bit reciprocal estimate refined by one Newton step (about 1 ulp).
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[inline(always)]
    pub unsafe fn gelu16(x: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe {
            let one = _mm512_set1_ps(1.0);
            let z = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
            let a = _mm512_min_ps(_mm512_abs_ps(z), _mm512_set1_ps(9.0));
            let d = _mm512_fmadd_ps(_mm512_set1_ps(0.327_591_1), a, one);
            let t0 = _mm512_rcp14_ps(d);
            let t = _mm512_fmadd_ps(_mm512_fnmadd_ps(d, t0, one), t0, t0);
            let mut poly = _mm512_set1_ps(1.061_405_4);
            for c in [-1.453_152_1, 1.421_413_7, -0.284_496_74, 0.254_829_6] {
                poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(c));
            }
            let poly = _mm512_mul_ps(poly, t);
            let erfc_a = _mm512_mul_ps(
                poly,
                exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a))),
            );
            let non_negative = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(z, _mm512_setzero_ps());
            let one_plus_erf = _mm512_mask_blend_ps(
                non_negative,
                erfc_a,
                _mm512_sub_ps(_mm512_set1_ps(2.0), erfc_a),
            );
            _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), x), one_plus_erf)
        }
    }
}

/// [`attention`] with AVX-512 intrinsics: per head, the scaled queries are copied out,
/// the keys gathered into a transposed, zero-padded block, and both products are
/// register-blocked over 4 queries at a time.
#[cfg(target_arch = "x86_64")]
mod avx512_attention {
    use std::arch::x86_64::{
        _mm512_add_epi32, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_blend_ps,
        _mm512_mask_i32gather_ps, _mm512_maskz_mov_ps, _mm512_max_ps, _mm512_mul_ps,
        _mm512_mullo_epi32, _mm512_reduce_add_ps, _mm512_reduce_max_ps, _mm512_set1_epi32,
        _mm512_set1_ps, _mm512_setr_epi32, _mm512_setzero_ps, _mm512_storeu_ps, _mm512_sub_ps,
    };

    use super::avx512_math::exp16;
    use super::{AttentionScratch, Heads, LANES};

    /// Queries per register block.
    const ROWS: usize = 4;
    /// Largest head width handled (in vectors of 16).
    const MAX_DIM_VECTORS: usize = 4;

    /// Whether the kernel can run: AVX-512F, a head width of 16, 32, 48 or 64, and
    /// gather offsets that fit in `i32`.
    pub(super) fn applies(qkv: &[f32], heads: Heads) -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && heads.dim.is_multiple_of(LANES)
            && heads.dim / LANES <= MAX_DIM_VECTORS
            && heads.dim > 0
            && qkv.len() < i32::MAX as usize
    }

    /// See [`super::attention`].
    ///
    /// # Safety
    /// [`applies`] must have returned true for `qkv` and `heads`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn attention(
        qkv: &[f32],
        out: &mut [f32],
        heads: Heads,
        scratch: &mut AttentionScratch,
    ) {
        let (dim, hidden) = (heads.dim, heads.count * heads.dim);
        let row_stride = 3 * hidden;
        let len = qkv.len() / row_stride;
        assert!(out.len() >= len * hidden);
        if len == 0 {
            return;
        }
        let dim_vectors = dim / LANES;
        let blocks = len.div_ceil(LANES);
        let padded = blocks * LANES;
        let rows = len.div_ceil(ROWS) * ROWS;
        let tail_mask: u16 = match len % LANES {
            0 => u16::MAX,
            rest => (1u16 << rest) - 1,
        };
        let block_mask = |b: usize| if b + 1 == blocks { tail_mask } else { u16::MAX };
        let scale = _mm512_set1_ps(1.0 / (dim as f32).sqrt());
        let AttentionScratch {
            queries,
            keys_t,
            scores,
            inv_totals,
        } = scratch;
        queries.clear();
        queries.resize(rows * dim, 0.0);
        keys_t.clear();
        keys_t.resize(dim * padded, 0.0);
        scores.clear();
        scores.resize(rows * padded, 0.0);
        inv_totals.clear();
        inv_totals.resize(rows, 0.0);
        let lane_rows = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(row_stride as i32),
        );
        let qkv = qkv.as_ptr();
        let (q, kt, sc) = (
            queries.as_mut_ptr(),
            keys_t.as_mut_ptr(),
            scores.as_mut_ptr(),
        );
        // SAFETY (whole block): every pointer below stays inside its buffer: queries
        // `rows × dim`, keys_t `dim × padded`, scores `rows × padded`, qkv `len ×
        // row_stride` (gathers only read lanes `j < len`), out `len × hidden`.
        unsafe {
            for h in 0..heads.count {
                let (q_col, k_col, v_col) = (h * dim, hidden + h * dim, 2 * hidden + h * dim);
                for i in 0..len {
                    for c in 0..dim_vectors {
                        let v = _mm512_loadu_ps(qkv.add(i * row_stride + q_col + c * LANES));
                        _mm512_storeu_ps(q.add(i * dim + c * LANES), _mm512_mul_ps(v, scale));
                    }
                }
                for b in 0..blocks {
                    let offsets = _mm512_add_epi32(
                        lane_rows,
                        _mm512_set1_epi32((b * LANES * row_stride) as i32),
                    );
                    for d in 0..dim {
                        let k = _mm512_mask_i32gather_ps::<4>(
                            _mm512_setzero_ps(),
                            block_mask(b),
                            offsets,
                            qkv.add(k_col + d),
                        );
                        _mm512_storeu_ps(kt.add(d * padded + b * LANES), k);
                    }
                }
                // Scores, ROWS queries at a time.
                for i0 in (0..rows).step_by(ROWS) {
                    for b in 0..blocks {
                        let mut acc = [_mm512_setzero_ps(); ROWS];
                        for d in 0..dim {
                            let k = _mm512_loadu_ps(kt.add(d * padded + b * LANES));
                            for (r, acc_r) in acc.iter_mut().enumerate() {
                                let q_rd = _mm512_set1_ps(*q.add((i0 + r) * dim + d));
                                *acc_r = _mm512_fmadd_ps(q_rd, k, *acc_r);
                            }
                        }
                        for (r, acc_r) in acc.iter().enumerate() {
                            _mm512_storeu_ps(sc.add((i0 + r) * padded + b * LANES), *acc_r);
                        }
                    }
                }
                // Softmax numerators; padding lanes neither win the max nor add up.
                let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
                for (i, inv_total) in inv_totals.iter_mut().enumerate() {
                    let row = sc.add(i * padded);
                    let mut max = neg_inf;
                    for b in 0..blocks {
                        let s = _mm512_mask_blend_ps(
                            block_mask(b),
                            neg_inf,
                            _mm512_loadu_ps(row.add(b * LANES)),
                        );
                        max = _mm512_max_ps(max, s);
                    }
                    let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
                    let mut total = _mm512_setzero_ps();
                    for b in 0..blocks {
                        let s = _mm512_loadu_ps(row.add(b * LANES));
                        let e = _mm512_maskz_mov_ps(block_mask(b), exp16(_mm512_sub_ps(s, max)));
                        _mm512_storeu_ps(row.add(b * LANES), e);
                        total = _mm512_add_ps(total, e);
                    }
                    *inv_total = 1.0 / _mm512_reduce_add_ps(total);
                }
                // Context = softmax · V, ROWS queries at a time.
                for i0 in (0..rows).step_by(ROWS) {
                    let mut acc = [[_mm512_setzero_ps(); MAX_DIM_VECTORS]; ROWS];
                    for j in 0..len {
                        let value = qkv.add(j * row_stride + v_col);
                        for c in 0..dim_vectors {
                            let v = _mm512_loadu_ps(value.add(c * LANES));
                            for (r, acc_r) in acc.iter_mut().enumerate() {
                                let p = _mm512_set1_ps(*sc.add((i0 + r) * padded + j));
                                acc_r[c] = _mm512_fmadd_ps(p, v, acc_r[c]);
                            }
                        }
                    }
                    for (r, acc_r) in acc.iter().enumerate() {
                        let i = i0 + r;
                        if i >= len {
                            break;
                        }
                        let inv = _mm512_set1_ps(inv_totals[i]);
                        let dst = out.as_mut_ptr().add(i * hidden + q_col);
                        for (c, acc_rc) in acc_r.iter().enumerate().take(dim_vectors) {
                            _mm512_storeu_ps(dst.add(c * LANES), _mm512_mul_ps(*acc_rc, inv));
                        }
                    }
                }
            }
        }
    }
}

multiversion! {
    /// Mean of the rows of `states` (rows of `out.len()` floats), L2-normalised, into
    /// `out`. A zero mean stays zero.
    pub fn mean_pool_normalised(states: &[f32], out: &mut [f32]) {
        let hidden = out.len();
        out.fill(0.0);
        let rows = states.len() / hidden;
        for row in states.chunks_exact(hidden) {
            for (o, &v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
        let inv_rows = 1.0 / rows.max(1) as f32;
        let mut acc = [0f32; LANES];
        for o in out.iter_mut() {
            *o *= inv_rows;
        }
        let chunks = out.chunks_exact(LANES);
        let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
        for chunk in chunks {
            for (a, &v) in acc.iter_mut().zip(chunk) {
                *a += v * v;
            }
        }
        let norm = (acc.iter().sum::<f32>() + tail).sqrt();
        // sentence-transformers divides by max(norm, 1e-12).
        let inv_norm = 1.0 / norm.max(1e-12);
        for o in out.iter_mut() {
            *o *= inv_norm;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in float64 by the series `2/√π · e^{-x²} · Σ 2ⁿ x^{2n+1} / (1·3·…·(2n+1))`,
    /// whose terms are all positive (no cancellation).
    fn erf64(x: f64) -> f64 {
        let (a, mut term, mut total) = (x.abs(), x.abs(), 0.0f64);
        let mut n = 0.0;
        while term > 1e-18 * total.max(1e-300) || n < 5.0 {
            total += term;
            n += 1.0;
            term *= 2.0 * a * a / (2.0 * n + 1.0);
        }
        (2.0 / std::f64::consts::PI.sqrt() * (-a * a).exp() * total).copysign(x)
    }

    fn grid(lo: f32, hi: f32, steps: usize) -> impl Iterator<Item = f32> {
        (0..=steps).map(move |i| lo + (hi - lo) * i as f32 / steps as f32)
    }

    #[test]
    fn exp_is_within_a_few_ulp_of_f64_exp() {
        for x in grid(-80.0, 80.0, 100_000) {
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            assert!(
                ((got - want) / want).abs() < 5e-7,
                "exp({x}) = {got}, expected {want}"
            );
        }
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn gelu_erf_matches_float64_reference() {
        let mut x: Vec<f32> = grid(-30.0, 30.0, 300_001).collect();
        let input = x.clone();
        activate(&mut x, Activation::GeluErf);
        for (&xi, &got) in input.iter().zip(&x) {
            let z = f64::from(xi);
            let want = 0.5 * z * (1.0 + erf64(z / std::f64::consts::SQRT_2));
            let err = (f64::from(got) - want).abs();
            assert!(
                err < 2e-7 * z.abs().max(1.0),
                "gelu({xi}) = {got}, expected {want}"
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_gelu_matches_float64_reference() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        use std::arch::x86_64::{_mm512_loadu_ps, _mm512_storeu_ps};
        let input: Vec<f32> = grid(-12.0, 12.0, 160_000).take(160_000).collect();
        for chunk in input.chunks_exact(16) {
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F was detected; both pointers address 16 floats.
            unsafe {
                let v = avx512_math::gelu16(_mm512_loadu_ps(chunk.as_ptr()));
                _mm512_storeu_ps(got.as_mut_ptr(), v);
            }
            for (&xi, &g) in chunk.iter().zip(&got) {
                let z = f64::from(xi);
                let want = 0.5 * z * (1.0 + erf64(z / std::f64::consts::SQRT_2));
                let err = (f64::from(g) - want).abs();
                assert!(
                    err < 2e-7 * z.abs().max(1.0),
                    "gelu16({xi}) = {g}, expected {want}"
                );
            }
        }
    }

    #[test]
    fn exp_and_gelu_never_return_subnormals() {
        // A subnormal result would make the next operations take x86's slow path.
        let mut x: Vec<f32> = grid(-1000.0, 1000.0, 100_000).collect();
        assert!(x.iter().all(|&v| !exp(v).is_subnormal() && exp(v) > 0.0));
        activate(&mut x, Activation::GeluErf);
        assert!(x.iter().all(|v| v.is_finite() && !v.is_subnormal()));
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            use std::arch::x86_64::{_mm512_loadu_ps, _mm512_storeu_ps};
            for chunk in grid(-1000.0, 1000.0, 16 * 1000)
                .collect::<Vec<_>>()
                .chunks_exact(16)
            {
                let (mut e, mut g) = ([0f32; 16], [0f32; 16]);
                // SAFETY: AVX-512F was detected; the pointers address 16 floats.
                unsafe {
                    let v = _mm512_loadu_ps(chunk.as_ptr());
                    _mm512_storeu_ps(e.as_mut_ptr(), avx512_math::exp16(v));
                    _mm512_storeu_ps(g.as_mut_ptr(), avx512_math::gelu16(v));
                }
                assert!(
                    e.iter().all(|v| *v > 0.0 && !v.is_subnormal()),
                    "{chunk:?}: {e:?}"
                );
                assert!(
                    g.iter().all(|v| v.is_finite() && !v.is_subnormal()),
                    "{chunk:?}: {g:?}"
                );
            }
        }
    }

    #[test]
    fn gelu_tanh_and_relu_match_their_formulas() {
        let input: Vec<f32> = grid(-9.0, 9.0, 10_001).collect();
        let mut tanh = input.clone();
        activate(&mut tanh, Activation::GeluTanh);
        let mut relu = input.clone();
        activate(&mut relu, Activation::Relu);
        for ((&x, &t), &r) in input.iter().zip(&tanh).zip(&relu) {
            let z = f64::from(x);
            let u = (2.0 / std::f64::consts::PI).sqrt() * (z + 0.044715 * z.powi(3));
            let want = 0.5 * z * (1.0 + u.tanh());
            assert!(
                (f64::from(t) - want).abs() < 1e-6,
                "gelu_tanh({x}) = {t}, want {want}"
            );
            assert_eq!(r, x.max(0.0));
        }
    }

    #[test]
    fn layer_norm_matches_float64_formula_with_and_without_residual() {
        let hidden = 37; // not a whole number of vectors
        let x: Vec<f32> = (0..3 * hidden)
            .map(|i| ((i * 37 % 101) as f32) * 0.13 - 5.0)
            .collect();
        let res: Vec<f32> = (0..3 * hidden)
            .map(|i| ((i * 11 % 23) as f32) * 0.07)
            .collect();
        let gamma: Vec<f32> = (0..hidden).map(|i| 0.5 + i as f32 * 0.01).collect();
        let beta: Vec<f32> = (0..hidden).map(|i| i as f32 * -0.02).collect();
        for residual in [None, Some(&res[..])] {
            let mut got = x.clone();
            layer_norm(&mut got, residual, &gamma, &beta, 1e-12);
            for row in 0..3 {
                let v: Vec<f64> = (0..hidden)
                    .map(|j| {
                        let i = row * hidden + j;
                        f64::from(x[i]) + residual.map_or(0.0, |r| f64::from(r[i]))
                    })
                    .collect();
                let mean = v.iter().sum::<f64>() / hidden as f64;
                let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / hidden as f64;
                for j in 0..hidden {
                    let want = (v[j] - mean) / (var + 1e-12).sqrt() * f64::from(gamma[j])
                        + f64::from(beta[j]);
                    let g = f64::from(got[row * hidden + j]);
                    assert!((g - want).abs() < 1e-5, "row {row} col {j}: {g} vs {want}");
                }
            }
        }
    }

    /// Attention by the textbook formula in float64, one head at a time.
    fn attention64(qkv: &[f32], heads: Heads) -> Vec<f64> {
        let hidden = heads.count * heads.dim;
        let len = qkv.len() / (3 * hidden);
        let at = |t: usize, c: usize| f64::from(qkv[t * 3 * hidden + c]);
        let mut out = vec![0.0; len * hidden];
        for h in 0..heads.count {
            for i in 0..len {
                let scores: Vec<f64> = (0..len)
                    .map(|j| {
                        (0..heads.dim)
                            .map(|d| at(i, h * heads.dim + d) * at(j, hidden + h * heads.dim + d))
                            .sum::<f64>()
                            / (heads.dim as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for d in 0..heads.dim {
                    out[i * hidden + h * heads.dim + d] = (0..len)
                        .map(|j| e[j] / total * at(j, 2 * hidden + h * heads.dim + d))
                        .sum();
                }
            }
        }
        out
    }

    #[test]
    fn attention_matches_float64_formula_for_several_lengths_and_head_widths() {
        let mut scratch = AttentionScratch::default();
        // Width 8 takes the portable path everywhere; 16, 32 and 64 the AVX-512 kernel
        // where the CPU has it. Both are checked directly as well.
        for (count, dim) in [(3, 8), (2, 16), (3, 32), (1, 64)] {
            let heads = Heads { count, dim };
            let hidden = count * dim;
            for len in [1, 2, 3, 4, 5, 15, 16, 17, 40] {
                let qkv: Vec<f32> = (0..len * 3 * hidden)
                    .map(|i| (((i * 7919) % 1009) as f32 / 1009.0 - 0.5) * 4.0)
                    .collect();
                let want = attention64(&qkv, heads);
                let mut out = vec![f32::NAN; len * hidden];
                attention(&qkv, &mut out, heads, &mut scratch);
                let mut portable = vec![f32::NAN; len * hidden];
                attention_portable(&qkv, &mut portable, heads, &mut scratch);
                for (idx, ((&g, &p), &w)) in out.iter().zip(&portable).zip(&want).enumerate() {
                    assert!(
                        (f64::from(g) - w).abs() < 1e-5,
                        "{heads:?} len {len} [{idx}]: {g} vs {w}"
                    );
                    assert!(
                        (f64::from(p) - w).abs() < 1e-5,
                        "portable {heads:?} len {len} [{idx}]: {p} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn mean_pool_normalised_is_unit_mean_direction() {
        let states = [1.0, 2.0, 2.0, 3.0, 4.0, 0.0]; // 2 rows of 3
        let mut out = [0.0; 3];
        mean_pool_normalised(&states, &mut out);
        let mean = [2.0f64, 3.0, 1.0];
        let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
        for (g, m) in out.iter().zip(mean) {
            assert!((f64::from(*g) - m / norm).abs() < 1e-7);
        }
        let mut zero = [1.0; 3];
        mean_pool_normalised(&[0.0; 3], &mut zero);
        assert_eq!(zero, [0.0; 3]);
    }
}
