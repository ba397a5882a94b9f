//! `recsift bench rescore`: the incremental scoring engine against a full re-score loop and
//! a hand-written index, on a synthetic pool, in the same run.
//!
//! A seeded pool of `samples` samples over `users` users and `items` items (item popularity
//! follows a Zipf law) gets random scoring rows; then each of `updates` updates replaces the
//! rows of a fraction of the users (and optionally of the items, or the head shared by every
//! sample). Every update is applied by three methods, each with its own copy of the rows, in a
//! rotating order so that none always runs first on a cold cache (or, with `sequential`, all
//! updates of one method, then of the next):
//!
//! - **engine**: [`ScoringEngine::apply`] with the changed rows, then its score changes
//!   written into a maintained score table;
//! - **index**: a hand-written `user -> samples` / `item -> samples` index re-scores only the
//!   touched samples and emits `(sample, old, new)` diffs: the practical floor;
//! - **full**: a plain loop re-scores every sample.
//!
//! Each is timed per update (hdrhistogram percentiles); after the last update the engine's
//! maintained scores must equal the full re-score bit for bit (`equal`). Memory is the
//! process's resident size after the pool and baselines are set up, after the engine has
//! loaded the pool, and at its peak from the engine's start on (`VmHWM`, restarted just
//! before the engine starts, so the peak is not a leftover of setup).
//!
//! ```
//! use recsift::bench::rescore::{RescoreBenchConfig, bench_rescore};
//!
//! let config = RescoreBenchConfig {
//!     samples: 2_000,
//!     users: 100,
//!     items: 50,
//!     updates: 3,
//!     ..RescoreBenchConfig::default()
//! };
//! let report = bench_rescore(config)?;
//! assert!(report.equal);
//! assert_eq!(report.engine.count, 3);
//! # Ok::<(), recsift::bench::rescore::RescoreBenchError>(())
//! ```

mod baselines;
mod memory;
mod synthetic;

use crate::error::UserFixable;
use std::fmt;
use std::time::Instant;

use serde::Serialize;

pub use baselines::{IndexDiff, RowTables, UserItemIndex};
pub use memory::{ResidentMemory, reset_peak, resident_memory};
pub use synthetic::{PoolShape, RowChanges, SyntheticPool, UpdateStream};

use crate::dataflow::{EngineError, EngineUpdate, PoolSample, ScoringEngine};
use crate::metrics::latency::{LatencyRecorder, LatencySummary};
use crate::scoring::{PerSampleScore, RowLayout};

/// What to measure. `Default` is 1M samples, 100k users, 10k items, `d = 32`, one member,
/// 1% of the user rows per update, 10 updates, one worker.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RescoreBenchConfig {
    /// Pool samples (`--samples`).
    pub samples: u32,
    /// Users (`--users`).
    pub users: u32,
    /// Items (`--items`).
    pub items: u32,
    /// Vector length of each member's row (`--dim`).
    pub dim: usize,
    /// Ensemble members per row (`--members`).
    pub members: usize,
    /// Fraction of user rows each update replaces (`--touch`), in `[0, 1]`.
    pub touch_users: f64,
    /// Fraction of item rows each update replaces (`--touch-items`), in `[0, 1]`.
    pub touch_items: f64,
    /// Whether each update also changes the head shared by every sample (`--head-change`).
    pub head_change: bool,
    /// Timed updates (`--updates`).
    pub updates: usize,
    /// The engine's worker threads (`--workers`).
    pub workers: usize,
    /// Time each method's updates back to back, method after method (`--sequential`),
    /// instead of running the three methods on each update in a rotating order. Back to
    /// back, a method finds its own data in cache from its previous update; rotating, each
    /// finds what the previous method left there, as an engine would after a training step.
    pub sequential: bool,
    /// Zipf exponent of item popularity; 0 is uniform (`--item-skew`).
    pub item_skew: f64,
    /// Seed of the pool and the updates (`--seed`).
    pub seed: u64,
}

