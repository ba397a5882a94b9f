//! `recsift bench rank`: full-catalogue top-K (the kernel behind every ranking metric and
//! `recommendations.parquet`) against a NumPy reference, side by side in one run.
//!
//! Both rank the same seeded user and item vectors. Their values lie on a grid of 1/64 in
//! `[-1, 1]`, so every dot product (64 terms of 1/4096 steps) is exact in `f32` whatever
//! the summation order: BLAS and recsift compute identical scores, many of them tied, and
//! the comparison checks that both break ties the documented way (higher score first, then
//! the lower item index) on every user's list.
//!
//! The reference (`benches/rank_reference.py`) multiplies a block of users by the whole
//! item matrix (`U_b @ V.T`, BLAS), takes each row's top K with `argpartition`, resolves
//! ties at the K-th score by item index, and sorts the K. recsift never holds a users ×
//! items block: see [`crate::metrics::topk`]. Both report users/s; GFLOP/s counts the
//! `2 · users · items · dim` multiply-adds of the scores.

use crate::error::UserFixable;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::embed::peak_rss_mb;
use crate::metrics::topk::{VectorTable, top_k};
use crate::seeding::mix64;

/// What to rank.
#[derive(Clone, Debug)]
pub struct RankBenchConfig {
    /// Users ranked.
    pub users: usize,
    /// Items in the catalogue.
    pub items: usize,
    /// Vector length.
    pub dim: usize,
    /// List length.
    pub k: usize,
    /// Threads recsift ranks on.
    pub threads: usize,
    /// Users per reference block (`U_b @ V.T`).
    pub block: usize,
    /// Seed of the vectors.
    pub seed: u64,
    /// The reference script; `None` runs recsift alone.
    pub reference: Option<PathBuf>,
    /// The Python interpreter that runs it.
    pub python: String,
}

/// One side's timing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RankTiming {
    /// Wall time of the ranking (after the vectors exist), in seconds.
    pub seconds: f64,
    /// Users ranked per second.
    pub users_per_s: f64,
    /// Score multiply-adds per second, in GFLOP/s.
    pub gflops: f64,
    /// Peak resident memory of the process, in MiB.
    pub peak_rss_mb: Option<f64>,
}

/// The reference's outcome.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceOutcome {
    /// It ran: its timing and how its lists compare.
    Ran {
        /// Its timing.
        timing: RankTiming,
        /// Users whose list differs from recsift's (items or order).
        differing_users: usize,
        /// recsift's users/s over the reference's.
        speedup: f64,
    },
    /// It could not run (no Python, no NumPy): why.
    Unavailable(String),
}

