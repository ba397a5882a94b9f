//! Dense layers on the CPU: `y = x · Wᵀ + b` with the weight packed once at load time.
//!
//! A BERT layer spends almost all of its time in four such products. The weight `W`
//! (`n × k`, PyTorch's `Linear` layout) is packed at load time into panels of [`NR`]
//! output columns, each stored k-major, so the micro-kernel streams a panel with unit
//! stride. The activations `x` are read in place (row-major, no packing): each step of `k`
//! broadcasts one value from each of [`MR`] rows. Loop order: weight panel outer (a panel,
//! 48 KiB for `k = 384`, stays in L1/L2 while every row block passes over it), rows inner.
//! The inner dimension is not blocked: MiniLM's `k <= 1536` keeps a panel in L2.
//!
//! The micro-kernel keeps an `MR × NR` tile of `y` in 28 AVX-512 registers (one fused
//! multiply-add per register per step of `k`) and adds the bias (and, for the feed-forward
//! up-projection, applies GELU) on the registers before the single store. CPUs with AVX2
//! and FMA but no AVX-512 compute the tile as blocks of 6 rows × 16 columns (12
//! accumulators of AVX2's 16 registers); other CPUs use a portable kernel of the same
//! shape. All agree up to the order of float additions. Everything is `f32`; no reduced precision.
//!
//! Single-threaded on purpose: the encoder runs whole batches on separate threads, which
//! costs no synchronisation per product (see `super::CpuBert::encode`).

use super::kernels;

/// Rows of `x` per micro-kernel call.
pub const MR: usize = 14;
/// Output columns per weight panel (two 16-lane vectors).
pub const NR: usize = 32;
/// A 64-byte aligned, zero-initialised buffer of `f32` (cache-line aligned vector loads).
#[derive(Clone, Default)]
pub struct AlignedBuf {
    blocks: Vec<CacheLine>,
    len: usize,
}

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct CacheLine([f32; 16]);

impl AlignedBuf {
    /// A buffer of `len` zeros.
    pub fn zeros(len: usize) -> Self {
        Self {
            blocks: vec![CacheLine::default(); len.div_ceil(16)],
            len,
        }
    }

    /// Make the buffer hold at least `len` floats (contents unspecified, new ones zero).
    pub fn ensure(&mut self, len: usize) {
        if self.blocks.len() * 16 < len {
            self.blocks.resize(len.div_ceil(16), CacheLine::default());
        }
        self.len = self.len.max(len);
    }

    /// The floats.
    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: `CacheLine` is `repr(C)` over `[f32; 16]`, so `blocks` is
        // `blocks.len() * 16` contiguous initialised floats, and `len <= blocks.len() * 16`.
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast::<f32>(), self.len) }
    }

    /// The floats, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`, and `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<f32>(), self.len) }
    }
}

/// What happens to `x · Wᵀ + b` before it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// Nothing.
    Bias,
    /// Exact (erf) GELU, as BERT's feed-forward layer applies it.
    BiasGelu,
}

/// A linear layer's weight `W` (`n × k`) packed into k-major panels of [`NR`] columns,
/// with its bias padded to a whole number of panels.
pub struct PackedLinear {
    n: usize,
    k: usize,
    panels: AlignedBuf,
    bias: AlignedBuf,
}

impl PackedLinear {
    /// Pack `weight` (`n × k`, row-major: row `j` holds the weights of output `j`) and
    /// `bias` (`n`).
    pub fn new(weight: &[f32], bias: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(weight.len(), n * k, "weight must be n x k");
        assert_eq!(bias.len(), n, "bias must have n entries");
        let n_panels = n.div_ceil(NR);
        let mut panels = AlignedBuf::zeros(n_panels * k * NR);
        let dst = panels.as_mut_slice();
        for (row, w_row) in weight.chunks_exact(k).enumerate() {
            let (panel, lane) = (row / NR, row % NR);
            let base = panel * k * NR + lane;
            for (kk, &w) in w_row.iter().enumerate() {
                dst[base + kk * NR] = w;
            }
        }
        let mut padded_bias = AlignedBuf::zeros(n_panels * NR);
        padded_bias.as_mut_slice()[..n].copy_from_slice(bias);
        Self {
            n,
            k,
            panels,
            bias: padded_bias,
        }
    }

