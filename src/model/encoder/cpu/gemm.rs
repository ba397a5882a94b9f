//! Dense layers on the CPU: `y = x · Wᵀ + b` with the weight packed once at load time.
//!
//! A BERT layer spends almost all of its time in four such products. The weight `W`
//! (`n × k`, PyTorch's `Linear` layout) is packed into panels of [`NR`] output columns,
//! each stored k-major, so the micro-kernel streams one panel with unit stride. The
//! activations are packed per call into micro-panels of [`MR`] rows. Blocking: `MC` rows
//! of `x` times `KC` of the inner dimension are packed at a time (they stay in L2); every
//! weight panel slice (`KC × NR`, up to 48 KiB) then serves all `MC / MR` row blocks from L1.
//!
//! The micro-kernel keeps an `MR × NR` tile of `y` in 28 AVX-512 registers (one fused
//! multiply-add per register per step of `k`). CPUs without AVX-512 (or other
//! architectures) use a portable kernel of the same shape: same results up to the order of
//! float additions, slower. Everything is `f32`; no reduced precision anywhere.
//!
//! Single-threaded on purpose: the encoder runs whole batches on separate threads, which
//! costs no synchronisation per product (see `super::forward`).

/// Rows of `x` per micro-kernel call.
pub const MR: usize = 14;
/// Output columns per weight panel (two 16-lane vectors).
pub const NR: usize = 32;
/// Largest inner-dimension block: a `KC × NR` weight slice is 48 KiB, a `MC × KC` block
/// of `x` 672 KiB. A longer inner dimension is cut into equal blocks no longer than this.
const KC: usize = 384;
/// Rows of `x` packed at a time (a multiple of [`MR`]).
const MC: usize = MR * 32;

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

    /// `y = x · Wᵀ + b` for the first `m` rows of `x` (`m × k`, row-major) into `y`
    /// (`m × n`, row-major). `pack` is scratch space, grown as needed.
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32], pack: &mut AlignedBuf) {
        self.forward_with(Kernel::detect(), x, m, y, pack);
    }

    /// [`Self::forward`] with a given micro-kernel.
    fn forward_with(
        &self,
        kernel: Kernel,
        x: &[f32],
        m: usize,
        y: &mut [f32],
        pack: &mut AlignedBuf,
    ) {
        let (n, k) = (self.n, self.k);
        assert!(x.len() >= m * k, "x holds fewer than m rows");
        assert!(y.len() >= m * n, "y holds fewer than m rows");
        let n_panels = n.div_ceil(NR);
        pack.ensure(MC * KC);
        for ic in (0..m).step_by(MC) {
            let mc = MC.min(m - ic);
            let row_blocks = mc.div_ceil(MR);
            let k_step = k.div_ceil(k.div_ceil(KC));
            for pc in (0..k).step_by(k_step) {
                let kc = k_step.min(k - pc);
                pack_rows(&x[ic * k..], mc, k, pc, kc, pack.as_mut_slice());
                for panel in 0..n_panels {
                    let b = &self.panels.as_slice()[(panel * k + pc) * NR..][..kc * NR];
                    let bias = (pc == 0).then(|| &self.bias.as_slice()[panel * NR..][..NR]);
                    let col = panel * NR;
                    let cols = NR.min(n - col);
                    for block in 0..row_blocks {
                        let a = &pack.as_slice()[block * kc * MR..][..kc * MR];
                        let row = ic + block * MR;
                        let rows = MR.min(m - row);
                        let out = &mut y[row * n + col..];
                        if rows == MR && cols == NR {
                            kernel.tile(kc, a, b, out, n, bias);
                        } else {
                            edge_tile(kernel, kc, a, b, out, n, rows, cols, bias);
                        }
                    }
                }
            }
        }
    }
}

/// Copy rows `0..mc` of `x` (row stride `k`), columns `pc..pc + kc`, into micro-panels:
/// panel `p` holds, for each column, the [`MR`] values of rows `p*MR..p*MR+MR` (zero
/// beyond `mc`).
fn pack_rows(x: &[f32], mc: usize, k: usize, pc: usize, kc: usize, dst: &mut [f32]) {
    for (block, panel) in dst[..mc.div_ceil(MR) * kc * MR]
        .chunks_exact_mut(kc * MR)
        .enumerate()
    {
        for r in 0..MR {
            let row = block * MR + r;
            if row < mc {
                let src = &x[row * k + pc..][..kc];
                for (kk, &v) in src.iter().enumerate() {
                    panel[kk * MR + r] = v;
                }
            } else {
                for kk in 0..kc {
                    panel[kk * MR + r] = 0.0;
                }
            }
        }
    }
}

/// A partial tile (fewer than [`MR`] rows or [`NR`] columns): run the kernel on a full
/// local tile and copy the valid part in and out.
#[allow(clippy::too_many_arguments)]
fn edge_tile(
    kernel: Kernel,
    kc: usize,
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    ldc: usize,
    rows: usize,
    cols: usize,
    bias: Option<&[f32]>,
) {
    let mut tile = [0f32; MR * NR];
    if bias.is_none() {
        for r in 0..rows {
            tile[r * NR..r * NR + cols].copy_from_slice(&out[r * ldc..r * ldc + cols]);
        }
    }
    kernel.tile(kc, a, b, &mut tile, NR, bias);
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
    /// Plain Rust, whatever the compiler vectorises it to.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Kernel::Avx512;
        }
        Kernel::Portable
    }

    /// One `MR × NR` tile: `c = a · b + bias` when `bias` is given, else `c += a · b`.
    /// `a` is one packed row micro-panel (`kc × MR`), `b` one weight panel slice
    /// (`kc × NR`), `c` the tile's top-left with row stride `ldc`.
    pub fn tile(
        self,
        kc: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        ldc: usize,
        bias: Option<&[f32]>,
    ) {
        assert!(a.len() >= kc * MR && b.len() >= kc * NR);
        assert!(c.len() >= (MR - 1) * ldc + NR);
        assert!(bias.is_none_or(|b| b.len() >= NR));
        match self {
            // SAFETY: `detect` saw AVX-512F; the asserts above bound every access.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { avx512::tile(kc, a.as_ptr(), b.as_ptr(), c, ldc, bias) },
            Kernel::Portable => portable_tile(kc, a, b, c, ldc, bias),
        }
    }
}

