//! Reading one Parquet file with the processes of a cluster, each only its own share.
//!
//! The file's rows are cut into *blocks* of at most [`BLOCK_ROWS`] rows, never across a
//! row group; block `b` belongs to process `b % N`. A process reads only its own blocks (the
//! row groups that hold them, and within those only the selected rows: a Parquet row
//! selection, which skips whole pages where the file has a page index, as files written by
//! Arrow and recsift do), and in round `r` hands block `r * N + p` to every other process
//! through an [`AllGather`], as an Arrow IPC stream. Every process therefore receives every
//! block, in file order, and decodes the same rows: the drivers of a cluster are replicas
//! (see `docs/cluster.md`), and what is split is the reading and decoding of the file, not
//! what is done with its rows. No process holds more than one round of blocks.
//!
//! A process that cannot read its block sends the reason instead, so that every process
//! stops with it rather than waiting for a block that never comes.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::IoError;

/// Rows per block at most: small enough that a small file is still shared out (and a round
/// of blocks is little memory), large enough that a round's exchange costs little next to
/// decoding its rows.
pub const BLOCK_ROWS: usize = 65_536;

/// Shares one payload of bytes per process with every process of a cluster.
pub trait AllGather: Send + Sync {
    /// This process's index.
    fn process(&self) -> usize;
    /// Processes in the cluster.
    fn processes(&self) -> usize;
    /// Hands `payload` to every process and returns every process's payload in process
    /// order (this one's among them). Every process must call it equally often.
    fn all_gather(&self, payload: Vec<u8>) -> Result<Vec<Vec<u8>>, String>;
}

/// The cluster a file is read by, shared by its readers.
pub type ReadShare = Arc<dyn AllGather>;

/// Rows `start..start + len` of row group `group`, the file's rows from `first_row`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    group: usize,
    start: u64,
    len: u64,
    first_row: u64,
}

/// How a file's rows are dealt out to the processes: its blocks, from the row group sizes
/// in its metadata (so that every process computes the same).
#[derive(Clone, Debug)]
pub(crate) struct BlockPlan {
    blocks: Vec<Block>,
    /// Rows in each row group.
    group_rows: Vec<u64>,
    process: usize,
    processes: usize,
}

impl BlockPlan {
    /// Blocks of at most `block_rows` rows over row groups of `group_rows` rows, dealt to
    /// `processes` processes, seen from `process`.
    pub(crate) fn new(
        group_rows: &[u64],
        block_rows: usize,
        process: usize,
        processes: usize,
    ) -> Self {
        let block_rows = block_rows.max(1) as u64;
        let mut blocks = Vec::new();
        let mut row = 0;
        for (group, &rows) in group_rows.iter().enumerate() {
            let mut start = 0;
            while start < rows {
                let len = block_rows.min(rows - start);
                blocks.push(Block {
                    group,
                    start,
                    len,
                    first_row: row + start,
                });
                start += len;
            }
            row += rows;
        }
        Self {
            blocks,
            group_rows: group_rows.to_vec(),
            process,
            processes: processes.max(1),
        }
    }

    /// Blocks in the file.
    pub(crate) fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Rounds it takes every process to send all its blocks.
    pub(crate) fn rounds(&self) -> usize {
        self.blocks.len().div_ceil(self.processes)
    }

    /// The block this process sends in `round`, if it has one left.
    pub(crate) fn own_block(&self, round: usize) -> Option<usize> {
        let block = round * self.processes + self.process;
        (block < self.blocks.len()).then_some(block)
    }

    /// This process's blocks, in file order (the one of each round).
    fn own_blocks(&self) -> impl Iterator<Item = usize> + use<> {
        (self.process..self.blocks.len()).step_by(self.processes)
    }

    /// Rows in block `block`.
    pub(crate) fn rows(&self, block: usize) -> u64 {
        self.blocks[block].len
    }

    /// File row of block `block`'s first row.
    pub(crate) fn first_row(&self, block: usize) -> u64 {
        self.blocks[block].first_row
    }