    /// `y = epilogue(x · Wᵀ + b)` for the first `m` rows of `x` (`m × k`, row-major) into
    /// `y` (`m × n`, row-major). `edge` is scratch space for a last, partial row block.
    pub fn forward(
        &self,
        x: &[f32],
        m: usize,
        y: &mut [f32],
        edge: &mut AlignedBuf,
        epilogue: Epilogue,
    ) {
        self.forward_with(Kernel::detect(), x, m, y, edge, epilogue);
    }

    /// [`Self::forward`] with a given micro-kernel.
    fn forward_with(
        &self,
        kernel: Kernel,
        x: &[f32],
        m: usize,
        y: &mut [f32],
        edge: &mut AlignedBuf,
        epilogue: Epilogue,
    ) {
        let (n, k) = (self.n, self.k);
        assert!(x.len() >= m * k, "x holds fewer than m rows");
        assert!(y.len() >= m * n, "y holds fewer than m rows");
        let full_blocks = m / MR;
        let tail_rows = m % MR;
        if tail_rows > 0 {
            // The last rows, zero-padded to a whole block, so the kernel never reads past x.
            edge.ensure(MR * k);
            let rows = &mut edge.as_mut_slice()[..MR * k];
            rows[..tail_rows * k].copy_from_slice(&x[full_blocks * MR * k..m * k]);
            rows[tail_rows * k..].fill(0.0);
        }
        for panel in 0..n.div_ceil(NR) {
            let b = &self.panels.as_slice()[panel * k * NR..][..k * NR];
            let bias = &self.bias.as_slice()[panel * NR..][..NR];
            let col = panel * NR;
            let cols = NR.min(n - col);
            for block in 0..full_blocks {
                let a = &x[block * MR * k..][..MR * k];
                let out = &mut y[block * MR * n + col..];
                if cols == NR {
                    kernel.tile(k, a, k, b, out, n, bias, epilogue);
                } else {
                    edge_tile(kernel, k, a, b, out, n, MR, cols, bias, epilogue);
                }
            }
            if tail_rows > 0 {
                let a = &edge.as_slice()[..MR * k];
                let out = &mut y[full_blocks * MR * n + col..];
                edge_tile(kernel, k, a, b, out, n, tail_rows, cols, bias, epilogue);
            }
        }
    }
}

/// A partial tile (fewer than [`MR`] rows or [`NR`] columns): run the kernel into a full
/// local tile and copy the valid part out.
#[allow(clippy::too_many_arguments)]
fn edge_tile(
    kernel: Kernel,
    k: usize,
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    ldc: usize,
    rows: usize,
    cols: usize,
    bias: &[f32],
    epilogue: Epilogue,
) {
    let mut tile = [0f32; MR * NR];
    kernel.tile(k, a, k, b, &mut tile, NR, bias, epilogue);
    for r in 0..rows {
        out[r * ldc..r * ldc + cols].copy_from_slice(&tile[r * NR..r * NR + cols]);
    }
}

