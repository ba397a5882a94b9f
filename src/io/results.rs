//! An experiment's output directory: JSON documents, rounds and selections as Parquet, and
//! opaque bytes (plots, HTML).
//!
//! [`OutputDir::prepare`] refuses a directory that already holds files unless forced, and
//! when forced removes a stale [`SUMMARY_FILE`] first: the driver writes the summary last,
//! so its presence means "this run completed", and an interrupted re-run must not look
//! complete. Nothing else is ever deleted; files are replaced one by one, each atomically.
//!
//! `rounds.parquet` has the columns `round: UInt32, labelled: UInt64, selected: UInt64,
//! rescored: UInt64`, then one `Float64` column per metric (named as the metric, e.g.
//! `ndcg@10`) and one `Float64` column `<stage>_ms` per timed stage. `selections.parquet` has
//! `round: UInt32, sample: UInt32, user_id, item_id, score: Float64`, where an id column is
//! `Int64` when every id in it is an integer and `Utf8` otherwise.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Array, Float64Array, Float64Builder, Int64Array, RecordBatch, StringArray,
    UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use serde::Serialize;

use super::IoError;
use super::atomic::{is_temporary_name, write_bytes_atomic};
use super::parquet_file::write_parquet_atomic;
use crate::data::RawId;
use crate::results::{Recommendation, RoundRecord, SelectionRecord};

/// Written last by the driver; its presence marks a completed run.
pub const SUMMARY_FILE: &str = "summary.json";

/// A prepared output directory.
#[derive(Clone, Debug)]
pub struct OutputDir {
    path: PathBuf,
}