    /// The row groups holding this process's blocks, and the selection of its rows within
    /// them (in the order a reader of those row groups serves rows, to the end of the last).
    pub(crate) fn own_rows(&self) -> (Vec<usize>, RowSelection) {
        let mut groups: Vec<usize> = Vec::new();
        let mut selectors = Vec::new();
        // Position within the last group in `groups`.
        let mut at = 0;
        let skip = |selectors: &mut Vec<RowSelector>, rows: u64| {
            if rows > 0 {
                selectors.push(RowSelector::skip(rows as usize));
            }
        };
        for block in self.own_blocks() {
            let Block {
                group, start, len, ..
            } = self.blocks[block];
            if groups.last() != Some(&group) {
                if let Some(&previous) = groups.last() {
                    skip(&mut selectors, self.group_rows[previous] - at);
                }
                groups.push(group);
                at = 0;
            }
            skip(&mut selectors, start - at);
            selectors.push(RowSelector::select(len as usize));
            at = start + len;
        }
        if let Some(&last) = groups.last() {
            skip(&mut selectors, self.group_rows[last] - at);
        }
        (groups, RowSelection::from(selectors))
    }
}

/// What a process sends in a round.
const TAG_BLOCK: u8 = 0;
const TAG_NONE: u8 = 1;
const TAG_ERROR: u8 = 2;

/// A round's payload as one process received it.
enum Parcel {
    /// The block's rows.
    Block(Vec<RecordBatch>),
    /// The process had no block left.
    None,
    /// The process could not read its block, for this reason.
    Error(String),
}

/// The rows of a file in file order, each process reading only its own blocks and
/// receiving the others' (see the [module documentation](self)). An iterator of record
/// batches that stops after the first error.
pub(crate) struct SharedBatches {
    path: PathBuf,
    share: ReadShare,
    plan: BlockPlan,
    /// This process's blocks' rows, in file order (the reader of its row selection).
    own: BlockRows,
    round: usize,
    ready: VecDeque<RecordBatch>,
    failed: bool,
}

impl SharedBatches {
    /// Batches of `path`, whose blocks `plan` deals out, reading this process's rows from
    /// `own` (a reader of [`BlockPlan::own_rows`]).
    pub(crate) fn new(
        path: &Path,
        share: ReadShare,
        plan: BlockPlan,
        own: impl Iterator<Item = Result<RecordBatch, IoError>> + 'static,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            share,
            plan,
            own: BlockRows::new(own),
            round: 0,
            ready: VecDeque::new(),
            failed: false,
        }
    }

    /// Runs one round: sends this process's block (or why it has none) and queues every
    /// block received.
    fn exchange(&mut self) -> Result<(), IoError> {
        let mut own_error = None;
        let payload = match self.plan.own_block(self.round) {
            None => vec![TAG_NONE],
            Some(block) => match self.own.take(self.plan.rows(block)) {
                Ok(batches) => {
                    encode(&batches).map_err(|reason| gather_error(&self.path, reason))?
                }
                Err(error) => error_payload(error, &mut own_error),
            },
        };
        crate::failpoint::reached("share");
        let payloads = self
            .share
            .all_gather(payload)
            .map_err(|reason| gather_error(&self.path, reason))?;
        self.round += 1;
        for (process, payload) in payloads.into_iter().enumerate() {
            match decode(&payload).map_err(|reason| gather_error(&self.path, reason))? {
                Parcel::Block(batches) => self.ready.extend(batches),
                Parcel::None => {}
                Parcel::Error(message) => {
                    let failed = Failed { process, message };
                    return Err(failed.into_error(&self.path, &*self.share, own_error));
                }
            }
        }
        Ok(())
    }
}

