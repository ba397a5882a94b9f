//! The item-embedding cache: text vectors kept in one Parquet file, keyed by (weights key,
//! SHA-256 of the text), so each text is embedded once per model, across runs and across
//! the windows of a replay. The weights key says which weights computed a vector: a model id
//! for its published weights, `<id>@<digest>` for a model folder of one's own (the run
//! decides it; this module only matches it).
//!
//! | column | type | holds |
//! |---|---|---|
//! | `model` | `Utf8` | the weights key, e.g. `sentence-transformers/all-MiniLM-L6-v2` |
//! | `text_hash` | `FixedSizeBinary(32)` | [`text_hash`] of the text: SHA-256 of its UTF-8 bytes |
//! | `dim` | `UInt32` | the vector's length |
//! | `vector` | `List<Float32>` | the vector, exactly as the encoder computed it |
//!
//! One file may hold the vectors of several models, of different dimensions (hence a
//! variable-length `List` rather than a `FixedSizeList`; Parquet stores both alike). A cache
//! opened for one model reads and serves that model's rows and writes every other model's
//! rows back unchanged when it saves. Files written by other tools are accepted with the
//! model as any string type, the dimension as any integer type and the vector as a `List`,
//! `LargeList` or `FixedSizeList` of `Float32` (never `Float64`: narrowing would not give
//! back the encoder's numbers).
//!
//! The text itself is not stored: a SHA-256 key identifies it (a collision is not a
//! practical concern), keeps the file small and keeps item text out of a file that may be
//! shared.
//!
//! ```
//! use recsift::io::embedding_cache::EmbeddingCache;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("embeddings.parquet");
//! let mut cache = EmbeddingCache::open(&path, "tiny-encoder", 2)?;
//! let texts = ["Toy Story (1995) | Animation", "Heat (1995) | Crime", "Toy Story (1995) | Animation"];
//! let todo = cache.missing(&texts);
//! assert_eq!(todo, ["Toy Story (1995) | Animation", "Heat (1995) | Crime"]);
//! for (k, text) in todo.iter().enumerate() {
//!     cache.insert(text, &[k as f32, 1.0])?; // what the encoder computed
//! }
//! cache.save()?;
//!
//! let again = EmbeddingCache::open(&path, "tiny-encoder", 2)?;
//! assert!(again.missing(&texts).is_empty());
//! assert_eq!(again.lookup("Heat (1995) | Crime"), Some(&[1.0, 1.0][..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeBinaryArray, Float32Array, ListArray, RecordBatch,
    StringArray, UInt32Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float32Type, Schema, SchemaRef};
use parquet::arrow::ProjectionMask;
use sha2::{Digest, Sha256};

use super::IoError;
use super::columns::{is_string, to_utf8};
use super::parquet_file::{ParquetSink, guard_decoding, open_parquet};

/// SHA-256 of a text's UTF-8 bytes: the cache key of the text.
pub type TextHash = [u8; 32];

/// The key of `text` in every embedding cache. The one place texts are hashed.
pub fn text_hash(text: &str) -> TextHash {
    Sha256::digest(text.as_bytes()).into()
}

/// What the file is called in messages.
const WHAT: &str = "embedding cache";
/// Column names, in file order.
const COLUMNS: [&str; 4] = ["model", "text_hash", "dim", "vector"];
/// Rows per record batch when saving.
const SAVE_BATCH_ROWS: usize = 65_536;

/// The vectors of one model.
#[derive(Clone, Debug)]
struct ModelRows {
    model: String,
    dim: usize,
    hashes: Vec<TextHash>,
    /// `dim` values per row, row after row.
    values: Vec<f32>,
}

impl ModelRows {
    fn new(model: &str, dim: usize) -> Self {
        Self {
            model: model.to_string(),
            dim,
            hashes: Vec::new(),
            values: Vec::new(),
        }
    }

    fn vector(&self, row: usize) -> &[f32] {
        &self.values[row * self.dim..(row + 1) * self.dim]
    }
}

