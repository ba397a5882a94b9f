//! The synthetic workload of the re-scoring benchmark: a seeded pool of samples with
//! power-law item popularity, random scoring rows, and a stream of updates that each replace
//! a fraction of the user (and item) rows, or the head.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::data::{ItemIdx, UserIdx};
use crate::dataflow::PoolSample;
use crate::scoring::{Loss, RowLayout, ScoringHead};

/// Rows are drawn uniformly from `[-ROW_RANGE, ROW_RANGE)`, small enough that predictions
/// stay inside the clip range most of the time.
const ROW_RANGE: f32 = 0.3;
/// The global mean rating, every member's initial offset.
const MEAN_RATING: f32 = 3.5;

/// The sizes of a synthetic pool.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct PoolShape {
    /// Pool samples.
    pub samples: u32,
    /// Users (drawn uniformly per sample).
    pub users: u32,
    /// Items (drawn by a Zipf law per sample).
    pub items: u32,
    /// Row layout: members and vector length.
    pub layout: RowLayout,
    /// Zipf exponent of item popularity: the item of popularity rank `r` (from 0) is drawn
    /// with weight `1 / (r + 1)^skew`; 0 draws items uniformly.
    pub item_skew: f64,
}

/// A pool, its model rows and head, generated from a seed.
#[derive(Clone, Debug)]
pub struct SyntheticPool {
    /// The shape it was generated with.
    pub shape: PoolShape,
    /// Samples `0..shape.samples`, in index order; half of them carry a rating label.
    pub samples: Vec<PoolSample>,
    /// User rows, `layout.row_len()` floats per user, user `u` at `u * row_len`.
    pub user_rows: Vec<f32>,
    /// Item rows, laid out like `user_rows`.
    pub item_rows: Vec<f32>,
    /// The head: offset 3.5 per member, ratings clipped to `[0.5, 5]`.
    pub head: ScoringHead,
}

impl SyntheticPool {
    /// Generates the pool for `shape` from `seed`. Item ids are a seeded permutation of the
    /// popularity ranks, so popular items are not neighbours in the row tables.
    pub fn generate(shape: PoolShape, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let row_len = shape.layout.row_len();
        let popularity = ZipfTable::new(shape.items, shape.item_skew);
        let mut item_of_rank: Vec<ItemIdx> = (0..shape.items).collect();
        shuffle(&mut item_of_rank, &mut rng);
        let samples = (0..shape.samples)
            .map(|sample| {
                let user = rng.random_range(0..shape.users);
                let item = item_of_rank[popularity.draw(&mut rng) as usize];
                let label = rng
                    .random_bool(0.5)
                    .then(|| f32::from(rng.random_range(1u8..=5)));
                PoolSample {
                    sample,
                    user,
                    item,
                    label,
                }
            })
            .collect();
        let user_rows = random_rows(&mut rng, shape.users as usize * row_len);
        let item_rows = random_rows(&mut rng, shape.items as usize * row_len);
        let head = ScoringHead::new(
            shape.layout,
            vec![MEAN_RATING; shape.layout.members],
            Loss::Squared,
        )
        .with_clip(0.5, 5.0);
        Self {
            shape,
            samples,
            user_rows,
            item_rows,
            head,
        }
    }

    /// Every user's row as `(user, row)` pairs, the shape the engine takes.
    pub fn user_entries(&self) -> Vec<(UserIdx, Vec<f32>)> {
        entries(&self.user_rows, self.shape.layout.row_len())
    }

    /// Every item's row as `(item, row)` pairs.
    pub fn item_entries(&self) -> Vec<(ItemIdx, Vec<f32>)> {
        entries(&self.item_rows, self.shape.layout.row_len())
    }
}

fn entries(flat: &[f32], row_len: usize) -> Vec<(u32, Vec<f32>)> {
    flat.chunks_exact(row_len)
        .enumerate()
        .map(|(id, row)| (id as u32, row.to_vec()))
        .collect()
}

fn random_rows(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| rng.random_range(-ROW_RANGE..ROW_RANGE))
        .collect()
}