impl Default for RescoreBenchConfig {
    fn default() -> Self {
        Self {
            samples: 1_000_000,
            users: 100_000,
            items: 10_000,
            dim: 32,
            members: 1,
            touch_users: 0.01,
            touch_items: 0.0,
            head_change: false,
            updates: 10,
            workers: 1,
            sequential: false,
            item_skew: 1.0,
            seed: 42,
        }
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum RescoreBenchError {
    /// A configuration value out of range.
    #[error("--{flag} must be {requirement} (got {value})")]
    Config {
        /// The flag.
        flag: &'static str,
        /// What it must be.
        requirement: &'static str,
        /// What it was.
        value: String,
    },
    /// The engine failed.
    #[error("the scoring engine failed during the benchmark: {0}")]
    Engine(#[from] EngineError),
}

impl UserFixable for RescoreBenchError {
    /// Whether the user can fix it (a flag), rather than an internal failure.
    fn is_user_error(&self) -> bool {
        matches!(self, Self::Config { .. })
    }
}

/// Timings of one method, in milliseconds: the first scoring of the pool and the per-update
/// distribution.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MethodTimes {
    /// Scoring (or loading) the whole pool once, before the updates.
    pub initial_ms: f64,
    /// Timed updates.
    pub count: u64,
    /// Mean time per update.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest update.
    pub max_ms: f64,
}

impl MethodTimes {
    fn new(initial_ms: f64, summary: Option<&LatencySummary>) -> Self {
        let Some(s) = summary else {
            return Self {
                initial_ms,
                count: 0,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
            };
        };
        Self {
            initial_ms,
            count: s.count,
            mean_ms: s.total_ms / s.count.max(1) as f64,
            p50_ms: s.p50_ms,
            p90_ms: s.p90_ms,
            p99_ms: s.p99_ms,
            max_ms: s.max_ms,
        }
    }
}

/// What the benchmark measured. Serialises to the JSON that `--json` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RescoreBenchReport {
    /// What was measured.
    pub config: RescoreBenchConfig,
    /// User rows each update replaced.
    pub touched_users: usize,
    /// Item rows each update replaced.
    pub touched_items: usize,
    /// Samples re-scored per update by the hand-written index (the samples touching a
    /// changed row), mean over the updates.
    pub affected_samples: f64,
    /// State changes (one per sample whose state changed) the engine returned per update,
    /// mean.
    pub engine_changes: f64,
    /// The full re-score loop.
    pub full: MethodTimes,
    /// The hand-written index.
    pub index: MethodTimes,
    /// The engine.
    pub engine: MethodTimes,
    /// Full re-score time over engine time, per update (means).
    pub speedup: f64,
    /// The same ratio of medians (less sensitive to other load on the machine).
    pub speedup_p50: f64,
    /// Engine time over hand-written index time, per update (means).
    pub vs_index: f64,
    /// The same ratio of medians.
    pub vs_index_p50: f64,
    /// Whether the engine's maintained scores equal the full re-score after the last update,
    /// bit for bit.
    pub equal: bool,
    /// Whether the index's scores equal the full re-score after the last update.
    pub index_equal: bool,
    /// The engine's median update latency.
    pub p50_ms: f64,
    /// Its 90th percentile.
    pub p90_ms: f64,
    /// Its 99th percentile.
    pub p99_ms: f64,
    /// Its slowest update.
    pub max_ms: f64,
    /// Resident memory once the pool, the baselines' tables and scores were set up.
    pub rss_setup_mb: f64,
    /// Resident memory once the engine had loaded the pool.
    pub rss_engine_loaded_mb: f64,
    /// Peak resident memory of the process from the engine's start to the end: the number
    /// to hold against a memory limit (it includes the baselines).
    pub peak_rss_mb: f64,
    /// `peak_rss_mb - rss_setup_mb`: the engine's share of the peak (its trace, side tables,
    /// the input it was handed, its maintained score table).
    pub engine_peak_mb: f64,
    /// Whether the peak counter could be restarted before the engine started; if not,
    /// `peak_rss_mb` is the peak of the whole run.
    pub peak_reset: bool,
}

/// Runs the benchmark. See the [module documentation](self).
pub fn bench_rescore(config: RescoreBenchConfig) -> Result<RescoreBenchReport, RescoreBenchError> {
    validate(&config)?;
    let shape = PoolShape {
        samples: config.samples,
        users: config.users,
        items: config.items,
        layout: RowLayout {
            members: config.members,
            dim: config.dim,
        },
        item_skew: config.item_skew,
    };
    let pool = SyntheticPool::generate(shape, config.seed);
    let stream_seed = config.seed.wrapping_add(1);
    let new_stream = || {
        UpdateStream::new(
            &pool,
            config.touch_users,
            config.touch_items,
            config.head_change,
            stream_seed,
        )
    };

    let index_tables = RowTables::new(&pool);
    let started = Instant::now();
    let index = UserItemIndex::build(&pool, &index_tables);
    let index_initial = ms_since(started);
    let full_tables = index_tables.clone();
    let started = Instant::now();
    let mut full_scores = Vec::with_capacity(pool.samples.len());
    full_tables.score_all(&pool.samples, &mut full_scores);
    let full_initial = ms_since(started);

    let setup = resident_memory().unwrap_or_default();
    let peak_reset = reset_peak();
    let mut engine = ScoringEngine::start(config.workers, pool.head.clone())?;
    let first = EngineUpdate {
        insert: pool.samples.clone(),
        user_rows: pool.user_entries(),
        item_rows: pool.item_entries(),
        ..EngineUpdate::default()
    };
    let started = Instant::now();
    let output = engine.apply(first)?;
    let mut engine_scores = vec![
        PerSampleScore {
            prediction: f32::NAN,
            variance: f32::NAN,
            loss: None,
        };
        pool.samples.len()
    ];
    apply_score_changes(&mut engine_scores, &output);
    drop(output);
    let engine_initial = ms_since(started);
    let loaded = resident_memory().unwrap_or_default();

    let mut contestants = Contestants {
        samples: &pool.samples,
        engine,
        engine_scores,
        engine_changes: 0,
        index,
        index_tables,
        diffs: Vec::new(),
        affected: 0,
        full_tables,
        full_scores,
        latency: LatencyRecorder::new(),
    };
    if config.sequential {
        for method in [Method::Engine, Method::Index, Method::Full] {
            let mut stream = new_stream();
            for _ in 0..config.updates {
                contestants.run(method, &stream.next_changes())?;
            }
        }
    } else {
        let mut stream = new_stream();
        for k in 0..config.updates {
            let changes = stream.next_changes();
            for method in rotation(k) {
                contestants.run(method, &changes)?;
            }
        }
    }
    let end = resident_memory().unwrap_or_default();
    let Contestants {
        engine,
        engine_scores,
        engine_changes,
        index,
        affected,
        full_scores,
        latency,
        ..
    } = contestants;
    engine.finish()?;
    let stream = new_stream();

    let summary = latency.summary();
    let full = MethodTimes::new(full_initial, summary.get(Method::Full.name()));
    let index_times = MethodTimes::new(index_initial, summary.get(Method::Index.name()));
    let engine_times = MethodTimes::new(engine_initial, summary.get(Method::Engine.name()));
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let updates = config.updates.max(1) as f64;
    Ok(RescoreBenchReport {
        touched_users: stream.touched_users(),
        touched_items: stream.touched_items(),
        affected_samples: affected as f64 / updates,
        engine_changes: engine_changes as f64 / updates,
        speedup: ratio(full.mean_ms, engine_times.mean_ms),
        speedup_p50: ratio(full.p50_ms, engine_times.p50_ms),
        vs_index: ratio(engine_times.mean_ms, index_times.mean_ms),
        vs_index_p50: ratio(engine_times.p50_ms, index_times.p50_ms),
        equal: same_bits(&engine_scores, &full_scores),
        index_equal: same_bits(index.scores(), &full_scores),
        p50_ms: engine_times.p50_ms,
        p90_ms: engine_times.p90_ms,
        p99_ms: engine_times.p99_ms,
        max_ms: engine_times.max_ms,
        rss_setup_mb: setup.now_mib,
        rss_engine_loaded_mb: loaded.now_mib,
        peak_rss_mb: end.peak_mib,
        engine_peak_mb: end.peak_mib - setup.now_mib,
        peak_reset,
        full,
        index: index_times,
        engine: engine_times,
        config,
    })
}

fn validate(config: &RescoreBenchConfig) -> Result<(), RescoreBenchError> {
    let fail = |flag, requirement, value: String| {
        Err(RescoreBenchError::Config {
            flag,
            requirement,
            value,
        })
    };
    // u32::MAX is reserved by the engine; sample indices are u32.
    for (flag, value) in [
        ("samples", config.samples),
        ("users", config.users),
        ("items", config.items),
    ] {
        if value == 0 || value == u32::MAX {
            return fail(flag, "between 1 and 4294967294", value.to_string());
        }
    }
    if config.members == 0 {
        return fail("members", "at least 1", config.members.to_string());
    }
    if config.workers == 0 {
        return fail("workers", "at least 1", config.workers.to_string());
    }
    for (flag, value) in [
        ("touch", config.touch_users),
        ("touch-items", config.touch_items),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return fail(flag, "a fraction between 0 and 1", value.to_string());
        }
    }
    if !(config.item_skew.is_finite() && config.item_skew >= 0.0) {
        return fail(
            "item-skew",
            "a finite number >= 0",
            config.item_skew.to_string(),
        );
    }
    Ok(())
}