/// Which micro-kernel this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// 16-lane AVX-512 fused multiply-add.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// 8-lane AVX2 fused multiply-add (most x86-64 CPUs without AVX-512).
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// Plain Rust, whatever the compiler vectorises it to.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Kernel::Avx2Fma;
            }
        }
        Kernel::Portable
    }

    /// One `MR × NR` tile: `c = epilogue(a · b + bias)`. `a` is [`MR`] rows of `k` values
    /// with row stride `lda`, `b` one packed weight panel (`k × NR`), `c` the tile's
    /// top-left with row stride `ldc`.
    #[allow(clippy::too_many_arguments)]
    pub fn tile(
        self,
        k: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        c: &mut [f32],
        ldc: usize,
        bias: &[f32],
        epilogue: Epilogue,
    ) {
        assert!(k > 0 && lda >= k && a.len() >= (MR - 1) * lda + k);
        assert!(b.len() >= k * NR && bias.len() >= NR);
        assert!(c.len() >= (MR - 1) * ldc + NR);
        match self {
            // SAFETY: `detect` saw AVX-512F; the asserts above bound every access.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe {
                avx512::tile(k, a.as_ptr(), lda, b.as_ptr(), c, ldc, bias, epilogue)
            },
            // SAFETY: `detect` saw AVX2 and FMA; the asserts above bound every access.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => unsafe {
                avx2::tile(k, a.as_ptr(), lda, b.as_ptr(), c, ldc, bias);
                if epilogue == Epilogue::BiasGelu {
                    for r in 0..MR {
                        kernels::activate(
                            &mut c[r * ldc..r * ldc + NR],
                            kernels::Activation::GeluErf,
                        );
                    }
                }
            },
            Kernel::Portable => portable_tile(k, a, lda, b, c, ldc, bias, epilogue),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn portable_tile(
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    bias: &[f32],
    epilogue: Epilogue,
) {
    let mut acc = [[0f32; NR]; MR];
    for (kk, b_k) in b.chunks_exact(NR).take(k).enumerate() {
        for (r, acc_row) in acc.iter_mut().enumerate() {
            let a_rk = a[r * lda + kk];
            for (acc_rj, &b_kj) in acc_row.iter_mut().zip(b_k) {
                *acc_rj = a_rk.mul_add(b_kj, *acc_rj);
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate() {
        let c_row = &mut c[r * ldc..r * ldc + NR];
        for ((c, &acc), &b) in c_row.iter_mut().zip(acc_row).zip(bias) {
            *c = acc + b;
        }
        if epilogue == Epilogue::BiasGelu {
            kernels::activate(c_row, kernels::Activation::GeluErf);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_storeu_ps,
    };

    use super::super::kernels::avx512_math::gelu16;
    use super::{Epilogue, MR, NR};

    /// See [`super::Kernel::tile`].
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `a` must hold `(MR - 1) * lda + k` floats, `b`
    /// `k * NR`, `bias` `NR`, `c` `(MR - 1) * ldc + NR` (the caller checks).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: &mut [f32],
        ldc: usize,
        bias: &[f32],
        epilogue: Epilogue,
    ) {
        let mut acc: [[__m512; 2]; MR] = [[_mm512_setzero_ps(); 2]; MR];
        let mut bp = b;
        for kk in 0..k {
            // SAFETY: `kk < k`, so row `r < MR` reads `a[r * lda + kk]` inside `a`, and
            // `k` steps of `NR` floats stay inside `b`.
            unsafe {
                let b0 = _mm512_loadu_ps(bp);
                let b1 = _mm512_loadu_ps(bp.add(16));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let a_r = _mm512_set1_ps(*a.add(r * lda + kk));
                    acc_r[0] = _mm512_fmadd_ps(a_r, b0, acc_r[0]);
                    acc_r[1] = _mm512_fmadd_ps(a_r, b1, acc_r[1]);
                }
                bp = bp.add(NR);
            }
        }
        let cp = c.as_mut_ptr();
        // SAFETY: `bias` holds `NR` floats; row `r < MR` of the tile spans
        // `cp + r*ldc .. + NR`, inside `c`.
        unsafe {
            let z0 = _mm512_loadu_ps(bias.as_ptr());
            let z1 = _mm512_loadu_ps(bias.as_ptr().add(16));
            for (r, acc_r) in acc.iter().enumerate() {
                let mut lo = _mm512_add_ps(acc_r[0], z0);
                let mut hi = _mm512_add_ps(acc_r[1], z1);
                if epilogue == Epilogue::BiasGelu {
                    lo = gelu16(lo);
                    hi = gelu16(hi);
                }
                let row = cp.add(r * ldc);
                _mm512_storeu_ps(row, lo);
                _mm512_storeu_ps(row.add(16), hi);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_load_ps,
        _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };

    use super::{MR, NR};

    /// Columns per block: two 8-lane vectors, one cache line of a packed panel's row.
    const COLS: usize = 16;
    /// Rows per block: `ROWS × 2` accumulators, two weight vectors and the broadcast value
    /// fill 15 of AVX2's 16 registers.
    const ROWS: usize = 6;

    /// `c = a · b + bias` for one `MR × NR` tile (the caller applies any activation), as
    /// `ROWS × COLS` blocks: for each half of the panel, rows 0-5, 6-11 and 12-13.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `a` must hold `(MR - 1) * lda + k` floats, `b`
    /// `k * NR` (32-byte aligned, as packed panels are), `bias` `NR`, `c`
    /// `(MR - 1) * ldc + NR` (the caller checks).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: &mut [f32],
        ldc: usize,
        bias: &[f32],
    ) {
        let cp = c.as_mut_ptr();
        for col in (0..NR).step_by(COLS) {
            let mut row = 0;
            while row < MR {
                // SAFETY: rows `row..row + ROWS` (or the last `MR - row`) and columns
                // `col..col + COLS` lie inside the tile the caller bounded.
                unsafe {
                    let (a, c) = (a.add(row * lda), cp.add(row * ldc + col));
                    let (b, bias) = (b.add(col), bias.as_ptr().add(col));
                    if MR - row >= ROWS {
                        block::<ROWS>(k, a, lda, b, c, ldc, bias);
                    } else {
                        block::<{ MR % ROWS }>(k, a, lda, b, c, ldc, bias);
                    }
                }
                row += ROWS;
            }
        }
    }

    /// `R` rows × [`COLS`] columns of the tile.
    ///
    /// # Safety
    /// As [`tile`], for `R` rows of `a` and `c` and `COLS` columns of `b`, `bias` and `c`.
    #[inline(always)]
    unsafe fn block<const R: usize>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        bias: *const f32,
    ) {
        // SAFETY: the caller's bounds; `b` steps by whole panel rows of `NR` floats, each
        // 32-byte aligned, `k` times.
        unsafe {
            let mut acc: [[__m256; 2]; R] = [[_mm256_setzero_ps(); 2]; R];
            let mut bp = b;
            for kk in 0..k {
                let b0 = _mm256_load_ps(bp);
                let b1 = _mm256_load_ps(bp.add(8));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let a_r = _mm256_broadcast_ss(&*a.add(r * lda + kk));
                    acc_r[0] = _mm256_fmadd_ps(a_r, b0, acc_r[0]);
                    acc_r[1] = _mm256_fmadd_ps(a_r, b1, acc_r[1]);
                }
                bp = bp.add(NR);
            }
            let z0 = _mm256_loadu_ps(bias);
            let z1 = _mm256_loadu_ps(bias.add(8));
            for (r, acc_r) in acc.iter().enumerate() {
                let row = c.add(r * ldc);
                _mm256_storeu_ps(row, _mm256_add_ps(acc_r[0], z0));
                _mm256_storeu_ps(row.add(8), _mm256_add_ps(acc_r[1], z1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x · Wᵀ + b` in f64, the obvious way.
    fn naive(x: &[f32], w: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|kk| f64::from(x[i * k + kk]) * f64::from(w[j * k + kk]))
                    .sum();
                y[i * n + j] = dot + f64::from(b[j]);
            }
        }
        y
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    fn gelu64(v: f64) -> f64 {
        // erf by its all-positive series, as in the kernels' tests.
        let (a, mut term, mut total, mut n) = (v.abs() / 2f64.sqrt(), 0.0f64, 0.0f64, 0.0f64);
        term += a;
        while term > 1e-18 * total.max(1e-300) || n < 5.0 {
            total += term;
            n += 1.0;
            term *= 2.0 * a * a / (2.0 * n + 1.0);
        }
        let erf = (2.0 / std::f64::consts::PI.sqrt() * (-a * a).exp() * total).copysign(v);
        0.5 * v * (1.0 + erf)
    }

    fn check(kernel: Kernel, m: usize, n: usize, k: usize, epilogue: Epilogue) {
        let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
        let packed = PackedLinear::new(&w, &b, n, k);
        let mut y = vec![f32::NAN; m * n];
        let mut expected = naive(&x, &w, &b, m, n, k);
        if epilogue == Epilogue::BiasGelu {
            expected.iter_mut().for_each(|v| *v = gelu64(*v));
        }
        packed.forward_with(kernel, &x, m, &mut y, &mut AlignedBuf::default(), epilogue);
        for (idx, (&got, &want)) in y.iter().zip(&expected).enumerate() {
            assert!(
                (f64::from(got) - want).abs() <= 1e-5 * (k as f64).sqrt(),
                "{kernel:?} {epilogue:?} m={m} n={n} k={k}: y[{idx}] = {got}, expected {want}"
            );
        }
    }

    #[test]
    fn every_kernel_matches_naive_product_on_awkward_shapes() {
        let mut kernels = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                kernels.push(Kernel::Avx2Fma);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(Kernel::Avx512);
            }
        }
        assert_eq!(kernels.last(), Some(&Kernel::detect()));
        // Partial row blocks, partial column panels, short and long inner dimensions.
        for kernel in kernels {
            for &(m, n, k) in &[
                (1, 1, 1),
                (13, 33, 7),
                (14, 32, 5),
                (31, 65, 300),
                (470, 64, 600),
            ] {
                for epilogue in [Epilogue::Bias, Epilogue::BiasGelu] {
                    check(kernel, m, n, k, epilogue);
                }
            }
        }
    }

    #[test]
    fn aligned_buf_is_cache_line_aligned_and_zeroed() {
        let mut buf = AlignedBuf::zeros(5);
        assert_eq!(buf.as_slice(), &[0.0; 5]);
        buf.ensure(100);
        assert_eq!(buf.as_slice().len(), 100);
        assert_eq!(buf.as_slice().as_ptr() as usize % 64, 0);
        assert!(buf.as_slice().iter().all(|&v| v == 0.0));
    }
}
