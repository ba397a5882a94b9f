//! The synthetic users and items: who is active when and how much, what each item is about
//! (genres, title), how popular it is, and the latent factors and biases ratings come from.
//!
//! Users are numbered in order of the start of their activity window and items in order of
//! release, so in a time-ordered replay new users and items arrive with growing ids, as in
//! logged systems.

use std::collections::HashMap;

use super::calendar::year_of;
use super::rng::{Purpose, Rng};
use super::words::{GENERIC_WORDS, GENRES};
use super::{ITEM_BIAS_SD, MIN_USER_WINDOW_SECS, SynthConfig, USER_BIAS_SD, USER_FACTOR_SD};

/// The users, indexed `0..n` in order of their window's start.
pub(crate) struct Users {
    /// Start of the activity window, seconds after the log's start, clipped to the span.
    pub(crate) start: Vec<f64>,
    /// End of the activity window (exclusive), clipped to the span.
    pub(crate) end: Vec<f64>,
    /// Events per second of window, up to a common factor: activity / window length.
    pub(crate) rate: Vec<f64>,
    /// Rating offset of the user.
    pub(crate) bias: Vec<f32>,
    /// Latent factors, `dim` per user, row after row.
    pub(crate) factors: Vec<f32>,
}

impl Users {
    /// Draws `config.user_count()` users.
    ///
    /// A user's activity (how many events they log, relative to others) is log-normal with
    /// `activity_sigma`; their window's length is log-uniform between an hour and the whole
    /// span (most users are active for days, some for years, as in MovieLens); the window
    /// starts uniformly so that the active population is the same at every time, windows
    /// cut by the log's start or end included. At least one second of each window lies
    /// inside the span. No user is expected to log more than half as many events as there
    /// are items.
    pub(crate) fn generate(config: &SynthConfig) -> Self {
        let n = config.user_count() as usize;
        let span = config.span_secs as f64;
        let min_window = (MIN_USER_WINDOW_SECS as f64).min(span);
        let (log_min, log_max) = (min_window.ln(), span.ln());
        let mut rng = Rng::stream(config.seed, Purpose::Users, 0);
        let mut drawn: Vec<(f64, f64, f64)> = Vec::with_capacity(n);
        for _ in 0..n {
            let activity = (config.activity_sigma * rng.normal()).exp();
            let length = (log_min + (log_max - log_min) * rng.uniform()).exp();
            // Uniform over [1 - length, span - 1): the window overlaps the span by >= 1 s.
            let start = 1.0 - length + (span + length - 2.0) * rng.uniform();
            let end = start + length;
            drawn.push((start.max(0.0), end.min(span), activity / length));
        }
        // Stable: users starting together keep their draw order.
        drawn.sort_by(|a, b| a.0.total_cmp(&b.0));
        let cap = MAX_USER_ITEM_SHARE * f64::from(config.item_count());
        cap_activity(&mut drawn, config.events as f64, cap);

        let dim = config.dim;
        let mut rng = Rng::stream(config.seed, Purpose::Users, 1);
        let mut bias = Vec::with_capacity(n);
        let mut factors = Vec::with_capacity(n * dim);
        for _ in 0..n {
            bias.push((USER_BIAS_SD * rng.normal()) as f32);
            factors.extend((0..dim).map(|_| (USER_FACTOR_SD * rng.normal()) as f32));
        }
        Self {
            start: drawn.iter().map(|d| d.0).collect(),
            end: drawn.iter().map(|d| d.1).collect(),
            rate: drawn.iter().map(|d| d.2).collect(),
            bias,
            factors,
        }
    }

    /// How many users.
    pub(crate) fn len(&self) -> usize {
        self.start.len()
    }

    /// The part of user `u`'s expected activity that falls in `[a, b)`.
    #[inline]
    pub(crate) fn weight_in(&self, u: usize, a: f64, b: f64) -> f64 {
        (self.end[u].min(b) - self.start[u].max(a)).max(0.0) * self.rate[u]
    }
}