/// How the cache has been used since it was opened (for logs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Vectors of this model read from the file.
    pub loaded: usize,
    /// Distinct texts asked for by [`EmbeddingCache::missing`] that were cached.
    pub hits: u64,
    /// Distinct texts asked for by [`EmbeddingCache::missing`] that were not.
    pub misses: u64,
    /// Vectors inserted (new texts or replaced vectors).
    pub inserted: usize,
}

/// The embeddings of one model, backed by a Parquet file (see the [module docs](self)).
#[derive(Debug)]
pub struct EmbeddingCache {
    path: PathBuf,
    /// Every model in the file, in the order first seen; `models[own]` is this cache's.
    models: Vec<ModelRows>,
    own: usize,
    /// Row of each text hash in `models[own]`.
    index: HashMap<TextHash, usize>,
    loaded: usize,
    inserted: usize,
    /// Whether there are inserts the file does not have yet.
    unsaved: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl EmbeddingCache {
    /// Opens the cache at `path` for `model_id`'s `dim`-dimensional vectors. A missing file
    /// is an empty cache. Rows of other models are kept for [`EmbeddingCache::save`].
    ///
    /// Fails if the file holds `model_id` vectors of another dimension (the model's
    /// configuration changed: its old vectors are no use), or if it is not a readable cache.
    pub fn open(path: &Path, model_id: &str, dim: usize) -> Result<Self, IoError> {
        if dim == 0 {
            return Err(IoError::InvalidRecords {
                path: path.to_path_buf(),
                reason: format!("model {model_id} was given 0-dimensional vectors"),
            });
        }
        let models = read_models(path)?.unwrap_or_default();
        Self::with_models(path, models, model_id, dim)
    }

    /// Opens the cache at `path` with the dimension it already records for `model_id`, so
    /// a run whose texts are all cached need not load the model to learn it; `None` when
    /// the file does not exist or holds no vectors of that model (then [`open`] it with the
    /// encoder's dimension).
    ///
    /// [`open`]: EmbeddingCache::open
    pub fn open_recorded(path: &Path, model_id: &str) -> Result<Option<Self>, IoError> {
        let models = read_models(path)?.unwrap_or_default();
        match models.iter().find(|m| m.model == model_id).map(|m| m.dim) {
            Some(dim) => Self::with_models(path, models, model_id, dim).map(Some),
            None => Ok(None),
        }
    }

    /// The cache over `models` (read from `path`) for `model_id` at `dim`.
    fn with_models(
        path: &Path,
        mut models: Vec<ModelRows>,
        model_id: &str,
        dim: usize,
    ) -> Result<Self, IoError> {
        let own = match models.iter().position(|m| m.model == model_id) {
            Some(own) => {
                let found = models[own].dim;
                if found != dim {
                    return Err(IoError::EmbeddingDimMismatch {
                        path: path.to_path_buf(),
                        model: model_id.to_string(),
                        found,
                        asked: dim,
                    });
                }
                own
            }
            None => {
                models.push(ModelRows::new(model_id, dim));
                models.len() - 1
            }
        };
        let index: HashMap<TextHash, usize> = models[own]
            .hashes
            .iter()
            .enumerate()
            .map(|(row, hash)| (*hash, row))
            .collect();
        let loaded = models[own].hashes.len();
        Ok(Self {
            path: path.to_path_buf(),
            models,
            own,
            index,
            loaded,
            inserted: 0,
            unsaved: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// The file backing the cache.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model whose vectors this cache serves.
    pub fn model_id(&self) -> &str {
        &self.models[self.own].model
    }

    /// The length of its vectors.
    pub fn dim(&self) -> usize {
        self.models[self.own].dim
    }

    /// Vectors of this model held (loaded and inserted).
    pub fn len(&self) -> usize {
        self.models[self.own].hashes.len()
    }

    /// Whether no vector of this model is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached vector of `text`, if any.
    pub fn lookup(&self, text: &str) -> Option<&[f32]> {
        self.index
            .get(&text_hash(text))
            .map(|&row| self.models[self.own].vector(row))
    }

    /// The texts of `texts` that have no vector yet, each once, in order of first
    /// appearance: what the encoder must embed. Counts each distinct text as a hit or a
    /// miss in [`EmbeddingCache::stats`].
    pub fn missing<'a>(&self, texts: &[&'a str]) -> Vec<&'a str> {
        let mut seen: HashSet<&str> = HashSet::with_capacity(texts.len());
        let mut missing = Vec::new();
        let (mut hits, mut misses) = (0u64, 0u64);
        for &text in texts {
            if !seen.insert(text) {
                continue;
            }
            if self.index.contains_key(&text_hash(text)) {
                hits += 1;
            } else {
                misses += 1;
                missing.push(text);
            }
        }
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses.fetch_add(misses, Ordering::Relaxed);
        missing
    }

    /// Stores `vector` as the embedding of `text` (replacing any vector it had). Its length
    /// must be the cache's dimension: anything else is a bug in the caller, reported as
    /// [`IoError::InvalidRecords`].
    pub fn insert(&mut self, text: &str, vector: &[f32]) -> Result<(), IoError> {
        let rows = &mut self.models[self.own];
        if vector.len() != rows.dim {
            return Err(IoError::InvalidRecords {
                path: self.path.clone(),
                reason: format!(
                    "a {}-value vector was inserted into a cache of {}-d vectors of model {}",
                    vector.len(),
                    rows.dim,
                    rows.model
                ),
            });
        }
        let hash = text_hash(text);
        match self.index.get(&hash) {
            Some(&row) => {
                let dim = rows.dim;
                let slot = &mut rows.values[row * dim..(row + 1) * dim];
                if slot
                    .iter()
                    .zip(vector)
                    .any(|(a, b)| a.to_bits() != b.to_bits())
                {
                    slot.copy_from_slice(vector);
                    self.unsaved.store(true, Ordering::Relaxed);
                    self.inserted += 1;
                }
            }
            None => {
                self.index.insert(hash, rows.hashes.len());
                rows.hashes.push(hash);
                rows.values.extend_from_slice(vector);
                self.unsaved.store(true, Ordering::Relaxed);
                self.inserted += 1;
            }
        }
        Ok(())
    }

    /// Hits, misses and counts so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            loaded: self.loaded,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            inserted: self.inserted,
        }
    }

    /// Writes the file (every model's rows) atomically: a reader sees the old file or the
    /// new one. Does nothing when nothing was inserted since opening or the last save.
    /// Creates the file's folder if needed.
    pub fn save(&self) -> Result<(), IoError> {
        if !self.unsaved.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| IoError::Write {
                path: self.path.clone(),
                source,
            })?;
        }
        let schema = cache_schema();
        let mut sink = ParquetSink::create(&self.path, Arc::clone(&schema))?;
        for rows in &self.models {
            for start in (0..rows.hashes.len()).step_by(SAVE_BATCH_ROWS) {
                let end = (start + SAVE_BATCH_ROWS).min(rows.hashes.len());
                let batch =
                    rows_batch(&schema, rows, start..end).map_err(|source| IoError::Arrow {
                        path: self.path.clone(),
                        source,
                    })?;
                sink.write(&batch)?;
            }
        }
        sink.finish()?;
        self.unsaved.store(false, Ordering::Relaxed);
        Ok(())
    }
}