impl Iterator for SharedBatches {
    type Item = Result<RecordBatch, IoError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(batch) = self.ready.pop_front() {
                return Some(Ok(batch));
            }
            if self.round >= self.plan.rounds() {
                return None;
            }
            if let Err(error) = self.exchange() {
                // Blocks of the failed round that arrived before the error are not served.
                self.failed = true;
                self.ready.clear();
                return Some(Err(error));
            }
        }
    }
}

/// Reads this process's blocks of `plan` from `own` (a reader of [`BlockPlan::own_rows`]),
/// makes a summary of each with `summarise(first file row, batches)`, and exchanges them:
/// returns the summary of every block of the file, in file order. One round for the whole
/// file (as JSON): summaries are meant to be small.
pub(crate) fn summarise_blocks<T: Serialize + DeserializeOwned>(
    path: &Path,
    share: &ReadShare,
    plan: &BlockPlan,
    own: impl Iterator<Item = Result<RecordBatch, IoError>> + 'static,
    mut summarise: impl FnMut(u64, Vec<RecordBatch>) -> Result<T, IoError>,
) -> Result<Vec<T>, IoError> {
    let mut rows = BlockRows::new(own);
    let summaries: Result<Vec<T>, IoError> = plan
        .own_blocks()
        .map(|block| {
            let batches = rows.take(plan.rows(block))?;
            summarise(plan.first_row(block), batches)
        })
        .collect();
    let mut own_error = None;
    let summaries = summaries.map_err(|error| {
        let message = error.to_string();
        own_error = Some(error);
        message
    });
    let payload = serde_json::to_vec(&summaries).map_err(|e| gather_error(path, e.to_string()))?;
    let payloads = share
        .all_gather(payload)
        .map_err(|reason| gather_error(path, reason))?;
    let mut per_process = Vec::with_capacity(payloads.len());
    for (process, payload) in payloads.iter().enumerate() {
        let received: Result<Vec<T>, String> = serde_json::from_slice(payload)
            .map_err(|e| gather_error(path, format!("a block summary that does not parse: {e}")))?;
        match received {
            Ok(summaries) => per_process.push(summaries.into_iter()),
            Err(message) => {
                let failed = Failed { process, message };
                return Err(failed.into_error(path, &**share, own_error));
            }
        }
    }
    // Block `b` is the `b / N`th summary of process `b % N`.
    let processes = per_process.len().max(1);
    (0..plan.len())
        .map(|block| {
            per_process
                .get_mut(block % processes)
                .and_then(Iterator::next)
                .ok_or_else(|| gather_error(path, format!("no summary of block {block}")))
        })
        .collect()
}

/// [`IoError::Gather`] for `path`.
fn gather_error(path: &Path, reason: String) -> IoError {
    IoError::Gather {
        path: path.to_path_buf(),
        reason,
    }
}

/// The payload that tells the other processes why this one could not read its block; the
/// error itself is kept in `own_error`, for this process to report.
fn error_payload(error: IoError, own_error: &mut Option<IoError>) -> Vec<u8> {
    let mut payload = vec![TAG_ERROR];
    payload.extend_from_slice(error.to_string().as_bytes());
    *own_error = Some(error);
    payload
}

/// A process that could not read its share, as its payload said.
struct Failed {
    process: usize,
    message: String,
}

impl Failed {
    /// The error to report: this process's own error if it is the one that failed, else
    /// [`IoError::PeerRead`] naming the other.
    fn into_error(self, path: &Path, share: &dyn AllGather, own: Option<IoError>) -> IoError {
        match own {
            Some(error) if self.process == share.process() => error,
            _ => IoError::PeerRead {
                path: path.to_path_buf(),
                process: self.process,
                message: self.message,
            },
        }
    }
}

/// A reader of selected rows, cut into blocks of given lengths (a reader's batches may
/// span two blocks).
struct BlockRows {
    reader: Box<dyn Iterator<Item = Result<RecordBatch, IoError>>>,
    /// Rows read but not yet handed out.
    pending: Option<RecordBatch>,
}