/// No user is expected to act on more than this share of the items (MovieLens' most
/// active users rated 28% (ml-latest-small) to 62% (ml-1m) of the movies).
const MAX_USER_ITEM_SHARE: f64 = 0.5;

/// Lowers the rate of the users (`(start, end, rate)`) expected to log more than `cap` of
/// the `events`, to exactly `cap`. Lowering some raises the others' share, so this repeats
/// until no user is above the cap (water-filling; a few rounds). Without this, a user of
/// the heavy tail could be expected to rate more items than exist.
fn cap_activity(users: &mut [(f64, f64, f64)], events: f64, cap: f64) {
    for _ in 0..50 {
        let total: f64 = users.iter().map(|(s, e, r)| (e - s) * r).sum();
        let mut capped = false;
        for (s, e, r) in users.iter_mut() {
            let expected = events * (*e - *s) * *r / total;
            if expected > cap * (1.0 + 1e-9) {
                *r *= cap / expected;
                capped = true;
            }
        }
        if !capped {
            break;
        }
    }
}

/// The items, indexed `0..n` in order of release.
pub(crate) struct Items {
    /// Release time, seconds after the log's start (0 for the back catalogue).
    pub(crate) release: Vec<f64>,
    /// Relative popularity: `rank^-zipf_exponent` for a random rank.
    pub(crate) popularity: Vec<f64>,
    /// Rating offset of the item.
    pub(crate) bias: Vec<f32>,
    /// Latent factors, `dim` per item, row after row.
    pub(crate) factors: Vec<f32>,
    /// Title, e.g. "The Haunting Grave (2016)".
    pub(crate) titles: Vec<String>,
    /// Indices into [`GENRES`], ascending.
    pub(crate) genres: Vec<Vec<u8>>,
}

/// Probability that an item has 1, 2 or 3 genres (cumulative).
const GENRE_COUNT_CUMULATIVE: [f64; 3] = [0.4, 0.75, 1.0];
/// Probability that a title word comes from one of the item's genres (else generic).
const GENRE_WORD_SHARE: f64 = 0.75;
/// Weight of a title word's direction relative to a genre's in an item's text direction.
const WORD_DIRECTION_WEIGHT: f64 = 0.5;
/// Mean age in years of back-catalogue items when the log starts (exponential).
const BACK_CATALOGUE_MEAN_AGE_YEARS: f64 = 12.0;
/// No release year before this one.
const EARLIEST_YEAR: i64 = 1900;

impl Items {
    /// Draws `config.item_count()` items.
    ///
    /// Popularity follows Zipf's law over a random ranking (`rank^-zipf_exponent`).
    /// `catalog_at_start` of the items (at least one) exist before the log starts, the rest
    /// are released uniformly over the span. Each item gets 1 to 3 genres (drawn by their
    /// MovieLens-like frequencies) and a title made of its genres' words; its latent factor
    /// is `sqrt(text_signal) * t + sqrt(1 - text_signal) * z` where `t` is the unit
    /// direction of its genres and title words and `z` is noise of the same expected norm,
    /// and its bias is the mean rating shift of its genres plus noise. So the text predicts
    /// most of what an item is.
    pub(crate) fn generate(config: &SynthConfig) -> Self {
        let n = config.item_count() as usize;
        let dim = config.dim;
        let span = config.span_secs as f64;
        let mut rng = Rng::stream(config.seed, Purpose::Items, 0);

        // Zipf popularity over a random permutation of the ranks (Fisher-Yates).
        let mut ranks: Vec<u32> = (1..=n as u32).collect();
        for i in (1..n).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            ranks.swap(i, j);
        }
        let back_catalogue = ((config.catalog_at_start * n as f64).round() as usize).clamp(1, n);
        let mut drawn: Vec<(f64, f64)> = ranks
            .iter()
            .enumerate()
            .map(|(i, &rank)| {
                let release = if i < back_catalogue {
                    0.0
                } else {
                    span * rng.uniform()
                };
                (release, f64::from(rank).powf(-config.zipf_exponent))
            })
            .collect();
        drawn.sort_by(|a, b| a.0.total_cmp(&b.0));