/// The schema of files the cache writes.
fn cache_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(COLUMNS[0], DataType::Utf8, false),
        Field::new(COLUMNS[1], DataType::FixedSizeBinary(32), false),
        Field::new(COLUMNS[2], DataType::UInt32, false),
        Field::new(
            COLUMNS[3],
            DataType::List(Arc::new(Field::new_list_field(DataType::Float32, false))),
            false,
        ),
    ]))
}

/// Rows `range` of one model as a record batch.
fn rows_batch(
    schema: &SchemaRef,
    rows: &ModelRows,
    range: std::ops::Range<usize>,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = range.len();
    let model = StringArray::from_iter_values(std::iter::repeat_n(rows.model.as_str(), n));
    let hashes = FixedSizeBinaryArray::try_from_iter(rows.hashes[range.clone()].iter())?;
    let dims = UInt32Array::from_iter_values(std::iter::repeat_n(rows.dim as u32, n));
    let values =
        Float32Array::from(rows.values[range.start * rows.dim..range.end * rows.dim].to_vec());
    let vectors = ListArray::try_new(
        Arc::new(Field::new_list_field(DataType::Float32, false)),
        OffsetBuffer::from_lengths(std::iter::repeat_n(rows.dim, n)),
        Arc::new(values),
        None,
    )?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(model),
        Arc::new(hashes),
        Arc::new(dims),
        Arc::new(vectors),
    ];
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// Every model's rows in the file at `path`; `None` if there is no file.
fn read_models(path: &Path) -> Result<Option<Vec<ModelRows>>, IoError> {
    guard_decoding(path, || read_models_unguarded(path))
}