impl OutputDir {
    /// Creates `path` if missing. An existing directory must be empty unless `force`; with
    /// `force`, a previous run's [`SUMMARY_FILE`] is removed first.
    pub fn prepare(path: &Path, force: bool) -> Result<OutputDir, IoError> {
        let write_error = |source| IoError::Write {
            path: path.to_path_buf(),
            source,
        };
        if path.exists() {
            if !path.is_dir() {
                return Err(IoError::OutputNotDir {
                    path: path.to_path_buf(),
                });
            }
            let mut entries = fs::read_dir(path).map_err(write_error)?;
            if entries.next().is_some() {
                if !force {
                    return Err(IoError::OutputNotEmpty {
                        dir: path.to_path_buf(),
                    });
                }
                let summary = path.join(SUMMARY_FILE);
                match fs::remove_file(&summary) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(IoError::Write {
                            path: summary,
                            source,
                        });
                    }
                }
            }
        } else {
            fs::create_dir_all(path).map_err(write_error)?;
        }
        Ok(OutputDir {
            path: path.to_path_buf(),
        })
    }

    /// The files of folder `path`, split into those an interrupted atomic write left behind
    /// (their temporary files) and the others; none when the folder does not exist.
    pub fn files(path: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), IoError> {
        let unreadable = |source| IoError::Read {
            what: "results folder",
            path: path.to_path_buf(),
            source,
        };
        let entries = match fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Vec::new(), Vec::new()));
            }
            Err(source) => return Err(unreadable(source)),
        };
        let (mut temporary, mut others) = (Vec::new(), Vec::new());
        for entry in entries {
            let entry = entry.map_err(unreadable)?;
            if is_temporary_name(&entry.file_name().to_string_lossy()) {
                temporary.push(entry.path());
            } else {
                others.push(entry.path());
            }
        }
        temporary.sort();
        others.sort();
        Ok((temporary, others))
    }

    /// Removes a file of this folder (it is gone either way afterwards).
    pub fn remove_file(&self, path: &Path) -> Result<(), IoError> {
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(IoError::Write {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a file called `name` goes. `name` must be a plain file name (no folders).
    fn file(&self, name: &str) -> Result<PathBuf, IoError> {
        let plain = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\']);
        if plain {
            Ok(self.path.join(name))
        } else {
            Err(IoError::InvalidRecords {
                path: self.path.join(name),
                reason: format!("`{name}` is not a plain file name inside the output directory"),
            })
        }
    }

    /// Writes `value` as pretty-printed JSON; returns the file's path.
    pub fn write_json<T: Serialize + ?Sized>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<PathBuf, IoError> {
        let path = self.file(name)?;
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| IoError::Json {
            path: path.clone(),
            source,
        })?;
        bytes.push(b'\n');
        write_bytes_atomic(&path, &bytes)?;
        Ok(path)
    }

    /// Writes the rounds table (see the [module docs](self)); returns the file's path.
    pub fn write_rounds(&self, name: &str, rounds: &[RoundRecord]) -> Result<PathBuf, IoError> {
        let path = self.file(name)?;
        let batch = rounds_batch(rounds).map_err(|reason| IoError::InvalidRecords {
            path: path.clone(),
            reason,
        })?;
        write_parquet_atomic(&path, &batch)?;
        Ok(path)
    }

    /// Writes the selections table (see the [module docs](self)); returns the file's path.
    pub fn write_selections(
        &self,
        name: &str,
        selections: &[SelectionRecord],
    ) -> Result<PathBuf, IoError> {
        let path = self.file(name)?;
        let batch = selections_batch(selections).map_err(|source| IoError::Arrow {
            path: path.clone(),
            source,
        })?;
        write_parquet_atomic(&path, &batch)?;
        Ok(path)
    }

    /// Writes `recommendations` as a Parquet table (round, user_id, rank, item_id, score;
    /// ids in their source type); returns the file's path.
    pub fn write_recommendations(
        &self,
        name: &str,
        recommendations: &[Recommendation],
    ) -> Result<PathBuf, IoError> {
        let path = self.file(name)?;
        let batch = recommendations_batch(recommendations).map_err(|source| IoError::Arrow {
            path: path.clone(),
            source,
        })?;
        write_parquet_atomic(&path, &batch)?;
        Ok(path)
    }

    /// Writes the rounds of several runs as one table: `arm` and `seed` columns, then the
    /// columns of `rounds.parquet`; returns the file's path.
    pub fn write_study_rounds(
        &self,
        name: &str,
        runs: &[(String, u64, &[RoundRecord])],
    ) -> Result<PathBuf, IoError> {
        let rounds: Vec<RoundRecord> = runs.iter().flat_map(|(_, _, r)| r.to_vec()).collect();
        let path = self.file(name)?;
        let invalid = |reason: String| IoError::InvalidRecords {
            path: path.clone(),
            reason,
        };
        let batch = rounds_batch(&rounds).map_err(invalid)?;
        let arms = runs
            .iter()
            .flat_map(|(arm, _, r)| std::iter::repeat_n(arm.as_str(), r.len()));
        let seeds = runs
            .iter()
            .flat_map(|(_, seed, r)| std::iter::repeat_n(*seed, r.len()));
        let mut columns: Vec<(&str, ArrayRef)> = vec![
            ("arm", Arc::new(StringArray::from_iter_values(arms))),
            ("seed", Arc::new(UInt64Array::from_iter_values(seeds))),
        ];
        let schema = batch.schema();
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            columns.push((field.name().as_str(), column.clone()));
        }
        let batch = RecordBatch::try_from_iter(columns).map_err(|e| invalid(e.to_string()))?;
        write_parquet_atomic(&path, &batch)?;
        Ok(path)
    }

    /// Writes named columns of equal length as a Parquet table; returns the file's path.
    pub fn write_table(
        &self,
        name: &str,
        columns: Vec<(&str, ArrayRef)>,
    ) -> Result<PathBuf, IoError> {
        let path = self.file(name)?;
        let batch = RecordBatch::try_from_iter(columns).map_err(|source| IoError::Arrow {
            path: path.clone(),
            source,
        })?;
        write_parquet_atomic(&path, &batch)?;
        Ok(path)
    }

    /// Writes raw bytes (an SVG, a PNG, an HTML report); returns the file's path.
    pub fn write_bytes(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, IoError> {
        let path = self.file(name)?;
        write_bytes_atomic(&path, bytes)?;
        Ok(path)
    }
}

/// Names in order of first appearance across `lists`.
fn names_in_order<'a>(lists: impl Iterator<Item = &'a [(String, f64)]>) -> Vec<&'a str> {
    let mut names: Vec<&str> = Vec::new();
    for list in lists {
        for (name, _) in list {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    names
}

/// One nullable `Float64` column: `value(record)` for every record (null where a record
/// lacks the name).
fn value_column<'a>(
    rounds: &'a [RoundRecord],
    name: &str,
    list: impl Fn(&'a RoundRecord) -> &'a [(String, f64)],
) -> ArrayRef {
    let mut column = Float64Builder::with_capacity(rounds.len());
    for round in rounds {
        column.append_option(
            list(round)
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v),
        );
    }
    Arc::new(column.finish())
}