        let mut directions = Directions::new(config.seed, dim);
        let start_year = year_of(config.start);
        let mut rng = Rng::stream(config.seed, Purpose::Items, 1);
        let mut items = Self {
            release: drawn.iter().map(|d| d.0).collect(),
            popularity: drawn.iter().map(|d| d.1).collect(),
            bias: Vec::with_capacity(n),
            factors: Vec::with_capacity(n * dim),
            titles: Vec::with_capacity(n),
            genres: Vec::with_capacity(n),
        };
        let (signal, noise) = (
            config.text_signal.sqrt(),
            (1.0 - config.text_signal).sqrt() / (dim as f64).sqrt(),
        );
        let mut text_direction = vec![0.0f64; dim];
        for i in 0..n {
            let genres = draw_genres(&mut rng);
            let words = draw_title_words(&mut rng, &genres);
            let year = if items.release[i] == 0.0 {
                let age = (BACK_CATALOGUE_MEAN_AGE_YEARS * rng.exponential()).floor() as i64;
                (start_year - 1 - age).max(EARLIEST_YEAR)
            } else {
                year_of(config.start + items.release[i] as i64)
            };
            items.titles.push(title(&mut rng, &words, year));

            text_direction.fill(0.0);
            for &g in &genres {
                add(&mut text_direction, directions.genre(g), 1.0);
            }
            for word in &words {
                add(
                    &mut text_direction,
                    directions.word(word),
                    WORD_DIRECTION_WEIGHT,
                );
            }
            let norm = text_direction.iter().map(|x| x * x).sum::<f64>().sqrt();
            let norm = if norm > 0.0 { norm } else { 1.0 };
            items.factors.extend(
                text_direction
                    .iter()
                    .map(|t| (signal * t / norm + noise * rng.normal()) as f32),
            );
            let shift = genres
                .iter()
                .map(|&g| GENRES[g as usize].rating_shift)
                .sum::<f64>()
                / genres.len() as f64;
            items
                .bias
                .push((shift + ITEM_BIAS_SD * rng.normal()) as f32);
            items.genres.push(genres);
        }
        items
    }

    /// How many items.
    pub(crate) fn len(&self) -> usize {
        self.release.len()
    }

    /// Genre names of item `i`.
    pub(crate) fn genre_names(&self, i: usize) -> impl Iterator<Item = &'static str> + '_ {
        self.genres[i].iter().map(|&g| GENRES[g as usize].name)
    }
}

/// `acc += weight * v`.
fn add(acc: &mut [f64], v: &[f64], weight: f64) {
    for (a, x) in acc.iter_mut().zip(v) {
        *a += weight * x;
    }
}

/// 1 to 3 distinct genres, by frequency, ascending.
fn draw_genres(rng: &mut Rng) -> Vec<u8> {
    let u = rng.uniform();
    let count = GENRE_COUNT_CUMULATIVE
        .iter()
        .position(|&c| u < c)
        .unwrap_or(2)
        + 1;
    let mut chosen: Vec<u8> = Vec::with_capacity(count);
    for _ in 0..count {
        let remaining: f64 = GENRES
            .iter()
            .enumerate()
            .filter(|(g, _)| !chosen.contains(&(*g as u8)))
            .map(|(_, genre)| genre.frequency)
            .sum();
        let mut target = remaining * rng.uniform();
        let mut pick = None;
        for (g, genre) in GENRES.iter().enumerate() {
            if chosen.contains(&(g as u8)) {
                continue;
            }
            pick = Some(g as u8);
            target -= genre.frequency;
            if target < 0.0 {
                break;
            }
        }
        if let Some(g) = pick {
            chosen.push(g);
        }
    }
    chosen.sort_unstable();
    chosen
}