/// `bench rank`'s report.
#[derive(Clone, Debug, Serialize)]
pub struct RankBenchReport {
    /// Users ranked.
    pub users: usize,
    /// Items in the catalogue.
    pub items: usize,
    /// Vector length.
    pub dim: usize,
    /// List length.
    pub k: usize,
    /// Threads recsift used.
    pub threads: usize,
    /// recsift's timing.
    pub recsift: RankTiming,
    /// The reference's.
    pub reference: ReferenceOutcome,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum RankBenchError {
    /// A size is zero, or K exceeds the catalogue.
    #[error("{0}")]
    Config(String),
    /// Writing the vectors for the reference, or reading its lists, failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was read or written.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl UserFixable for RankBenchError {
    /// Whether the user can fix this (exit code 2).
    fn is_user_error(&self) -> bool {
        matches!(self, RankBenchError::Config(_))
    }
}

/// Runs recsift's top-K and, if configured, the reference on the same vectors.
pub fn bench_rank(config: &RankBenchConfig) -> Result<RankBenchReport, RankBenchError> {
    if config.users == 0 || config.items == 0 || config.dim == 0 || config.k == 0 {
        return Err(RankBenchError::Config(
            "--users, --items, --dim and --k must all be at least 1".into(),
        ));
    }
    if config.k > config.items {
        return Err(RankBenchError::Config(format!(
            "--k {} is larger than the catalogue (--items {})",
            config.k, config.items
        )));
    }
    let users = grid_vectors(config.users, config.dim, config.seed, 1);
    let items = grid_vectors(config.items, config.dim, config.seed, 2);
    let none: &[u32] = &[];
    let started = Instant::now();
    let lists = top_k(&users, &items, config.k, &|_| none, config.threads);
    let recsift = timing(config, started.elapsed().as_secs_f64(), peak_rss_mb());
    let reference = match &config.reference {
        None => ReferenceOutcome::Unavailable("not asked for (--no-reference)".into()),
        Some(script) => {
            let ours: Vec<u32> = lists.iter().flatten().map(|r| r.item).collect();
            run_reference(config, script, &users, &items, &ours, &recsift)?
        }
    };
    Ok(RankBenchReport {
        users: config.users,
        items: config.items,
        dim: config.dim,
        k: config.k,
        threads: config.threads,
        recsift,
        reference,
    })
}

fn timing(config: &RankBenchConfig, seconds: f64, peak_rss_mb: Option<f64>) -> RankTiming {
    let flops = 2.0 * config.users as f64 * config.items as f64 * config.dim as f64;
    RankTiming {
        seconds,
        users_per_s: config.users as f64 / seconds,
        gflops: flops / seconds / 1e9,
        peak_rss_mb,
    }
}

/// `rows × dim` seeded values on the grid `{-64, ..., 64} / 64`.
fn grid_vectors(rows: usize, dim: usize, seed: u64, stream: u64) -> VectorTable {
    let base = mix64(seed ^ mix64(stream));
    let values = (0..rows * dim)
        .map(|k| (mix64(base ^ k as u64) % 129) as f32 / 64.0 - 1.0)
        .collect();
    VectorTable::new(dim, values)
}

/// What the reference script prints (one JSON object).
#[derive(Deserialize)]
struct ReferenceReport {
    seconds: f64,
    peak_rss_mb: Option<f64>,
}

fn run_reference(
    config: &RankBenchConfig,
    script: &Path,
    users: &VectorTable,
    items: &VectorTable,
    ours: &[u32],
    recsift: &RankTiming,
) -> Result<ReferenceOutcome, RankBenchError> {
    let dir = std::env::temp_dir().join(format!("recsift-bench-rank-{}", std::process::id()));
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| RankBenchError::Io { what, path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let (u_path, v_path, out_path) = (dir.join("u.f32"), dir.join("v.f32"), dir.join("top.u32"));
    write_f32(&u_path, users).map_err(io("writing", &u_path))?;
    write_f32(&v_path, items).map_err(io("writing", &v_path))?;
    let output = Command::new(&config.python)
        .arg(script)
        .args(["--users", &u_path.display().to_string()])
        .args(["--items", &v_path.display().to_string()])
        .args(["--dim", &config.dim.to_string()])
        .args(["--k", &config.k.to_string()])
        .args(["--block", &config.block.to_string()])
        .args(["--out", &out_path.display().to_string()])
        .output();
    let outcome = match output {
        Err(e) => {
            ReferenceOutcome::Unavailable(format!("could not start `{}`: {e}", config.python))
        }
        Ok(out) if !out.status.success() => ReferenceOutcome::Unavailable(format!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            match serde_json::from_str::<ReferenceReport>(text.trim()) {
                Err(e) => ReferenceOutcome::Unavailable(format!(
                    "{} printed no report ({e}): {}",
                    script.display(),
                    text.trim()
                )),
                Ok(report) => {
                    let theirs = read_u32(&out_path).map_err(io("reading", &out_path))?;
                    let timing = timing(config, report.seconds, report.peak_rss_mb);
                    ReferenceOutcome::Ran {
                        differing_users: differing_lists(ours, &theirs, config.k),
                        speedup: recsift.users_per_s / timing.users_per_s,
                        timing,
                    }
                }
            }
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(outcome)
}

/// Users whose K items differ in any position (a missing or extra list counts whole).
fn differing_lists(ours: &[u32], theirs: &[u32], k: usize) -> usize {
    let users = ours.len().max(theirs.len()) / k;
    (0..users)
        .filter(|u| ours.get(u * k..(u + 1) * k) != theirs.get(u * k..(u + 1) * k))
        .count()
}

fn write_f32(path: &Path, table: &VectorTable) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(table.rows() * table.dim() * 4);
    for r in 0..table.rows() {
        for x in table.row(r) {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    std::fs::write(path, bytes)
}

fn read_u32(path: &Path) -> std::io::Result<Vec<u32>> {
    let bytes = std::fs::read(path)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

impl fmt::Display for RankBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "top-{} over {} items for {} users, dim {} ({} threads for recsift)",
            self.k, self.items, self.users, self.dim, self.threads
        )?;
        let line = |f: &mut fmt::Formatter<'_>, name: &str, t: &RankTiming| {
            writeln!(
                f,
                "  {name:<22} {:>8.2} s  {:>11.0} users/s  {:>7.1} GFLOP/s  peak {}",
                t.seconds,
                t.users_per_s,
                t.gflops,
                t.peak_rss_mb
                    .map_or("?".to_string(), |mb| format!("{mb:.0} MiB"))
            )
        };
        line(f, "recsift (blocked top-K)", &self.recsift)?;
        match &self.reference {
            ReferenceOutcome::Ran {
                timing,
                differing_users,
                speedup,
            } => {
                line(f, "numpy (U_b @ V.T)", timing)?;
                writeln!(
                    f,
                    "  recsift / numpy: {speedup:.2}x users/s; lists differing: {differing_users} of {}",
                    self.users
                )
            }
            ReferenceOutcome::Unavailable(why) => writeln!(f, "  reference not run: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_values_make_exact_dot_products() {
        let t = grid_vectors(3, 64, 1, 1);
        for r in 0..3 {
            for &x in t.row(r) {
                assert!((-1.0..=1.0).contains(&x) && (x * 64.0).fract() == 0.0);
            }
        }
    }

    #[test]
    fn lists_differing_in_any_position_are_counted() {
        assert_eq!(differing_lists(&[1, 2, 3, 4], &[1, 2, 4, 3], 2), 1);
        assert_eq!(differing_lists(&[1, 2, 3, 4], &[1, 2], 2), 1);
        assert_eq!(differing_lists(&[1, 2], &[1, 2], 2), 0);
    }

    #[test]
    fn configuration_errors_are_the_users() {
        let config = RankBenchConfig {
            users: 10,
            items: 5,
            dim: 4,
            k: 6,
            threads: 1,
            block: 4,
            seed: 1,
            reference: None,
            python: "python3".into(),
        };
        let e = bench_rank(&config).unwrap_err();
        assert!(e.is_user_error() && e.to_string().contains("larger than the catalogue"));
    }
}