impl BlockRows {
    /// The rows `reader` serves, not yet cut.
    fn new(reader: impl Iterator<Item = Result<RecordBatch, IoError>> + 'static) -> Self {
        Self {
            reader: Box::new(reader),
            pending: None,
        }
    }

    /// The next `rows` rows, as slices of the reader's batches.
    fn take(&mut self, rows: u64) -> Result<Vec<RecordBatch>, IoError> {
        let mut left = rows as usize;
        let mut batches = Vec::new();
        while left > 0 {
            let batch = match self.pending.take() {
                Some(batch) => batch,
                None => match self.reader.next() {
                    Some(batch) => batch?,
                    None => break,
                },
            };
            if batch.num_rows() > left {
                self.pending = Some(batch.slice(left, batch.num_rows() - left));
                batches.push(batch.slice(0, left));
                left = 0;
            } else {
                left -= batch.num_rows();
                batches.push(batch);
            }
        }
        Ok(batches)
    }
}

/// A block's batches as a payload: the tag, then an Arrow IPC stream.
fn encode(batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let mut payload = vec![TAG_BLOCK];
    let Some(first) = batches.first() else {
        return Ok(payload);
    };
    let schema: SchemaRef = first.schema();
    let mut writer = StreamWriter::try_new(&mut payload, &schema).map_err(|e| e.to_string())?;
    for batch in batches {
        writer.write(batch).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    drop(writer);
    Ok(payload)
}

/// A payload as [`encode`] (or an error or empty round) made it.
fn decode(payload: &[u8]) -> Result<Parcel, String> {
    match payload.split_first() {
        Some((&TAG_BLOCK, [])) => Ok(Parcel::Block(Vec::new())),
        Some((&TAG_BLOCK, stream)) => {
            let reader = StreamReader::try_new(stream, None).map_err(|e| e.to_string())?;
            let batches = reader
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            Ok(Parcel::Block(batches))
        }
        Some((&TAG_NONE, _)) => Ok(Parcel::None),
        Some((&TAG_ERROR, message)) => {
            Ok(Parcel::Error(String::from_utf8_lossy(message).into_owned()))
        }
        _ => Err("a payload of an unknown kind (processes of different recsift versions?)".into()),
    }
}

/// An [`AllGather`] between threads of one process, for tests of shared reading.
#[cfg(test)]
pub(crate) mod local {
    use std::sync::{Arc, Barrier, Mutex};

    use super::{AllGather, ReadShare};

    /// One process's end of an exchange between `processes` threads.
    pub(crate) struct LocalGather {
        process: usize,
        slots: Arc<Mutex<Vec<Vec<u8>>>>,
        barrier: Arc<Barrier>,
    }

    /// The shares of `processes` processes, one per thread that reads.
    pub(crate) fn shares(processes: usize) -> Vec<ReadShare> {
        let slots = Arc::new(Mutex::new(vec![Vec::new(); processes]));
        let barrier = Arc::new(Barrier::new(processes));
        (0..processes)
            .map(|process| {
                Arc::new(LocalGather {
                    process,
                    slots: Arc::clone(&slots),
                    barrier: Arc::clone(&barrier),
                }) as ReadShare
            })
            .collect()
    }

    impl AllGather for LocalGather {
        fn process(&self) -> usize {
            self.process
        }

        fn processes(&self) -> usize {
            self.slots.lock().unwrap().len()
        }

        fn all_gather(&self, payload: Vec<u8>) -> Result<Vec<Vec<u8>>, String> {
            self.slots.lock().unwrap()[self.process] = payload;
            self.barrier.wait();
            let all = self.slots.lock().unwrap().clone();
            // Nobody writes the next round before everyone has read this one.
            self.barrier.wait();
            Ok(all)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which process reads each row of the file, by the selections of `BlockPlan::own_rows`.
    fn readers(group_rows: &[u64], block_rows: usize, processes: usize) -> Vec<Vec<usize>> {
        let total: u64 = group_rows.iter().sum();
        let mut readers = vec![Vec::new(); total as usize];
        for process in 0..processes {
            let plan = BlockPlan::new(group_rows, block_rows, process, processes);
            let (groups, selection) = plan.own_rows();
            // File rows of the groups read, in order.
            let mut rows = Vec::new();
            for &group in &groups {
                let start: u64 = group_rows[..group].iter().sum();
                rows.extend(start..start + group_rows[group]);
            }
            let mut at = 0;
            for selector in selection.iter() {
                if !selector.skip {
                    for &row in &rows[at..at + selector.row_count] {
                        readers[row as usize].push(process);
                    }
                }
                at += selector.row_count;
            }
            assert_eq!(at, rows.len(), "the selection covers the groups read");
        }
        readers
    }

    #[test]
    fn every_row_is_read_by_exactly_one_process_block_by_block() {
        for (group_rows, block_rows, processes) in [
            (vec![5, 3, 7], 2, 2),
            (vec![5, 3, 7], 2, 3),
            (vec![10], 4, 4),
            (vec![1, 1, 1, 1, 1], 3, 2),
            (vec![100, 64], 64, 5),
        ] {
            let plan = BlockPlan::new(&group_rows, block_rows, 0, processes);
            let readers = readers(&group_rows, block_rows, processes);
            for block in 0..plan.len() {
                let first = plan.first_row(block) as usize;
                let rows = first..first + plan.rows(block) as usize;
                for (row, readers) in readers[rows.clone()].iter().enumerate() {
                    let row = first + row;
                    assert_eq!(
                        *readers,
                        vec![block % processes],
                        "row {row} of {group_rows:?} in blocks of {block_rows}, {processes} processes"
                    );
                }
            }
            let covered: u64 = (0..plan.len()).map(|b| plan.rows(b)).sum();
            assert_eq!(covered, group_rows.iter().sum::<u64>());
        }
    }

    #[test]
    fn blocks_never_span_row_groups() {
        let plan = BlockPlan::new(&[5, 3, 7], 2, 0, 2);
        let blocks: Vec<(u64, u64)> = (0..plan.len())
            .map(|b| (plan.first_row(b), plan.rows(b)))
            .collect();
        assert_eq!(
            blocks,
            vec![
                (0, 2),
                (2, 2),
                (4, 1),
                (5, 2),
                (7, 1),
                (8, 2),
                (10, 2),
                (12, 2),
                (14, 1)
            ]
        );
        assert_eq!(plan.rounds(), 5);
        assert_eq!(BlockPlan::new(&[5, 3, 7], 2, 1, 2).own_block(4), None);
    }

    #[test]
    fn a_process_that_cannot_read_its_block_stops_every_process_with_its_reason() {
        use arrow::array::{ArrayRef, Int64Array};

        let path = Path::new("events.parquet");
        let handles: Vec<_> = local::shares(2)
            .into_iter()
            .enumerate()
            .map(|(process, share)| {
                std::thread::spawn(move || {
                    // Two blocks of two rows: process 0 reads its block, process 1 fails.
                    let plan = BlockPlan::new(&[4], 2, process, 2);
                    let own: Vec<Result<RecordBatch, IoError>> = if process == 0 {
                        let column = Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef;
                        vec![Ok(RecordBatch::try_from_iter([("a", column)]).unwrap())]
                    } else {
                        vec![Err(IoError::Read {
                            what: "events file",
                            path: path.to_path_buf(),
                            source: std::io::Error::other("disk gone"),
                        })]
                    };
                    let mut batches = SharedBatches::new(path, share, plan, own.into_iter());
                    let error = batches.next().unwrap().unwrap_err().to_string();
                    assert!(batches.next().is_none(), "the batches end after the error");
                    error
                })
            })
            .collect();
        let errors: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            errors[0],
            "process 1 of the cluster could not read its share of events.parquet: cannot read \
             events file events.parquet: disk gone"
        );
        assert_eq!(
            errors[1],
            "cannot read events file events.parquet: disk gone"
        );
    }
}