/// Two title words (a title may use one or both), distinct.
fn draw_title_words(rng: &mut Rng, genres: &[u8]) -> Vec<&'static str> {
    let draw = |rng: &mut Rng| {
        if rng.uniform() < GENRE_WORD_SHARE {
            let genre = &GENRES[genres[rng.below(genres.len() as u64) as usize] as usize];
            genre.words[rng.below(genre.words.len() as u64) as usize]
        } else {
            GENERIC_WORDS[rng.below(GENERIC_WORDS.len() as u64) as usize]
        }
    };
    let first = draw(rng);
    let mut second = draw(rng);
    for _ in 0..3 {
        if second != first {
            break;
        }
        second = draw(rng);
    }
    if second == first {
        vec![first]
    } else {
        vec![first, second]
    }
}

/// A title from `words` (which it uses all of), in one of a few shapes, with its year.
fn title(rng: &mut Rng, words: &[&str], year: i64) -> String {
    let body = match *words {
        [a] => match rng.below(2) {
            0 => a.to_string(),
            _ => format!("The {a}"),
        },
        [a, b, ..] => match rng.below(6) {
            0 => format!("{a} {b}"),
            1 => format!("The {a} {b}"),
            2 => format!("{a} of the {b}"),
            3 => format!("{a} and {b}"),
            4 => format!("{a} {b} {}", 2 + rng.below(3)),
            _ => format!("{b}: {a}"),
        },
        [] => String::from("Untitled"),
    };
    format!("{body} ({year})")
}

/// Unit directions in the latent space for genres and title words, fixed by the seed.
struct Directions {
    seed: u64,
    dim: usize,
    genres: Vec<Vec<f64>>,
    words: HashMap<&'static str, Vec<f64>>,
}

impl Directions {
    fn new(seed: u64, dim: usize) -> Self {
        let genres = (0..GENRES.len())
            .map(|g| unit_vector(seed, g as u64, dim))
            .collect();
        Self {
            seed,
            dim,
            genres,
            words: Default::default(),
        }
    }

    fn genre(&self, g: u8) -> &[f64] {
        &self.genres[g as usize]
    }

    /// A word's direction (the same for every item using the word).
    fn word(&mut self, word: &'static str) -> &[f64] {
        let (seed, dim) = (self.seed, self.dim);
        self.words
            .entry(word)
            .or_insert_with(|| unit_vector(seed, word_key(word), dim))
    }
}

/// Stream index of a word's direction: FNV-1a of its bytes, above the genres' indices.
fn word_key(word: &str) -> u64 {
    let hash = word.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    });
    hash | (1 << 63)
}

