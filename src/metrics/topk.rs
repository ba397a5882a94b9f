//! Full-catalogue top-K: every user's `k` highest-scoring items among all items, without
//! ever holding a users × items score matrix.
//!
//! Scores are dot products of a user vector and an item vector ([`VectorTable`]; callers
//! fold biases in as extra coordinates, see `driver::evaluation`). The catalogue is packed
//! once into panels of [`PANEL`] items stored dimension-major. Users are processed in
//! chunks (one chunk per task, tasks spread over threads); within a chunk, an L2-sized
//! block of panels is swept by every group of [`GROUP`] users: a micro-kernel computes the
//! `GROUP × PANEL` tile of dot products in registers (AVX2 + FMA where the CPU has them,
//! else a portable loop of the same shape), and the tile is immediately compared with each
//! user's current K-th best score. Only items that beat it reach the per-user list, so
//! almost all of the work is the fused multiply-adds.
//!
//! **Ties** are broken by the lower item index: lists are ordered by score, descending,
//! then item index, ascending. Every user's items are visited in increasing index order and
//! an item enters a full list only when its score is strictly greater than the K-th, which
//! gives exactly that order. Items with a NaN score never enter a list.
//!
//! **Exclusions** (items a user must not be recommended, e.g. those whose label the model
//! was trained on) are a sorted list per user, looked up only for items that beat the K-th
//! score.
//!
//! ```
//! use recsift::metrics::topk::{VectorTable, top_k};
//!
//! let users = VectorTable::new(2, vec![1.0, 0.0, /* user 1 */ 0.0, 1.0]);
//! let items = VectorTable::new(2, vec![0.5, 0.1, 0.9, 0.2, 0.1, 0.8]);
//! let none: &[u32] = &[];
//! let lists = top_k(&users, &items, 2, &|_| none, 1);
//! assert_eq!(lists[0].iter().map(|r| r.item).collect::<Vec<_>>(), vec![1, 0]);
//! assert_eq!(lists[1].iter().map(|r| r.item).collect::<Vec<_>>(), vec![2, 1]);
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};

/// Items per packed panel (two 8-lane vectors).
pub const PANEL: usize = 16;
/// Users per micro-kernel call.
pub const GROUP: usize = 6;
/// Users per task (a thread takes one chunk at a time).
const CHUNK_USERS: usize = 240;
/// Panels swept per item block (kept in L2 while a chunk's groups pass over it).
const BLOCK_PANELS: usize = 48;

/// Row-major vectors of one length: `rows() × dim` floats.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorTable {
    dim: usize,
    values: Vec<f32>,
}

impl VectorTable {
    /// A table of `values.len() / dim` vectors of length `dim`.
    ///
    /// # Panics
    /// If `dim` is 0 or does not divide `values.len()`.
    pub fn new(dim: usize, values: Vec<f32>) -> Self {
        assert!(
            dim > 0 && values.len().is_multiple_of(dim),
            "rows of {dim} floats"
        );
        Self { dim, values }
    }

    /// Vector length.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors.
    pub fn rows(&self) -> usize {
        self.values.len() / self.dim
    }

    /// Vector `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.values[r * self.dim..(r + 1) * self.dim]
    }
}

/// One entry of a user's list.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranked {
    /// Item index.
    pub item: u32,
    /// Its score (the dot product).
    pub score: f32,
}

/// Every user's best `k` items (fewer when fewer are allowed), best first, skipping the
/// items `excluded(user)` lists (sorted ascending). Runs on `threads` threads; the result
/// does not depend on their number.
///
/// # Panics
/// If the two tables' vector lengths differ.
pub fn top_k<'e>(
    users: &VectorTable,
    items: &VectorTable,
    k: usize,
    excluded: &(dyn Fn(usize) -> &'e [u32] + Sync),
    threads: usize,
) -> Vec<Vec<Ranked>> {
    assert_eq!(
        users.dim, items.dim,
        "user and item vectors differ in length"
    );
    let n_users = users.rows();
    if k == 0 || items.rows() == 0 {
        return vec![Vec::new(); n_users];
    }
    let panels = PackedItems::pack(items);
    let kernel = Kernel::detect();
    let chunks = n_users.div_ceil(CHUNK_USERS);
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let chunk = next.fetch_add(1, Ordering::Relaxed);
            if chunk >= chunks {
                return done;
            }
            let start = chunk * CHUNK_USERS;
            let end = (start + CHUNK_USERS).min(n_users);
            done.push((
                chunk,
                rank_chunk(users, start..end, &panels, k, excluded, kernel),
            ));
        }
    };
    let threads = threads.clamp(1, chunks.max(1));
    let mut results: Vec<(usize, Vec<Vec<Ranked>>)> = if threads == 1 {
        work()
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a ranking thread panicked"))
                .collect()
        })
    };
    results.sort_unstable_by_key(|(chunk, _)| *chunk);
    results.into_iter().flat_map(|(_, lists)| lists).collect()
}