/// The rounds table; an error (a caller's bug) if two columns would share a name.
fn rounds_batch(rounds: &[RoundRecord]) -> Result<RecordBatch, String> {
    let mut fields = vec![
        Field::new("round", DataType::UInt32, false),
        Field::new("labelled", DataType::UInt64, false),
        Field::new("selected", DataType::UInt64, false),
        Field::new("rescored", DataType::UInt64, false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(
            rounds.iter().map(|r| r.round),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rounds.iter().map(|r| r.labelled),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rounds.iter().map(|r| r.selected),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rounds.iter().map(|r| r.rescored),
        )),
    ];
    for metric in names_in_order(rounds.iter().map(|r| r.metrics.as_slice())) {
        fields.push(Field::new(metric, DataType::Float64, true));
        columns.push(value_column(rounds, metric, |r| &r.metrics));
    }
    for stage in names_in_order(rounds.iter().map(|r| r.timings_ms.as_slice())) {
        fields.push(Field::new(format!("{stage}_ms"), DataType::Float64, true));
        columns.push(value_column(rounds, stage, |r| &r.timings_ms));
    }
    for (i, field) in fields.iter().enumerate() {
        if fields[..i].iter().any(|f| f.name() == field.name()) {
            return Err(format!("two columns would be named `{}`", field.name()));
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

/// An id column: `Int64` if every id is an integer, else `Utf8` (integers as decimal text).
fn id_column<'a>(ids: impl Iterator<Item = &'a RawId> + Clone) -> ArrayRef {
    let ints: Option<Vec<i64>> = ids
        .clone()
        .map(|id| match id {
            RawId::Int(v) => Some(*v),
            RawId::Str(_) => None,
        })
        .collect();
    match ints {
        Some(ints) => Arc::new(Int64Array::from(ints)),
        None => Arc::new(StringArray::from_iter_values(ids.map(|id| id.to_string()))),
    }
}

fn selections_batch(
    selections: &[SelectionRecord],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let users = id_column(selections.iter().map(|s| &s.user_id));
    let items = id_column(selections.iter().map(|s| &s.item_id));
    let schema = Schema::new(vec![
        Field::new("round", DataType::UInt32, false),
        Field::new("sample", DataType::UInt32, false),
        Field::new("user_id", users.data_type().clone(), false),
        Field::new("item_id", items.data_type().clone(), false),
        Field::new("score", DataType::Float64, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(UInt32Array::from_iter_values(
                selections.iter().map(|s| s.round),
            )),
            Arc::new(UInt32Array::from_iter_values(
                selections.iter().map(|s| s.sample),
            )),
            users,
            items,
            Arc::new(Float64Array::from_iter_values(
                selections.iter().map(|s| s.score),
            )),
        ],
    )
}

fn recommendations_batch(
    recommendations: &[Recommendation],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let users = id_column(recommendations.iter().map(|r| &r.user_id));
    let items = id_column(recommendations.iter().map(|r| &r.item_id));
    let schema = Schema::new(vec![
        Field::new("round", DataType::UInt32, false),
        Field::new("user_id", users.data_type().clone(), false),
        Field::new("rank", DataType::UInt32, false),
        Field::new("item_id", items.data_type().clone(), false),
        Field::new("score", DataType::Float32, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(UInt32Array::from_iter_values(
                recommendations.iter().map(|r| r.round),
            )),
            users,
            Arc::new(UInt32Array::from_iter_values(
                recommendations.iter().map(|r| r.rank),
            )),
            items,
            Arc::new(Float32Array::from_iter_values(
                recommendations.iter().map(|r| r.score),
            )),
        ],
    )
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type, UInt32Type, UInt64Type};

    use super::*;
    use crate::io::parquet_file::read_parquet;

    fn round(round: u32, metrics: &[(&str, f64)], timings: &[(&str, f64)]) -> RoundRecord {
        RoundRecord {
            round,
            labelled: 100 + u64::from(round) * 10,
            selected: if round == 0 { 0 } else { 10 },
            rescored: u64::from(round) * 7,
            metrics: metrics.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            timings_ms: timings.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        }
    }

    fn read_one(path: &Path) -> RecordBatch {
        let batches = read_parquet(path).unwrap();
        arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    #[test]
    fn rounds_round_trip_with_metric_and_timing_columns() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::prepare(&dir.path().join("run"), false).unwrap();
        let rounds = vec![
            round(
                0,
                &[("rmse", 1.25), ("ndcg@10", f64::NAN)],
                &[("train", 12.5)],
            ),
            round(
                1,
                &[("rmse", 1.0), ("ndcg@10", 0.5)],
                &[("train", 3.0), ("score", 0.25)],
            ),
        ];
        let path = out.write_rounds("rounds.parquet", &rounds).unwrap();
        assert_eq!(path, dir.path().join("run/rounds.parquet"));
        let batch = read_one(&path);
        let names: Vec<&str> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            names,
            [
                "round", "labelled", "selected", "rescored", "rmse", "ndcg@10", "train_ms",
                "score_ms"
            ]
        );
        let col = |name: &str| batch.column_by_name(name).unwrap().clone();
        assert_eq!(col("round").as_primitive::<UInt32Type>().values(), &[0, 1]);
        assert_eq!(
            col("labelled").as_primitive::<UInt64Type>().values(),
            &[100, 110]
        );
        assert_eq!(
            col("selected").as_primitive::<UInt64Type>().values(),
            &[0, 10]
        );
        assert_eq!(
            col("rescored").as_primitive::<UInt64Type>().values(),
            &[0, 7]
        );
        assert_eq!(
            col("rmse").as_primitive::<Float64Type>().values(),
            &[1.25, 1.0]
        );
        let ndcg = col("ndcg@10");
        assert!(ndcg.as_primitive::<Float64Type>().value(0).is_nan());
        assert_eq!(ndcg.as_primitive::<Float64Type>().value(1), 0.5);
        assert_eq!(
            col("train_ms").as_primitive::<Float64Type>().values(),
            &[12.5, 3.0]
        );
        let score = col("score_ms");
        assert!(score.is_null(0), "round 0 had no score stage");
        assert_eq!(score.as_primitive::<Float64Type>().value(1), 0.25);
    }

    #[test]
    fn colliding_column_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::prepare(dir.path(), false).unwrap();
        let err = out
            .write_rounds(
                "rounds.parquet",
                &[round(0, &[("train_ms", 1.0)], &[("train", 2.0)])],
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot write {}: two columns would be named `train_ms`",
                dir.path().join("rounds.parquet").display()
            )
        );
        assert!(!dir.path().join("rounds.parquet").exists());
    }

    fn selection(round: u32, sample: u32, user: RawId, item: RawId, score: f64) -> SelectionRecord {
        SelectionRecord {
            round,
            sample,
            user_id: user,
            item_id: item,
            score,
        }
    }

    #[test]
    fn selections_keep_integer_ids_as_integers_and_mixed_ids_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::prepare(dir.path(), false).unwrap();
        let selections = vec![
            selection(1, 17, RawId::Int(5), RawId::Int(-3), 0.75),
            selection(2, 4, RawId::Str("ann".into()), RawId::Int(9), 0.5),
        ];
        let batch = read_one(
            &out.write_selections("selections.parquet", &selections)
                .unwrap(),
        );
        let col = |name: &str| batch.column_by_name(name).unwrap().clone();
        assert_eq!(col("round").as_primitive::<UInt32Type>().values(), &[1, 2]);
        assert_eq!(
            col("sample").as_primitive::<UInt32Type>().values(),
            &[17, 4]
        );
        let users = col("user_id");
        assert_eq!(users.data_type(), &DataType::Utf8);
        assert_eq!(
            users.as_string::<i32>().iter().collect::<Vec<_>>(),
            [Some("5"), Some("ann")]
        );
        assert_eq!(
            col("item_id").as_primitive::<Int64Type>().values(),
            &[-3, 9]
        );
        assert_eq!(
            col("score").as_primitive::<Float64Type>().values(),
            &[0.75, 0.5]
        );

        // No selection at all still gives a readable file with the schema.
        let empty = read_parquet(&out.write_selections("none.parquet", &[]).unwrap()).unwrap();
        assert!(empty.iter().all(|b| b.num_rows() == 0));
    }

    #[test]
    fn json_and_bytes_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::prepare(dir.path(), false).unwrap();
        let value = serde_json::json!({"seed": 42, "metrics": {"rmse": 0.9}});
        let path = out.write_json(SUMMARY_FILE, &value).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, value);
        let path = out.write_bytes("curve.svg", b"<svg/>").unwrap();
        assert_eq!(fs::read(path).unwrap(), b"<svg/>");
    }

    #[test]
    fn a_non_empty_directory_needs_force_and_force_removes_only_the_summary() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let out = OutputDir::prepare(&run, false).unwrap();
        out.write_bytes("rounds.parquet", b"old").unwrap();
        out.write_json(SUMMARY_FILE, &1).unwrap();
        fs::write(run.join("notes.txt"), "mine").unwrap();

        let err = OutputDir::prepare(&run, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "output directory {} is not empty; pass --force to overwrite, or choose another \
                 --out",
                run.display()
            )
        );
        assert!(
            run.join(SUMMARY_FILE).exists(),
            "a refused prepare changes nothing"
        );

        OutputDir::prepare(&run, true).unwrap();
        assert!(!run.join(SUMMARY_FILE).exists());
        assert_eq!(fs::read(run.join("rounds.parquet")).unwrap(), b"old");
        assert_eq!(fs::read_to_string(run.join("notes.txt")).unwrap(), "mine");
    }

    #[test]
    fn names_with_folders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::prepare(&dir.path().join("run"), false).unwrap();
        for name in ["../escape.json", "a/b.json", "", ".."] {
            assert!(
                matches!(
                    out.write_bytes(name, b"x"),
                    Err(IoError::InvalidRecords { .. })
                ),
                "{name}"
            );
        }
        assert!(!dir.path().join("escape.json").exists());
    }

    #[test]
    fn an_empty_existing_directory_is_used_and_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(OutputDir::prepare(dir.path(), false).is_ok());
        let file = dir.path().join("f");
        fs::write(&file, "x").unwrap();
        assert_eq!(
            OutputDir::prepare(&file, true).unwrap_err().to_string(),
            format!(
                "output path {} exists and is not a directory; choose another --out",
                file.display()
            )
        );
    }
}