/// Fisher-Yates shuffle.
fn shuffle<T>(values: &mut [T], rng: &mut StdRng) {
    for k in (1..values.len()).rev() {
        values.swap(k, rng.random_range(0..=k));
    }
}

/// Inverse-CDF sampling of popularity ranks from a Zipf law.
struct ZipfTable {
    /// Cumulative weights of ranks `0..=r`.
    cumulative: Vec<f64>,
}

impl ZipfTable {
    fn new(n: u32, skew: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|rank| {
                total += (f64::from(rank) + 1.0).powf(-skew);
                total
            })
            .collect();
        Self { cumulative }
    }

    fn draw(&self, rng: &mut StdRng) -> u32 {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let target = rng.random::<f64>() * total;
        let rank = self.cumulative.partition_point(|&c| c <= target);
        rank.min(self.cumulative.len().saturating_sub(1)) as u32
    }
}

/// What one benchmark update changes: new rows for some users and items, and perhaps a new
/// head (a parameter shared by every sample).
#[derive(Clone, Debug, Default)]
pub struct RowChanges {
    /// New user rows, distinct users in increasing order.
    pub users: Vec<(UserIdx, Vec<f32>)>,
    /// New item rows, distinct items in increasing order.
    pub items: Vec<(ItemIdx, Vec<f32>)>,
    /// A new head, when the update changes the shared parameters.
    pub head: Option<ScoringHead>,
}

/// A seeded stream of [`RowChanges`]: each touches `ceil(touch_users * users)` distinct users
/// and `ceil(touch_items * items)` distinct items drawn uniformly, and, with `head_change`,
/// moves every member's offset.
#[derive(Debug)]
pub struct UpdateStream {
    rng: StdRng,
    row_len: usize,
    head: ScoringHead,
    head_change: bool,
    users: PartialShuffle,
    items: PartialShuffle,
    touched_users: usize,
    touched_items: usize,
}

impl UpdateStream {
    /// The stream for `pool`; fractions are clamped into `[0, 1]`.
    pub fn new(
        pool: &SyntheticPool,
        touch_users: f64,
        touch_items: f64,
        head_change: bool,
        seed: u64,
    ) -> Self {
        let count = |fraction: f64, n: u32| -> usize {
            ((fraction.clamp(0.0, 1.0) * f64::from(n)).ceil() as usize).min(n as usize)
        };
        Self {
            rng: StdRng::seed_from_u64(seed),
            row_len: pool.shape.layout.row_len(),
            head: pool.head.clone(),
            head_change,
            users: PartialShuffle::new(pool.shape.users),
            items: PartialShuffle::new(pool.shape.items),
            touched_users: count(touch_users, pool.shape.users),
            touched_items: count(touch_items, pool.shape.items),
        }
    }

    /// Users whose rows each update replaces.
    pub fn touched_users(&self) -> usize {
        self.touched_users
    }

    /// Items whose rows each update replaces.
    pub fn touched_items(&self) -> usize {
        self.touched_items
    }

    /// The next update.
    pub fn next_changes(&mut self) -> RowChanges {
        let users = self.users.draw(self.touched_users, &mut self.rng);
        let items = self.items.draw(self.touched_items, &mut self.rng);
        let rng = &mut self.rng;
        let row_len = self.row_len;
        let mut with_rows = |ids: Vec<u32>| -> Vec<(u32, Vec<f32>)> {
            ids.into_iter()
                .map(|id| (id, random_rows(rng, row_len)))
                .collect()
        };
        let users = with_rows(users);
        let items = with_rows(items);
        let head = self.head_change.then(|| {
            for offset in &mut self.head.offsets {
                *offset += self.rng.random_range(-0.05f32..0.05);
            }
            self.head.clone()
        });
        RowChanges { users, items, head }
    }
}

/// Draws `k` distinct ids of `0..n` in `O(k)` by a partial Fisher-Yates shuffle over a
/// permutation kept between draws.
#[derive(Debug)]
struct PartialShuffle {
    ids: Vec<u32>,
}

impl PartialShuffle {
    fn new(n: u32) -> Self {
        Self {
            ids: (0..n).collect(),
        }
    }