fn read_models_unguarded(path: &Path) -> Result<Option<Vec<ModelRows>>, IoError> {
    let bad = |problem: String| IoError::BadEmbeddingCache {
        path: path.to_path_buf(),
        problem,
    };
    let builder = match open_parquet(path, WHAT) {
        Ok(builder) => builder,
        Err(IoError::FileNotFound { .. }) => return Ok(None),
        Err(IoError::NotParquet { source, .. }) => {
            return Err(bad(format!("it is not a readable Parquet file ({source})")));
        }
        Err(e) => return Err(e),
    };
    let schema = Arc::clone(builder.schema());
    let mut indices = [0usize; 4];
    for (k, name) in COLUMNS.iter().enumerate() {
        indices[k] = schema.index_of(name).map_err(|_| {
            let present: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            bad(format!(
                "it has no column `{name}` (columns: {}), so it is not an embedding cache",
                present.join(", ")
            ))
        })?;
    }
    let types: Vec<&DataType> = indices
        .iter()
        .map(|&i| schema.field(i).data_type())
        .collect();
    let vector_ok = match types[3] {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            f.data_type() == &DataType::Float32
        }
        _ => false,
    };
    let checks = [
        (is_string(types[0]), "a string"),
        (
            types[1] == &DataType::FixedSizeBinary(32),
            "FixedSizeBinary(32)",
        ),
        (types[2].is_integer(), "an integer"),
        (vector_ok, "a list of Float32"),
    ];
    for (k, (ok, expected)) in checks.iter().enumerate() {
        if !ok {
            return Err(bad(format!(
                "column `{}` has type {}, not {expected}",
                COLUMNS[k], types[k]
            )));
        }
    }

    let mut selected = indices.to_vec();
    selected.sort_unstable();
    let positions = indices.map(|i| selected.iter().filter(|&&s| s < i).count());
    let mask = ProjectionMask::roots(builder.parquet_schema(), selected);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|source| bad(format!("it is not a readable Parquet file ({source})")))?;

    let mut models: Vec<ModelRows> = Vec::new();
    let mut by_name: HashMap<String, (usize, HashSet<TextHash>)> = HashMap::new();
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|source| bad(format!("decoding failed ({source})")))?;
        let column = |k: usize| batch.column(positions[k]);
        for (k, name) in COLUMNS.iter().enumerate() {
            let array = column(k);
            if array.null_count() > 0 {
                let at = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0);
                return Err(bad(format!(
                    "column `{name}` is null at row {} (counting from 0)",
                    row + at as u64
                )));
            }
        }
        let names = to_utf8(column(0)).map_err(|source| bad(format!("{source}")))?;
        let hashes = column(1).as_fixed_size_binary();
        let dims = cast(column(2), &DataType::UInt64).map_err(|source| bad(format!("{source}")))?;
        let dims = dims.as_primitive::<arrow::datatypes::UInt64Type>();
        let vectors = VectorColumn::new(column(3));
        if vectors.has_null_values() {
            return Err(bad(format!(
                "column `vector` holds a null value in rows {row} to {} (counting from 0)",
                row + batch.num_rows() as u64 - 1
            )));
        }
        for i in 0..batch.num_rows() {
            let at = row + i as u64;
            if dims.is_null(i) {
                return Err(bad(format!(
                    "column `dim` is negative at row {at} (counting from 0)"
                )));
            }
            let name = names.value(i);
            let dim = dims.value(i) as usize;
            let values = vectors.row(i);
            if values.len() != dim || dim == 0 {
                return Err(bad(format!(
                    "row {at} (counting from 0) of model {name} has {} values but `dim` {dim}",
                    values.len()
                )));
            }
            let (slot, hashes_seen) = match by_name.get_mut(name) {
                Some(entry) => (entry.0, &mut entry.1),
                None => {
                    models.push(ModelRows::new(name, dim));
                    let entry = by_name
                        .entry(name.to_string())
                        .or_insert((models.len() - 1, HashSet::new()));
                    (entry.0, &mut entry.1)
                }
            };
            let rows = &mut models[slot];
            if rows.dim != dim {
                return Err(bad(format!(
                    "model {name} has {}-d vectors and, at row {at} (counting from 0), a {dim}-d one",
                    rows.dim
                )));
            }
            let hash: TextHash = hashes.value(i).try_into().map_err(|_| {
                bad(format!(
                    "row {at} (counting from 0) has a text hash of the wrong length"
                ))
            })?;
            if !hashes_seen.insert(hash) {
                return Err(bad(format!(
                    "row {at} (counting from 0) repeats a text of model {name}"
                )));
            }
            rows.hashes.push(hash);
            rows.values.extend(values.iter());
        }
        row += batch.num_rows() as u64;
    }
    Ok(Some(models))
}