/// The catalogue in panels of [`PANEL`] items, each stored dimension-major (`dim × PANEL`),
/// the last panel padded with zero vectors.
struct PackedItems {
    dim: usize,
    items: usize,
    values: Vec<f32>,
}

impl PackedItems {
    fn pack(items: &VectorTable) -> Self {
        let dim = items.dim;
        let n = items.rows();
        let panels = n.div_ceil(PANEL);
        let mut values = vec![0.0f32; panels * dim * PANEL];
        for i in 0..n {
            let (panel, lane) = (i / PANEL, i % PANEL);
            let base = panel * dim * PANEL;
            for (d, &x) in items.row(i).iter().enumerate() {
                values[base + d * PANEL + lane] = x;
            }
        }
        Self {
            dim,
            items: n,
            values,
        }
    }

    fn panels(&self) -> usize {
        self.items.div_ceil(PANEL)
    }

    fn panel(&self, p: usize) -> &[f32] {
        let size = self.dim * PANEL;
        &self.values[p * size..(p + 1) * size]
    }
}

/// A user's best items so far, best first, at most `k`.
struct BestList {
    entries: Vec<Ranked>,
    k: usize,
}

impl BestList {
    fn new(k: usize) -> Self {
        Self {
            entries: Vec::with_capacity(k),
            k,
        }
    }

    /// The score an item must exceed to enter.
    fn threshold(&self) -> f32 {
        if self.entries.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.entries[self.k - 1].score
        }
    }

    /// Inserts an item whose score beats the threshold (items arrive in increasing index
    /// order, so an equal score already listed keeps its place ahead of it).
    fn insert(&mut self, item: u32, score: f32) {
        let at = self.entries.partition_point(|e| e.score >= score);
        if self.entries.len() == self.k {
            self.entries.pop();
        }
        self.entries.insert(at, Ranked { item, score });
    }
}

/// Ranks users `range` against every item.
fn rank_chunk<'e>(
    users: &VectorTable,
    range: std::ops::Range<usize>,
    items: &PackedItems,
    k: usize,
    excluded: &(dyn Fn(usize) -> &'e [u32] + Sync),
    kernel: Kernel,
) -> Vec<Vec<Ranked>> {
    let dim = users.dim;
    let n = range.len();
    let mut lists: Vec<BestList> = (0..n).map(|_| BestList::new(k)).collect();
    // Each group's user vectors, dimension-major and padded to GROUP users.
    let groups = n.div_ceil(GROUP);
    let mut packed_users = vec![0.0f32; groups * dim * GROUP];
    for (local, user) in range.clone().enumerate() {
        let (g, lane) = (local / GROUP, local % GROUP);
        for (d, &x) in users.row(user).iter().enumerate() {
            packed_users[g * dim * GROUP + d * GROUP + lane] = x;
        }
    }
    let exclusions: Vec<&[u32]> = range.clone().map(excluded).collect();
    let mut tile = [0.0f32; GROUP * PANEL];
    let panels = items.panels();
    for block_start in (0..panels).step_by(BLOCK_PANELS) {
        let block_end = (block_start + BLOCK_PANELS).min(panels);
        for g in 0..groups {
            let group_users = &packed_users[g * dim * GROUP..(g + 1) * dim * GROUP];
            let members = (n - g * GROUP).min(GROUP);
            for p in block_start..block_end {
                kernel.tile(dim, group_users, items.panel(p), &mut tile);
                let first_item = p * PANEL;
                let lanes = (items.items - first_item).min(PANEL);
                for r in 0..members {
                    let local = g * GROUP + r;
                    let list = &mut lists[local];
                    let mut threshold = list.threshold();
                    let row = &tile[r * PANEL..r * PANEL + lanes];
                    for (lane, &score) in row.iter().enumerate() {
                        if score > threshold {
                            let item = (first_item + lane) as u32;
                            if exclusions[local].binary_search(&item).is_err() {
                                list.insert(item, score);
                                threshold = list.threshold();
                            }
                        }
                    }
                }
            }
        }
    }
    lists.into_iter().map(|l| l.entries).collect()
}

/// The micro-kernel the CPU supports.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    /// Portable loops.
    Portable,
    /// AVX2 with fused multiply-add.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

impl Kernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Kernel::Avx2Fma;
        }
        Kernel::Portable
    }

    /// `tile[r * PANEL + j] = Σ_d users[d * GROUP + r] * panel[d * PANEL + j]`.
    fn tile(self, dim: usize, users: &[f32], panel: &[f32], tile: &mut [f32; GROUP * PANEL]) {
        debug_assert_eq!(users.len(), dim * GROUP);
        debug_assert_eq!(panel.len(), dim * PANEL);
        match self {
            Kernel::Portable => tile_portable(dim, users, panel, tile),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `detect` chose this kernel only on a CPU with AVX2 and FMA, and the
            // slices hold `dim * GROUP` and `dim * PANEL` floats (checked above in debug
            // builds; guaranteed by `rank_chunk`'s packing).
            Kernel::Avx2Fma => unsafe { tile_avx2(dim, users, panel, tile) },
        }
    }
}