/// The three methods timed on every update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Engine,
    Index,
    Full,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Engine => "engine",
            Method::Index => "index",
            Method::Full => "full",
        }
    }
}

/// The three methods' state during the timed updates.
struct Contestants<'p> {
    samples: &'p [PoolSample],
    engine: ScoringEngine,
    /// The engine's scores, maintained from its score changes.
    engine_scores: Vec<PerSampleScore>,
    engine_changes: usize,
    index: UserItemIndex,
    index_tables: RowTables,
    diffs: Vec<IndexDiff>,
    affected: usize,
    full_tables: RowTables,
    full_scores: Vec<PerSampleScore>,
    latency: LatencyRecorder,
}

impl Contestants<'_> {
    /// Applies `changes` with `method` and records how long it took. The engine's input is
    /// built before the clock starts (a driver builds it from its trainer's changed rows).
    fn run(&mut self, method: Method, changes: &RowChanges) -> Result<(), EngineError> {
        let update = (method == Method::Engine).then(|| EngineUpdate {
            user_rows: changes.users.clone(),
            item_rows: changes.items.clone(),
            head: changes.head.clone(),
            ..EngineUpdate::default()
        });
        let started = Instant::now();
        match method {
            Method::Engine => {
                let output = self.engine.apply(update.unwrap_or_default())?;
                apply_score_changes(&mut self.engine_scores, &output);
                self.engine_changes += output.updates.len();
            }
            Method::Index => {
                let tables = &mut self.index_tables;
                self.index
                    .update(self.samples, tables, changes, &mut self.diffs);
                self.affected += self.diffs.len();
            }
            Method::Full => {
                self.full_tables.apply(changes);
                self.full_tables
                    .score_all(self.samples, &mut self.full_scores);
            }
        }
        self.latency.record(method.name(), started.elapsed());
        Ok(())
    }
}