/// A `vector` column of any accepted list type, row by row.
enum VectorColumn<'a> {
    List(&'a arrow::array::GenericListArray<i32>),
    LargeList(&'a arrow::array::GenericListArray<i64>),
    FixedSize(&'a arrow::array::FixedSizeListArray),
}

/// One row's values, borrowed from the column's value buffer.
struct VectorRow<'a> {
    values: &'a Float32Array,
    start: usize,
    len: usize,
}

impl VectorRow<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn iter(&self) -> impl Iterator<Item = f32> + '_ {
        self.values.values()[self.start..self.start + self.len]
            .iter()
            .copied()
    }
}

impl<'a> VectorColumn<'a> {
    fn new(array: &'a ArrayRef) -> Self {
        match array.data_type() {
            DataType::LargeList(_) => Self::LargeList(array.as_list::<i64>()),
            DataType::FixedSizeList(_, _) => Self::FixedSize(array.as_fixed_size_list()),
            _ => Self::List(array.as_list::<i32>()),
        }
    }

    fn has_null_values(&self) -> bool {
        let values = match self {
            Self::List(a) => a.values(),
            Self::LargeList(a) => a.values(),
            Self::FixedSize(a) => a.values(),
        };
        values.null_count() > 0
    }

    fn row(&self, i: usize) -> VectorRow<'a> {
        let (values, start, end) = match self {
            Self::List(a) => {
                let offsets = a.value_offsets();
                (a.values(), offsets[i] as usize, offsets[i + 1] as usize)
            }
            Self::LargeList(a) => {
                let offsets = a.value_offsets();
                (a.values(), offsets[i] as usize, offsets[i + 1] as usize)
            }
            Self::FixedSize(a) => {
                let start = a.value_offset_at(i);
                (a.values(), start, start + a.value_length() as usize)
            }
        };
        VectorRow {
            values: values.as_primitive::<Float32Type>(),
            start,
            len: end - start,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use arrow::array::{FixedSizeListArray, Int64Array};

    use super::*;
    use crate::error::UserFixable;
    use crate::io::parquet_file::{read_parquet, write_parquet_atomic};

    /// A deterministic vector for a text, different for every text: what a fake encoder
    /// computes. Values in [-0.5, 0.5), all mantissa bits used.
    fn embed(text: &str, dim: usize) -> Vec<f32> {
        let hash = text_hash(text);
        (0..dim)
            .map(|k| {
                let bytes = [
                    hash[k % 32],
                    hash[(k + 7) % 32],
                    0x80 | hash[(k + 13) % 32],
                    0x3f,
                ];
                f32::from_bits(u32::from_le_bytes(bytes)) - 1.5
            })
            .collect()
    }

    #[test]
    fn fake_vectors_differ() {
        assert_ne!(embed("a", 4), embed("b", 4));
        assert!(embed("a", 4).iter().all(|x| (-0.5..0.5).contains(x)));
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn text_hash_is_sha256_of_the_utf8_bytes() {
        // FIPS 180-2 test vector for "abc", and the empty string's digest.
        let hex = |h: TextHash| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(text_hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(text_hash("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(text_hash("Amélie (2001)"), text_hash("Amelie (2001)"));
    }

    #[test]
    fn a_missing_file_is_an_empty_cache_and_vectors_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cache.parquet");
        let mut cache = EmbeddingCache::open(&path, "m", 5).unwrap();
        assert!(cache.is_empty());
        assert_eq!(
            (cache.model_id(), cache.dim(), cache.path()),
            ("m", 5, path.as_path())
        );
        let texts = ["b", "a", "b", "c", "a"];
        let todo = cache.missing(&texts);
        assert_eq!(todo, ["b", "a", "c"]);
        // Awkward floats survive: subnormals, negative zero, extremes.
        let special = [f32::MIN_POSITIVE / 3.0, -0.0, f32::MAX, f32::MIN, 1.0e-38];
        cache.insert("b", &special).unwrap();
        cache.insert("a", &embed("a", 5)).unwrap();
        cache.insert("c", &embed("c", 5)).unwrap();
        cache.save().unwrap();

        let again = EmbeddingCache::open(&path, "m", 5).unwrap();
        assert_eq!(again.len(), 3);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(again.lookup("b").unwrap()), bits(&special));
        assert_eq!(again.lookup("a").unwrap(), embed("a", 5).as_slice());
        assert_eq!(again.lookup("d"), None);
        assert!(again.missing(&texts).is_empty());
        assert_eq!(again.missing(&["d", "a", "d"]), ["d"]);
        assert_eq!(
            again.stats(),
            CacheStats {
                loaded: 3,
                hits: 4,
                misses: 1,
                inserted: 0
            }
        );
        assert_eq!(
            cache.stats(),
            CacheStats {
                loaded: 0,
                hits: 0,
                misses: 3,
                inserted: 3
            }
        );
    }

    #[test]
    fn the_file_has_the_documented_schema_and_one_row_per_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.parquet");
        let mut cache = EmbeddingCache::open(&path, "mini", 3).unwrap();
        for text in ["x", "y"] {
            cache.insert(text, &embed(text, 3)).unwrap();
        }
        cache.save().unwrap();
        let batches = read_parquet(&path).unwrap();
        assert_eq!(batches[0].schema(), cache_schema());
        let batch = &batches[0];
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(0).as_string::<i32>().value(1), "mini");
        assert_eq!(
            batch.column(1).as_fixed_size_binary().value(0),
            text_hash("x")
        );
        assert_eq!(
            batch
                .column(2)
                .as_primitive::<arrow::datatypes::UInt32Type>()
                .value(0),
            3
        );
        let vector = batch.column(3).as_list::<i32>().value(1);
        assert_eq!(
            vector.as_primitive::<Float32Type>().values().as_ref(),
            embed("y", 3)
        );
    }

    #[test]
    fn other_models_rows_are_kept_on_save() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.parquet");
        let mut big = EmbeddingCache::open(&path, "big", 384).unwrap();
        big.insert("t1", &embed("t1", 384)).unwrap();
        big.insert("t2", &embed("t2", 384)).unwrap();
        big.save().unwrap();

        let mut small = EmbeddingCache::open(&path, "small", 8).unwrap();
        assert!(small.is_empty());
        assert_eq!(small.missing(&["t1"]), ["t1"]);
        small.insert("t1", &embed("t1", 8)).unwrap();
        small.save().unwrap();

        let big = EmbeddingCache::open(&path, "big", 384).unwrap();
        assert_eq!(big.len(), 2);
        assert_eq!(big.lookup("t2").unwrap(), embed("t2", 384).as_slice());
        let small = EmbeddingCache::open(&path, "small", 8).unwrap();
        assert_eq!(small.lookup("t1").unwrap(), embed("t1", 8).as_slice());
        let rows: usize = read_parquet(&path)
            .unwrap()
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        assert_eq!(rows, 3);
    }