    fn draw(&mut self, k: usize, rng: &mut StdRng) -> Vec<u32> {
        let n = self.ids.len();
        let k = k.min(n);
        for j in 0..k {
            let pick = rng.random_range(j..n);
            self.ids.swap(j, pick);
        }
        let mut drawn = self.ids[..k].to_vec();
        drawn.sort_unstable();
        drawn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(samples: u32, users: u32, items: u32, item_skew: f64) -> PoolShape {
        PoolShape {
            samples,
            users,
            items,
            layout: RowLayout { members: 2, dim: 3 },
            item_skew,
        }
    }

    #[test]
    fn a_pool_is_reproducible_from_its_seed_and_in_range() {
        let a = SyntheticPool::generate(shape(2000, 50, 40, 1.0), 9);
        let b = SyntheticPool::generate(shape(2000, 50, 40, 1.0), 9);
        assert_eq!(a.samples, b.samples);
        assert_eq!(a.user_rows, b.user_rows);
        assert_eq!(a.user_rows.len(), 50 * 8);
        assert_eq!(a.item_rows.len(), 40 * 8);
        for (k, s) in a.samples.iter().enumerate() {
            assert_eq!(s.sample as usize, k);
            assert!(s.user < 50 && s.item < 40);
            assert!(
                s.label
                    .is_none_or(|l| (1.0..=5.0).contains(&l) && l.fract() == 0.0)
            );
        }
        let labelled = a.samples.iter().filter(|s| s.label.is_some()).count();
        assert!((800..1200).contains(&labelled), "{labelled}");
        assert_ne!(
            SyntheticPool::generate(shape(2000, 50, 40, 1.0), 10).samples,
            a.samples
        );
    }

    /// Item counts sorted in decreasing order.
    fn popularity(pool: &SyntheticPool) -> Vec<u32> {
        let mut counts = vec![0u32; pool.shape.items as usize];
        for s in &pool.samples {
            counts[s.item as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        counts
    }

    #[test]
    fn item_popularity_follows_the_zipf_exponent() {
        // With skew 1, rank r has weight 1/(r+1): the most popular item is drawn about twice
        // as often as the second and ten times as often as the tenth.
        let pool = SyntheticPool::generate(shape(200_000, 100, 100, 1.0), 3);
        let counts = popularity(&pool);
        let harmonic: f64 = (1..=100).map(|r| 1.0 / f64::from(r)).sum();
        let expected_top = 200_000.0 / harmonic;
        assert!(
            (f64::from(counts[0]) / expected_top - 1.0).abs() < 0.05,
            "{counts:?}"
        );
        let ratio = f64::from(counts[0]) / f64::from(counts[9]);
        assert!((8.5..11.5).contains(&ratio), "{ratio}");
        // Skew 0 is uniform.
        let uniform = popularity(&SyntheticPool::generate(shape(200_000, 100, 100, 0.0), 3));
        assert!(
            f64::from(uniform[0]) / f64::from(uniform[99]) < 1.2,
            "{uniform:?}"
        );
    }

    #[test]
    fn updates_touch_the_asked_fraction_of_distinct_rows() {
        let pool = SyntheticPool::generate(shape(100, 200, 30, 1.0), 1);
        let mut stream = UpdateStream::new(&pool, 0.05, 0.1, false, 4);
        assert_eq!((stream.touched_users(), stream.touched_items()), (10, 3));
        let first = stream.next_changes();
        let second = stream.next_changes();
        for changes in [&first, &second] {
            assert_eq!(changes.users.len(), 10);
            assert_eq!(changes.items.len(), 3);
            assert!(changes.users.windows(2).all(|w| w[0].0 < w[1].0));
            assert!(changes.users.iter().all(|(u, r)| *u < 200 && r.len() == 8));
            assert!(changes.head.is_none());
        }
        assert_ne!(first.users, second.users);
        let all = UpdateStream::new(&pool, 1.0, 0.0, true, 4).next_changes();
        let ids: Vec<u32> = all.users.iter().map(|(u, _)| *u).collect();
        assert_eq!(ids, (0..200).collect::<Vec<u32>>());
        let head = all.head.expect("a head change");
        assert_ne!(head.offsets, pool.head.offsets);
        assert_eq!(head.layout, pool.head.layout);
    }
}
