//! Writing the log: events streamed slice by slice into one Parquet file while the next
//! slice is generated on another thread, then the items file. A shuffled log (`--shuffle`)
//! is held whole instead, and written in a seeded random order.
//!
//! The files use the MovieLens importer's schemas (see [`crate::io`]), through the same
//! Parquet writer ([`ParquetSink`]), so a pipeline reads a synthetic log as it reads an
//! imported one.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::SchemaRef;

use super::SynthConfig;
use super::catalog::{Items, Users};
use super::events::{SliceDraws, SliceEvents, SliceGenerator};
use super::rng::{Purpose, Rng};
use super::timeline::Timeline;
use crate::io::IoError;
use crate::io::events::events_schema;
use crate::io::items::write_item_table;
use crate::io::parquet_file::{ParquetSink, ROW_GROUP_ROWS};

/// Slices generated ahead of the writer (bounds memory to a few slices).
const SLICES_IN_FLIGHT: usize = 2;

/// What the events file holds, counted while it was written.
#[derive(Debug)]
pub(crate) struct EventStats {
    pub(crate) rows: u64,
    pub(crate) users_with_events: u32,
    pub(crate) items_with_events: u32,
    pub(crate) label_sum: f64,
    /// Events repeating an earlier (user, item) pair.
    pub(crate) repeats: u64,
    /// First and last timestamp (None for no rows).
    pub(crate) time_range: Option<(i64, i64)>,
}

/// Generates every slice and writes the events to `path`, atomically.
pub(crate) fn write_events(
    config: &SynthConfig,
    users: &Users,
    items: &Items,
    timeline: &Timeline,
    path: &Path,
) -> Result<EventStats, IoError> {
    let schema = events_schema(config.label);
    let mut sink = ParquetSink::create(path, Arc::clone(&schema))?;
    let mut users_seen = vec![false; users.len()];
    let mut items_seen = vec![false; items.len()];
    let mut label_sum = 0.0f64;
    let mut repeats = 0u64;
    let mut time_range: Option<(i64, i64)> = None;
    // With `shuffle`, every slice is held until the end.
    let mut held: Option<Vec<RecordBatch>> = config.shuffle.then(Vec::new);

    std::thread::scope(|scope| -> Result<(), IoError> {
        let (sender, receiver) = sync_channel::<SliceDraws>(SLICES_IN_FLIGHT);
        scope.spawn(move || {
            let mut generator = SliceGenerator::new(config, users, items, timeline);
            for s in 0..timeline.len() {
                let slice = generator.slice(s);
                if slice.is_empty() {
                    continue;
                }
                if sender.send(slice).is_err() {
                    return; // The writer failed and stopped listening.
                }
            }
        });
        for draws in receiver {
            // Sorting into time order here balances the two threads.
            let slice = draws.into_events(config.start);
            for &u in &slice.user_id {
                users_seen[(u - 1) as usize] = true;
            }
            for &i in &slice.item_id {
                items_seen[(i - 1) as usize] = true;
            }
            repeats += slice.repeats;
            label_sum += slice.label.iter().map(|&l| f64::from(l)).sum::<f64>();
            if let (Some(&first), Some(&last)) = (slice.timestamp.first(), slice.timestamp.last()) {
                time_range = Some((time_range.map_or(first, |r| r.0), last));
            }
            let batch = slice_batch(&schema, slice, path)?;
            match &mut held {
                Some(held) => held.push(batch),
                None => sink.write(&batch)?,
            }
        }
        Ok(())
    })?;
    if let Some(held) = held {
        write_shuffled(&mut sink, &held, config.seed, path)?;
    }
    let rows = sink.finish()?;
    let count = |seen: &[bool]| seen.iter().filter(|s| **s).count() as u32;
    Ok(EventStats {
        rows,
        users_with_events: count(&users_seen),
        items_with_events: count(&items_seen),
        label_sum,
        repeats,
        time_range,
    })
}

/// Writes every row of `batches` in a random order drawn from `seed` (Fisher-Yates).
fn write_shuffled(
    sink: &mut ParquetSink,
    batches: &[RecordBatch],
    seed: u64,
    path: &Path,
) -> Result<(), IoError> {
    let mut rows: Vec<(u32, u32)> = batches
        .iter()
        .enumerate()
        .flat_map(|(b, batch)| (0..batch.num_rows() as u32).map(move |r| (b as u32, r)))
        .collect();
    let mut rng = Rng::stream(seed, Purpose::Shuffle, 0);
    for i in (1..rows.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        rows.swap(i, j);
    }
    let batches: Vec<&RecordBatch> = batches.iter().collect();
    for chunk in rows.chunks(ROW_GROUP_ROWS) {
        let indices: Vec<(usize, usize)> = chunk
            .iter()
            .map(|&(b, r)| (b as usize, r as usize))
            .collect();
        let batch =
            interleave_record_batch(&batches, &indices).map_err(|source| IoError::Arrow {
                path: path.to_path_buf(),
                source,
            })?;
        sink.write(&batch)?;
    }
    Ok(())
}

/// A slice's columns as a record batch (no copy).
fn slice_batch(
    schema: &SchemaRef,
    slice: SliceEvents,
    path: &Path,
) -> Result<RecordBatch, IoError> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(slice.user_id)),
        Arc::new(Int64Array::from(slice.item_id)),
        Arc::new(Float32Array::from(slice.label)),
        Arc::new(Int64Array::from(slice.timestamp)),
    ];
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|source| IoError::Arrow {
        path: path.to_path_buf(),
        source,
    })
}

/// `item_id: Int64, title: Utf8, genres: List<Utf8>`, one row per item, by id.
pub(crate) fn write_items(path: &Path, items: &Items) -> Result<(), IoError> {
    write_item_table(
        path,
        (0..items.len()).map(|i| (i as i64 + 1, items.titles[i].as_str(), items.genre_names(i))),
    )
}