    #[test]
    fn another_dimension_for_the_same_model_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.parquet");
        let mut cache = EmbeddingCache::open(&path, "M", 384).unwrap();
        cache.insert("t", &embed("t", 384)).unwrap();
        cache.save().unwrap();
        let err = EmbeddingCache::open(&path, "M", 256).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cache {} holds 384-d vectors of model M but 256 were asked: delete the file or \
                 point `cache:` elsewhere",
                path.display()
            )
        );
        assert!(err.is_user_error());
        // Another model may use any dimension.
        assert!(EmbeddingCache::open(&path, "N", 256).is_ok());
    }

    #[test]
    fn a_vector_of_the_wrong_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.parquet");
        let mut cache = EmbeddingCache::open(&path, "M", 4).unwrap();
        let err = cache.insert("t", &[1.0, 2.0]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot write {}: a 2-value vector was inserted into a cache of 4-d vectors of \
                 model M",
                path.display()
            )
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn damaged_files_are_errors_that_say_to_delete_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.parquet");
        let message = |problem: &str| {
            format!(
                "embedding cache {} is unusable: {problem}; delete the file (its vectors will be \
                 computed again) or point `cache:` elsewhere",
                path.display()
            )
        };

        // Not Parquet at all.
        std::fs::write(&path, b"not a parquet file").unwrap();
        let err = EmbeddingCache::open(&path, "M", 4).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "embedding cache {} is unusable: it is not a readable Parquet file (",
                path.display()
            )),
            "{err}"
        );

        // A truncated cache.
        let mut cache = EmbeddingCache::open(&dir.path().join("good.parquet"), "M", 4).unwrap();
        for k in 0..100 {
            let text = format!("text {k}");
            cache.insert(&text, &embed(&text, 4)).unwrap();
        }
        cache.save().unwrap();
        let bytes = std::fs::read(dir.path().join("good.parquet")).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = EmbeddingCache::open(&path, "M", 4).unwrap_err().to_string();
        assert!(
            err.contains("is unusable: it is not a readable Parquet file ("),
            "{err}"
        );

        // Some other Parquet file.
        let batch = RecordBatch::try_from_iter([(
            "user_id",
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
        )])
        .unwrap();
        write_parquet_atomic(&path, &batch).unwrap();
        let err = EmbeddingCache::open(&path, "M", 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            message("it has no column `model` (columns: user_id), so it is not an embedding cache")
        );

        // A row whose vector does not have `dim` values.
        let batch = RecordBatch::try_new(
            cache_schema(),
            vec![
                Arc::new(StringArray::from(vec!["M", "M"])),
                Arc::new(
                    FixedSizeBinaryArray::try_from_iter([text_hash("a"), text_hash("b")].iter())
                        .unwrap(),
                ),
                Arc::new(UInt32Array::from(vec![2, 2])),
                Arc::new(ListArray::new(
                    Arc::new(Field::new_list_field(DataType::Float32, false)),
                    OffsetBuffer::from_lengths([2, 3]),
                    Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0])),
                    None,
                )),
            ],
        )
        .unwrap();
        write_parquet_atomic(&path, &batch).unwrap();
        let err = EmbeddingCache::open(&path, "other", 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            message("row 1 (counting from 0) of model M has 3 values but `dim` 2")
        );

        // The same text twice for one model.
        let batch = RecordBatch::try_new(
            cache_schema(),
            vec![
                Arc::new(StringArray::from(vec!["M", "M"])),
                Arc::new(
                    FixedSizeBinaryArray::try_from_iter([text_hash("a"), text_hash("a")].iter())
                        .unwrap(),
                ),
                Arc::new(UInt32Array::from(vec![1, 1])),
                Arc::new(ListArray::new(
                    Arc::new(Field::new_list_field(DataType::Float32, false)),
                    OffsetBuffer::from_lengths([1, 1]),
                    Arc::new(Float32Array::from(vec![1.0, 2.0])),
                    None,
                )),
            ],
        )
        .unwrap();
        write_parquet_atomic(&path, &batch).unwrap();
        let err = EmbeddingCache::open(&path, "M", 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            message("row 1 (counting from 0) repeats a text of model M")
        );
    }

    #[test]
    fn a_fixed_size_list_file_from_another_tool_is_read() {
        // E.g. pyarrow's `pa.list_(pa.float32(), 3)` with a dictionary-encoded model column.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.parquet");
        let model: arrow::array::DictionaryArray<arrow::datatypes::Int32Type> =
            vec!["M", "M"].into_iter().collect();
        let vectors = FixedSizeListArray::new(
            Arc::new(Field::new_list_field(DataType::Float32, true)),
            3,
            Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
            None,
        );
        let batch = RecordBatch::try_from_iter([
            ("model", Arc::new(model) as ArrayRef),
            (
                "text_hash",
                Arc::new(
                    FixedSizeBinaryArray::try_from_iter([text_hash("a"), text_hash("b")].iter())
                        .unwrap(),
                ) as ArrayRef,
            ),
            ("dim", Arc::new(Int64Array::from(vec![3, 3])) as ArrayRef),
            ("vector", Arc::new(vectors) as ArrayRef),
        ])
        .unwrap();
        write_parquet_atomic(&path, &batch).unwrap();
        let mut cache = EmbeddingCache::open(&path, "M", 3).unwrap();
        assert_eq!(cache.lookup("b").unwrap(), [4.0, 5.0, 6.0]);
        cache.insert("c", &[7.0, 8.0, 9.0]).unwrap();
        cache.save().unwrap();
        // Rewritten in the cache's own schema.
        assert_eq!(read_parquet(&path).unwrap()[0].schema(), cache_schema());
        let again = EmbeddingCache::open(&path, "M", 3).unwrap();
        assert_eq!(again.lookup("a").unwrap(), [1.0, 2.0, 3.0]);
        assert_eq!(again.len(), 3);
    }

    #[test]
    fn saving_is_atomic_and_a_no_op_without_news() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.parquet");
        let mut cache = EmbeddingCache::open(&path, "M", 2).unwrap();
        cache.save().unwrap();
        assert!(!path.exists(), "nothing to save: no file is written");
        cache.insert("a", &[1.0, 2.0]).unwrap();
        cache.save().unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        cache.save().unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().ino(),
            inode,
            "not rewritten"
        );
        // The same vector again is no news either; a different one is.
        cache.insert("a", &[1.0, 2.0]).unwrap();
        cache.save().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
        cache.insert("a", &[1.0, 3.0]).unwrap();
        cache.save().unwrap();
        assert_ne!(
            std::fs::metadata(&path).unwrap().ino(),
            inode,
            "replaced by a rename"
        );
        assert_eq!(
            names_in(dir.path()),
            ["cache.parquet"],
            "no temporary file left"
        );
        let reopened = EmbeddingCache::open(&path, "M", 2).unwrap();
        assert_eq!(reopened.lookup("a").unwrap(), [1.0, 3.0]);

        // A save that cannot complete leaves no temporary file behind, and the cache keeps
        // its news for a later save.
        let blocked = dir.path().join("blocked.parquet");
        let mut cache = EmbeddingCache::open(&blocked, "M", 2).unwrap();
        cache.insert("a", &[1.0, 2.0]).unwrap();
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"x").unwrap();
        let err = cache.save().unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot write {}: ", blocked.display())),
            "{err}"
        );
        assert_eq!(names_in(dir.path()), ["blocked.parquet", "cache.parquet"]);
        std::fs::remove_dir_all(&blocked).unwrap();
        cache.save().unwrap();
        assert_eq!(EmbeddingCache::open(&blocked, "M", 2).unwrap().len(), 1);
    }

    #[test]
    fn a_replay_embeds_only_new_texts() {
        // Windows of a replay share most texts: across windows and runs, each text is
        // missing exactly once.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.parquet");
        let windows: Vec<Vec<String>> = (0..5)
            .map(|w| (w * 10..w * 10 + 30).map(|k| format!("item {k}")).collect())
            .collect();
        let mut embedded = 0;
        for run in 0..2 {
            for window in &windows {
                let mut cache = EmbeddingCache::open(&path, "M", 4).unwrap();
                let texts: Vec<&str> = window.iter().map(String::as_str).collect();
                let todo = cache.missing(&texts);
                embedded += todo.len();
                for text in todo {
                    cache.insert(text, &embed(text, 4)).unwrap();
                }
                cache.save().unwrap();
                for text in &texts {
                    assert_eq!(cache.lookup(text).unwrap(), embed(text, 4).as_slice());
                }
            }
            assert_eq!(embedded, 70, "run {run}: 70 distinct texts in all");
        }
    }
}