fn portable_tile(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, bias: Option<&[f32]>) {
    let mut acc = [[0f32; NR]; MR];
    for (a_k, b_k) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
        for (acc_row, &a_rk) in acc.iter_mut().zip(a_k) {
            for (acc_rj, &b_kj) in acc_row.iter_mut().zip(b_k) {
                *acc_rj = a_rk.mul_add(b_kj, *acc_rj);
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate() {
        let c_row = &mut c[r * ldc..r * ldc + NR];
        match bias {
            Some(bias) => {
                for ((c, &acc), &b) in c_row.iter_mut().zip(acc_row).zip(bias) {
                    *c = acc + b;
                }
            }
            None => {
                for (c, &acc) in c_row.iter_mut().zip(acc_row) {
                    *c += acc;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_storeu_ps,
    };

    use super::{MR, NR};

    /// See [`super::Kernel::tile`].
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `a` must hold `kc * MR` floats, `b` `kc * NR`,
    /// `c` `(MR - 1) * ldc + NR` (the caller checks).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: &mut [f32],
        ldc: usize,
        bias: Option<&[f32]>,
    ) {
        let mut acc: [[__m512; 2]; MR] = [[_mm512_setzero_ps(); 2]; MR];
        let (mut ap, mut bp) = (a, b);
        for _ in 0..kc {
            // SAFETY: `kc` steps of `MR` (resp. `NR`) floats stay inside `a` (resp. `b`).
            unsafe {
                let b0 = _mm512_loadu_ps(bp);
                let b1 = _mm512_loadu_ps(bp.add(16));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let a_r = _mm512_set1_ps(*ap.add(r));
                    acc_r[0] = _mm512_fmadd_ps(a_r, b0, acc_r[0]);
                    acc_r[1] = _mm512_fmadd_ps(a_r, b1, acc_r[1]);
                }
                ap = ap.add(MR);
                bp = bp.add(NR);
            }
        }
        let cp = c.as_mut_ptr();
        // SAFETY: row `r < MR` of the tile spans `cp + r*ldc .. + NR`, inside `c`.
        unsafe {
            match bias {
                Some(bias) => {
                    let z0 = _mm512_loadu_ps(bias.as_ptr());
                    let z1 = _mm512_loadu_ps(bias.as_ptr().add(16));
                    for (r, acc_r) in acc.iter().enumerate() {
                        let row = cp.add(r * ldc);
                        _mm512_storeu_ps(row, _mm512_add_ps(acc_r[0], z0));
                        _mm512_storeu_ps(row.add(16), _mm512_add_ps(acc_r[1], z1));
                    }
                }
                None => {
                    for (r, acc_r) in acc.iter().enumerate() {
                        let row = cp.add(r * ldc);
                        _mm512_storeu_ps(row, _mm512_add_ps(acc_r[0], _mm512_loadu_ps(row)));
                        let hi = row.add(16);
                        _mm512_storeu_ps(hi, _mm512_add_ps(acc_r[1], _mm512_loadu_ps(hi)));
                    }
                }
            }
        }
        debug_assert_eq!(NR, 32);
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

    fn check(kernel: Kernel, m: usize, n: usize, k: usize) {
        let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
        let packed = PackedLinear::new(&w, &b, n, k);
        let mut y = vec![f32::NAN; m * n];
        let expected = naive(&x, &w, &b, m, n, k);
        packed.forward_with(kernel, &x, m, &mut y, &mut AlignedBuf::default());
        for (idx, (&got, &want)) in y.iter().zip(&expected).enumerate() {
            assert!(
                (f64::from(got) - want).abs() <= 1e-5 * (k as f64).sqrt(),
                "{kernel:?} m={m} n={n} k={k}: y[{idx}] = {got}, expected {want}"
            );
        }
    }

    #[test]
    fn forward_matches_naive_product_on_awkward_shapes() {
        // Shapes with partial tiles in rows and columns, several K blocks, several M blocks.
        for &(m, n, k) in &[
            (1, 1, 1),
            (13, 33, 7),
            (14, 32, 256),
            (29, 70, 300),
            (470, 64, 600),
        ] {
            let (x, w, b) = (values(m * k, 4), values(n * k, 5), values(n, 6));
            let packed = PackedLinear::new(&w, &b, n, k);
            let mut y = vec![f32::NAN; m * n];
            packed.forward(&x, m, &mut y, &mut AlignedBuf::default());
            let expected = naive(&x, &w, &b, m, n, k);
            for (idx, (&got, &want)) in y.iter().zip(&expected).enumerate() {
                assert!(
                    (f64::from(got) - want).abs() <= 1e-5 * (k as f64).sqrt(),
                    "m={m} n={n} k={k}: y[{idx}] = {got}, expected {want}"
                );
            }
        }
    }

    #[test]
    fn every_kernel_matches_naive_product() {
        let mut kernels = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            kernels.push(Kernel::Avx512);
        }
        for kernel in kernels {
            check(kernel, 31, 65, 300);
            check(kernel, 14, 32, 5);
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
