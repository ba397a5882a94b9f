//! `cargo bench --bench rescore`: one update of a small synthetic pool (200k samples, 20k
//! users, 2k items, d = 32), changing 1% of the user rows, applied by the incremental
//! engine, by the hand-written index and by a full re-score. `recsift bench rescore` measures
//! the same at any size, with latency percentiles and memory; this keeps a quick regression
//! check under criterion's statistics.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

use recsift::bench::rescore::{PoolShape, RowTables, SyntheticPool, UpdateStream, UserItemIndex};
use recsift::dataflow::{EngineUpdate, ScoringEngine};
use recsift::scoring::RowLayout;

fn pool() -> SyntheticPool {
    let shape = PoolShape {
        samples: 200_000,
        users: 20_000,
        items: 2_000,
        layout: RowLayout { members: 1, dim: 32 },
        item_skew: 1.0,
    };
    SyntheticPool::generate(shape, 42)
}

fn rescore(c: &mut Criterion) {
    let pool = pool();
    let mut group = c.benchmark_group("rescore 200k samples, 1% of users");
    group.sample_size(30);

    for workers in [1, 2] {
        let mut engine = ScoringEngine::start(workers, pool.head.clone()).expect("engine starts");
        engine
            .apply(EngineUpdate {
                insert: pool.samples.clone(),
                user_rows: pool.user_entries(),
                item_rows: pool.item_entries(),
                ..EngineUpdate::default()
            })
            .expect("the pool loads");
        let mut stream = UpdateStream::new(&pool, 0.01, 0.0, false, 7);
        group.bench_function(format!("engine, {workers} worker(s)"), |b| {
            b.iter_batched(
                || EngineUpdate {
                    user_rows: stream.next_changes().users,
                    ..EngineUpdate::default()
                },
                |update| engine.apply(update).expect("an update applies").updates.len(),
                BatchSize::SmallInput,
            )
        });
        engine.finish().expect("the engine stops");
    }

    let mut tables = RowTables::new(&pool);
    let mut index = UserItemIndex::build(&pool, &tables);
    let mut diffs = Vec::new();
    let mut stream = UpdateStream::new(&pool, 0.01, 0.0, false, 7);
    group.bench_function("hand-written index", |b| {
        b.iter_batched(
            || stream.next_changes(),
            |changes| {
                index.update(&pool.samples, &mut tables, &changes, &mut diffs);
                diffs.len()
            },
            BatchSize::SmallInput,
        )
    });

    let mut tables = RowTables::new(&pool);
    let mut scores = Vec::new();
    let mut stream = UpdateStream::new(&pool, 0.01, 0.0, false, 7);
    group.bench_function("full re-score", |b| {
        b.iter_batched(
            || stream.next_changes(),
            |changes| {
                tables.apply(&changes);
                tables.score_all(&pool.samples, &mut scores);
                scores.len()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, rescore);
criterion_main!(benches);