/// The order of the methods in update `k`: each runs first, second and third equally often.
fn rotation(k: usize) -> [Method; 3] {
    let order = [Method::Engine, Method::Index, Method::Full];
    [0, 1, 2].map(|j| order[(k + j) % 3])
}

/// Writes an engine round's new states into the maintained score table (no sample leaves
/// the bench's pool).
fn apply_score_changes(scores: &mut [PerSampleScore], output: &crate::dataflow::RoundOutput) {
    for change in &output.updates {
        if let Some(state) = &change.state {
            scores[change.sample as usize] = state.score;
        }
    }
}

fn same_bits(a: &[PerSampleScore], b: &[PerSampleScore]) -> bool {
    let bits = |s: &PerSampleScore| {
        (
            s.prediction.to_bits(),
            s.variance.to_bits(),
            s.loss.map(f32::to_bits),
        )
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| bits(x) == bits(y))
}

fn ms_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

impl fmt::Display for RescoreBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "rescore: {} samples, {} users, {} items (Zipf skew {}), dim {}, {} member(s), \
             engine on {} worker(s), seed {}; methods timed {}",
            c.samples,
            c.users,
            c.items,
            c.item_skew,
            c.dim,
            c.members,
            c.workers,
            c.seed,
            if c.sequential {
                "one after the other"
            } else {
                "in turn on each update"
            }
        )?;
        writeln!(
            f,
            "{} updates, each replacing {} user rows ({}%), {} item rows ({}%){}; \
             {:.0} samples affected per update",
            c.updates,
            self.touched_users,
            c.touch_users * 100.0,
            self.touched_items,
            c.touch_items * 100.0,
            if c.head_change { " and the head" } else { "" },
            self.affected_samples
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| method | initial | mean | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|---|"
        )?;
        for (name, t) in [
            ("full re-score", &self.full),
            ("hand-written index", &self.index),
            ("engine", &self.engine),
        ] {
            writeln!(
                f,
                "| {name} | {:.1} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
                t.initial_ms, t.mean_ms, t.p50_ms, t.p90_ms, t.p99_ms, t.max_ms
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "speedup (full / engine): {:.1}x (medians {:.1}x); engine / index: {:.2}x \
             (medians {:.2}x); equal: {}",
            self.speedup, self.speedup_p50, self.vs_index, self.vs_index_p50, self.equal
        )?;
        write!(
            f,
            "memory: {:.0} MiB resident after setup, {:.0} MiB with the engine loaded, peak \
             {:.0} MiB{} (engine's share {:.0} MiB)",
            self.rss_setup_mb,
            self.rss_engine_loaded_mb,
            self.peak_rss_mb,
            if self.peak_reset {
                ""
            } else {
                " over the whole run"
            },
            self.engine_peak_mb
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(workers: usize) -> RescoreBenchConfig {
        RescoreBenchConfig {
            samples: 20_000,
            users: 500,
            items: 200,
            dim: 8,
            members: 2,
            touch_users: 0.02,
            touch_items: 0.01,
            updates: 4,
            workers,
            ..RescoreBenchConfig::default()
        }
    }

    #[test]
    fn the_three_methods_agree_and_the_counts_add_up() {
        for workers in [1, 2] {
            let report = bench_rescore(small(workers)).unwrap();
            assert!(report.equal && report.index_equal, "{report}");
            assert_eq!((report.touched_users, report.touched_items), (10, 2));
            for t in [&report.full, &report.index, &report.engine] {
                assert_eq!(t.count, 4);
                assert!(
                    t.p50_ms <= t.p99_ms && t.p99_ms <= t.max_ms * 1.001,
                    "{t:?}"
                );
            }
            // Every affected sample's score changes (random rows): one change each.
            assert_eq!(report.engine_changes, report.affected_samples);
            assert!(report.affected_samples > 0.0);
            assert_eq!(report.p99_ms, report.engine.p99_ms);
        }
    }

    #[test]
    fn sequential_timing_reaches_the_same_scores() {
        let report = bench_rescore(RescoreBenchConfig {
            sequential: true,
            ..small(1)
        })
        .unwrap();
        assert!(report.equal && report.index_equal, "{report}");
        assert_eq!(report.engine_changes, report.affected_samples);
        assert_eq!(report.full.count, 4);
    }

    #[test]
    fn a_head_change_touches_every_sample() {
        let config = RescoreBenchConfig {
            head_change: true,
            updates: 2,
            ..small(1)
        };
        let report = bench_rescore(config).unwrap();
        assert!(report.equal);
        assert_eq!(report.affected_samples, 20_000.0);
    }

    #[test]
    fn the_json_has_the_documented_keys() {
        let report = bench_rescore(RescoreBenchConfig {
            updates: 1,
            ..small(1)
        })
        .unwrap();
        let json = serde_json::to_value(&report).unwrap();
        for key in ["speedup", "vs_index", "equal", "p99_ms", "peak_rss_mb"] {
            assert!(json.get(key).is_some(), "no {key} in {json}");
        }
        assert_eq!(json["config"]["samples"], 20_000);
    }

    #[test]
    fn bad_flags_are_refused_with_what_to_give() {
        let cases = [
            (
                RescoreBenchConfig {
                    samples: 0,
                    ..small(1)
                },
                "--samples must be between 1 and 4294967294 (got 0)",
            ),
            (
                RescoreBenchConfig {
                    touch_users: 1.5,
                    ..small(1)
                },
                "--touch must be a fraction between 0 and 1 (got 1.5)",
            ),
            (
                RescoreBenchConfig {
                    workers: 0,
                    ..small(1)
                },
                "--workers must be at least 1 (got 0)",
            ),
            (
                RescoreBenchConfig {
                    item_skew: f64::NAN,
                    ..small(1)
                },
                "--item-skew must be a finite number >= 0 (got NaN)",
            ),
        ];
        for (config, message) in cases {
            let error = bench_rescore(config).unwrap_err();
            assert!(error.is_user_error());
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn every_method_runs_first_equally_often() {
        let firsts: Vec<Method> = (0..3).map(|k| rotation(k)[0]).collect();
        assert_eq!(firsts, vec![Method::Engine, Method::Index, Method::Full]);
        assert_eq!(rotation(4), [Method::Index, Method::Full, Method::Engine]);
    }
}