fn tile_portable(dim: usize, users: &[f32], panel: &[f32], tile: &mut [f32; GROUP * PANEL]) {
    let mut acc = [[0.0f32; PANEL]; GROUP];
    for d in 0..dim {
        let b = &panel[d * PANEL..(d + 1) * PANEL];
        for (r, row) in acc.iter_mut().enumerate() {
            let a = users[d * GROUP + r];
            for (x, &y) in row.iter_mut().zip(b) {
                *x += a * y;
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        tile[r * PANEL..(r + 1) * PANEL].copy_from_slice(row);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(dim: usize, users: &[f32], panel: &[f32], tile: &mut [f32; GROUP * PANEL]) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; GROUP];
    let a_ptr = users.as_ptr();
    let b_ptr = panel.as_ptr();
    for d in 0..dim {
        // SAFETY: `d < dim`, so both loads stay inside `panel` (`dim * PANEL` floats) and
        // every broadcast inside `users` (`dim * GROUP` floats).
        unsafe {
            let b0 = _mm256_loadu_ps(b_ptr.add(d * PANEL));
            let b1 = _mm256_loadu_ps(b_ptr.add(d * PANEL + 8));
            for (r, row) in acc.iter_mut().enumerate() {
                let a = _mm256_broadcast_ss(&*a_ptr.add(d * GROUP + r));
                row[0] = _mm256_fmadd_ps(a, b0, row[0]);
                row[1] = _mm256_fmadd_ps(a, b1, row[1]);
            }
        }
    }
    let out = tile.as_mut_ptr();
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: `r < GROUP`, so both stores stay inside the `GROUP * PANEL` tile.
        unsafe {
            _mm256_storeu_ps(out.add(r * PANEL), row[0]);
            _mm256_storeu_ps(out.add(r * PANEL + 8), row[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every user's full sort (score descending, item ascending), filtered and cut.
    fn naive(users: &VectorTable, items: &VectorTable, k: usize, ex: &[Vec<u32>]) -> Vec<Vec<u32>> {
        (0..users.rows())
            .map(|u| {
                let mut scored: Vec<(u32, f32)> = (0..items.rows())
                    .filter(|&i| !ex[u].contains(&(i as u32)))
                    .map(|i| {
                        let s = users
                            .row(u)
                            .iter()
                            .zip(items.row(i))
                            .map(|(a, b)| a * b)
                            .sum::<f32>();
                        (i as u32, s)
                    })
                    .collect();
                scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                scored.into_iter().take(k).map(|(i, _)| i).collect()
            })
            .collect()
    }

    /// Values on a grid of 1/8 so every dot product is exact in f32 (any summation order),
    /// with many ties.
    fn grid_table(rows: usize, dim: usize, seed: u64) -> VectorTable {
        let mut state = seed;
        let values = (0..rows * dim)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) % 9) as f32 / 8.0 - 0.5
            })
            .collect();
        VectorTable::new(dim, values)
    }

    #[test]
    fn equals_a_full_sort_with_ties_exclusions_and_ragged_sizes() {
        for (n_users, n_items, dim, k) in [(13, 37, 5, 4), (250, 801, 9, 10), (7, 3, 4, 5)] {
            let users = grid_table(n_users, dim, 1);
            let items = grid_table(n_items, dim, 2);
            let ex: Vec<Vec<u32>> = (0..n_users)
                .map(|u| {
                    (0..n_items as u32)
                        .filter(|i| (i + u as u32).is_multiple_of(5))
                        .collect()
                })
                .collect();
            let expected = naive(&users, &items, k, &ex);
            for threads in [1, 3] {
                let got = top_k(&users, &items, k, &|u| &ex[u], threads);
                let got: Vec<Vec<u32>> = got
                    .iter()
                    .map(|l| l.iter().map(|r| r.item).collect())
                    .collect();
                assert_eq!(got, expected, "{n_users}x{n_items} d{dim} k{k} t{threads}");
            }
        }
    }

    #[test]
    fn portable_and_detected_kernels_agree_on_exact_data() {
        let users = grid_table(GROUP, 11, 3);
        let items = grid_table(PANEL, 11, 4);
        let packed = PackedItems::pack(&items);
        let mut group = vec![0.0; 11 * GROUP];
        for r in 0..GROUP {
            for d in 0..11 {
                group[d * GROUP + r] = users.row(r)[d];
            }
        }
        let mut a = [0.0; GROUP * PANEL];
        let mut b = [0.0; GROUP * PANEL];
        Kernel::Portable.tile(11, &group, packed.panel(0), &mut a);
        Kernel::detect().tile(11, &group, packed.panel(0), &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn nan_scores_never_enter_and_short_catalogues_give_short_lists() {
        let users = VectorTable::new(1, vec![1.0]);
        let items = VectorTable::new(1, vec![f32::NAN, 2.0]);
        let none: &[u32] = &[];
        let lists = top_k(&users, &items, 5, &|_| none, 1);
        assert_eq!(
            lists[0],
            vec![Ranked {
                item: 1,
                score: 2.0
            }]
        );
    }
}
