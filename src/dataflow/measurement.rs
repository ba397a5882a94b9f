//! A measurement, not a check: the engine's update time against a plain full re-score loop
//! and a hand-written `user -> samples` index, and the process's peak memory.
//!
//! ```text
//! cargo test --release --lib dataflow::measurement -- --ignored --nocapture
//! ```
//! Sizes can be changed with `RECSIFT_MEASURE=samples,users,items,dim,workers` (e.g.
//! `1000000,100000,10000,32,1`), the number of update rounds with `RECSIFT_MEASURE_ROUNDS`.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::data::LabelKind;
use crate::scoring::ScoringHead;

/// Resident and peak resident memory of this process, in MiB (Linux only; 0 elsewhere).
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak-resident counter to the current resident size (Linux >= 4.0).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Sizes {
    samples: u32,
    users: u32,
    items: u32,
    dim: usize,
    workers: Vec<usize>,
}

fn sizes() -> Sizes {
    let parsed: Option<Vec<usize>> = std::env::var("RECSIFT_MEASURE")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect());
    match parsed.as_deref() {
        Some([s, u, i, d, w]) => Sizes {
            samples: *s as u32,
            users: *u as u32,
            items: *i as u32,
            dim: *d,
            workers: vec![*w],
        },
        _ => Sizes {
            samples: 1_000_000,
            users: 100_000,
            items: 10_000,
            dim: 32,
            workers: vec![1, 2],
        },
    }
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn incremental_update_against_full_rescore_and_hand_written_index() {
    let sizes = sizes();
    let layout = RowLayout {
        members: 1,
        dim: sizes.dim,
    };
    let row_len = layout.row_len();
    let head = ScoringHead::new(layout, vec![3.5], LabelKind::Rating).with_clip(0.5, 5.0);
    let mut rng = StdRng::seed_from_u64(1);
    let samples: Vec<PoolSample> = (0..sizes.samples)
        .map(|sample| PoolSample {
            sample,
            user: rng.random_range(0..sizes.users),
            item: rng.random_range(0..sizes.items),
            label: rng.random_bool(0.5).then(|| rng.random_range(1..=5) as f32),
        })
        .collect();
    let row = |rng: &mut StdRng| -> Vec<f32> {
        (0..row_len).map(|_| rng.random_range(-0.3..0.3)).collect()
    };
    let user_rows: Vec<Vec<f32>> = (0..sizes.users).map(|_| row(&mut rng)).collect();
    let item_rows: Vec<Vec<f32>> = (0..sizes.items).map(|_| row(&mut rng)).collect();
    let rounds: usize = std::env::var("RECSIFT_MEASURE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    // Each round changes a different 1% of the user rows.
    let changed = (sizes.users / 100) as usize;
    let changes: Vec<Vec<(u32, Vec<f32>)>> = (0..rounds)
        .map(|_| {
            let mut users: Vec<u32> = (0..changed)
                .map(|_| rng.random_range(0..sizes.users))
                .collect();
            users.sort_unstable();
            users.dedup();
            users.into_iter().map(|u| (u, row(&mut rng))).collect()
        })
        .collect();
    println!(
        "samples {}, users {}, items {}, dim {}, members 1; {} rounds of ~{} user rows (1%)",
        sizes.samples, sizes.users, sizes.items, sizes.dim, rounds, changed
    );

    // Plain loop: flat row tables, score every sample.
    let mut flat_users: Vec<f32> = user_rows.concat();
    let flat_items: Vec<f32> = item_rows.concat();
    let full_rescore = |flat_users: &[f32], scores: &mut Vec<crate::scoring::PerSampleScore>| {
        scores.clear();
        scores.extend(samples.iter().map(|s| {
            let u = s.user as usize * row_len;
            let i = s.item as usize * row_len;
            head.score(
                &flat_users[u..u + row_len],
                &flat_items[i..i + row_len],
                s.label,
            )
        }));
    };
    let mut scores = Vec::with_capacity(samples.len());
    let start = Instant::now();
    full_rescore(&flat_users, &mut scores);
    let plain_initial = start.elapsed();
    // The baselines vary little between rounds: ten are enough.
    let baseline_rounds = rounds.min(10);
    let mut plain_update = Duration::ZERO;
    for round in &changes[..baseline_rounds] {
        let start = Instant::now();
        for (user, row) in round {
            let u = *user as usize * row_len;
            flat_users[u..u + row_len].copy_from_slice(row);
        }
        full_rescore(&flat_users, &mut scores);
        plain_update += start.elapsed();
    }
    let plain_update = plain_update / baseline_rounds as u32;

    // Hand-written index: user -> samples (CSR), re-score the changed users' samples and
    // emit (sample, old, new) diffs.
    let mut flat_users: Vec<f32> = user_rows.concat();
    let start = Instant::now();
    let mut offsets = vec![0u32; sizes.users as usize + 1];
    for s in &samples {
        offsets[s.user as usize + 1] += 1;
    }
    for u in 0..sizes.users as usize {
        offsets[u + 1] += offsets[u];
    }
    let mut fill = offsets.clone();
    let mut by_user = vec![0u32; samples.len()];
    for s in &samples {
        by_user[fill[s.user as usize] as usize] = s.sample;
        fill[s.user as usize] += 1;
    }
    let mut current = Vec::with_capacity(samples.len());
    full_rescore(&flat_users, &mut current);
    let index_initial = start.elapsed();
    let mut index_update = Duration::ZERO;
    let mut index_diffs = Vec::new();
    for round in &changes[..baseline_rounds] {
        let start = Instant::now();
        index_diffs.clear();
        for (user, row) in round {
            let u = *user as usize * row_len;
            flat_users[u..u + row_len].copy_from_slice(row);
            let urow = &flat_users[u..u + row_len];
            for &sample in
                &by_user[offsets[*user as usize] as usize..offsets[*user as usize + 1] as usize]
            {
                let s = &samples[sample as usize];
                let i = s.item as usize * row_len;
                let new = head.score(urow, &flat_items[i..i + row_len], s.label);
                let old = std::mem::replace(&mut current[sample as usize], new);
                index_diffs.push((sample, old, new));
            }
        }
        index_update += start.elapsed();
    }
    let index_update = index_update / baseline_rounds as u32;
    let index_last_round = index_diffs.len();
    drop((
        scores,
        current,
        by_user,
        fill,
        offsets,
        flat_users,
        index_diffs,
    ));

    println!("| | initial | update (mean of {baseline_rounds} / {rounds} rounds) |");
    println!("|---|---|---|");
    println!(
        "| plain loop, full (re-)score | {:.1} ms | {:.1} ms |",
        ms(plain_initial),
        ms(plain_update)
    );
    println!(
        "| hand-written index user -> samples | {:.1} ms | {:.2} ms |",
        ms(index_initial),
        ms(index_update)
    );

    for &workers in &sizes.workers {
        let (rss_before, _) = memory_mib();
        reset_peak();
        let mut engine = ScoringEngine::start(workers, head.clone()).unwrap();
        let start = Instant::now();
        let first = engine
            .apply(EngineUpdate {
                insert: samples.clone(),
                user_rows: user_rows
                    .iter()
                    .cloned()
                    .enumerate()
                    .map(|(u, r)| (u as u32, r))
                    .collect(),
                item_rows: item_rows
                    .iter()
                    .cloned()
                    .enumerate()
                    .map(|(i, r)| (i as u32, r))
                    .collect(),
                ..EngineUpdate::default()
            })
            .unwrap();
        let initial = start.elapsed();
        assert_eq!(first.updates.len(), samples.len());
        drop(first);
        let (rss_loaded, peak_loaded) = memory_mib();
        let mut update_times = Vec::new();
        let mut first_rounds = 0;
        for (k, round) in changes.iter().enumerate() {
            let start = Instant::now();
            let output = engine
                .apply(EngineUpdate {
                    user_rows: round.clone(),
                    ..EngineUpdate::default()
                })
                .unwrap();
            update_times.push(start.elapsed());
            if k == baseline_rounds - 1 {
                first_rounds = output.updates.len();
            }
        }
        let (rss_after, peak_after) = memory_mib();
        engine.finish().unwrap();
        assert_eq!(
            first_rounds,
            2 * index_last_round,
            "engine and index disagree on the affected samples"
        );
        let mean = update_times.iter().sum::<Duration>() / rounds as u32;
        let mut sorted = update_times.clone();
        sorted.sort();
        println!(
            "| engine, {workers} worker(s) | {:.0} ms | {:.2} ms (median {:.2}, max {:.2}) |",
            ms(initial),
            ms(mean),
            ms(sorted[sorted.len() / 2]),
            ms(sorted[sorted.len() - 1]),
        );
        println!(
            "|   memory, {workers} worker(s) | RSS {:.0} MiB before, {:.0} MiB loaded, {:.0} MiB after \
             updates; peak {:.0} MiB while loading, {:.0} MiB overall |",
            rss_before, rss_loaded, rss_after, peak_loaded, peak_after
        );
    }
}