/// A uniformly random unit vector of `dim` components (normalised Gaussian).
fn unit_vector(seed: u64, index: u64, dim: usize) -> Vec<f64> {
    let mut rng = Rng::stream(seed, Purpose::Directions, index);
    let v: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.into_iter().map(|x| x / norm).collect()
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(users: u32, items: u32) -> SynthConfig {
        SynthConfig {
            users: Some(users),
            items: Some(items),
            ..SynthConfig::new(1_000)
        }
    }

    fn cosine(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        dot / (na * nb)
    }

    #[test]
    fn users_are_ordered_by_start_with_windows_inside_the_span() {
        let config = config(5_000, 10);
        let users = Users::generate(&config);
        assert_eq!(users.len(), 5_000);
        assert_eq!(users.factors.len(), 5_000 * config.dim);
        let span = config.span_secs as f64;
        for u in 0..users.len() {
            assert!(users.start[u] >= 0.0 && users.end[u] <= span);
            assert!(users.end[u] - users.start[u] >= 1.0 - 1e-6, "user {u}");
            assert!(users.rate[u] > 0.0);
            if u > 0 {
                assert!(users.start[u - 1] <= users.start[u]);
            }
        }
        // Window lengths are log-uniform between an hour and the span: the median is near
        // their geometric mean (before clipping, which only shortens).
        let mut lengths: Vec<f64> = (0..users.len())
            .map(|u| users.end[u] - users.start[u])
            .collect();
        lengths.sort_by(f64::total_cmp);
        let median = lengths[lengths.len() / 2];
        let geometric_mean = (MIN_USER_WINDOW_SECS as f64 * span).sqrt();
        assert!(
            median < geometric_mean * 1.3 && median > geometric_mean / 3.0,
            "{median} vs {geometric_mean}"
        );
    }

    #[test]
    fn items_follow_zipf_and_release_order() {
        let config = config(10, 2_000);
        let items = Items::generate(&config);
        assert_eq!(items.len(), 2_000);
        let mut popularity = items.popularity.clone();
        popularity.sort_by(|a, b| b.total_cmp(a));
        for (rank, p) in popularity.iter().enumerate() {
            let expected = ((rank + 1) as f64).powf(-config.zipf_exponent);
            assert!((p - expected).abs() < 1e-12, "rank {rank}");
        }
        let back = items.release.iter().filter(|r| **r == 0.0).count();
        assert_eq!(back, (config.catalog_at_start * 2_000.0).round() as usize);
        assert!(items.release.windows(2).all(|w| w[0] <= w[1]));
        assert!(items.release.iter().all(|r| *r < config.span_secs as f64));
    }

    #[test]
    fn titles_carry_genre_words_and_a_plausible_year() {
        let config = config(10, 500);
        let items = Items::generate(&config);
        let start_year = year_of(config.start);
        let end_year = year_of(config.start + config.span_secs);
        let mut with_genre_word = 0;
        for i in 0..items.len() {
            let title = &items.titles[i];
            let year: i64 = title[title.len() - 5..title.len() - 1].parse().unwrap();
            if items.release[i] == 0.0 {
                assert!((EARLIEST_YEAR..start_year).contains(&year), "{title}");
            } else {
                assert!((start_year..=end_year).contains(&year), "{title}");
            }
            let genres = &items.genres[i];
            assert!((1..=3).contains(&genres.len()));
            assert!(genres.windows(2).all(|w| w[0] < w[1]));
            if genres.iter().any(|&g| {
                GENRES[g as usize]
                    .words
                    .iter()
                    .any(|w| title.split([' ', ':']).any(|t| t == *w))
            }) {
                with_genre_word += 1;
            }
        }
        // Each of the (usually two) words is a genre word with probability 0.75.
        assert!(with_genre_word > 400, "{with_genre_word} of 500");
    }

    #[test]
    fn item_factors_are_predictable_from_the_text() {
        // Items sharing their genres have much closer factors than items sharing none.
        let config = config(10, 3_000);
        let items = Items::generate(&config);
        let dim = config.dim;
        let row = |i: usize| &items.factors[i * dim..(i + 1) * dim];
        let (mut same, mut same_n, mut disjoint, mut disjoint_n) = (0.0, 0, 0.0, 0);
        for i in 0..600 {
            for j in (i + 1)..600 {
                let (gi, gj) = (&items.genres[i], &items.genres[j]);
                if gi == gj {
                    same += cosine(row(i), row(j));
                    same_n += 1;
                } else if gi.iter().all(|g| !gj.contains(g)) {
                    disjoint += cosine(row(i), row(j));
                    disjoint_n += 1;
                }
            }
        }
        let (same, disjoint) = (same / f64::from(same_n), disjoint / f64::from(disjoint_n));
        assert!(
            same > 0.3 && disjoint < 0.1,
            "same genres {same}, disjoint {disjoint}"
        );

        // Item bias follows the genres' rating shifts: horror below documentaries.
        let mean_bias = |name: &str| {
            let g = GENRES.iter().position(|g| g.name == name).unwrap() as u8;
            let biases: Vec<f64> = (0..items.len())
                .filter(|&i| items.genres[i] == [g])
                .map(|i| f64::from(items.bias[i]))
                .collect();
            biases.iter().sum::<f64>() / biases.len() as f64
        };
        assert!(mean_bias("Horror") < mean_bias("Drama") - 0.2);
    }

    #[test]
    fn the_same_seed_gives_the_same_catalogue() {
        let a = Items::generate(&config(10, 300));
        let b = Items::generate(&config(10, 300));
        assert_eq!(a.titles, b.titles);
        assert_eq!(a.factors, b.factors);
        let c = Items::generate(&SynthConfig {
            seed: 43,
            ..config(10, 300)
        });
        assert_ne!(a.titles, c.titles);
    }
}
