//! `recsift report DIR...`: finished runs and studies chosen by the user, gathered into one
//! comparison. A directory is a study (it has `runs/<arm>/seed-<seed>/summary.json`) or a
//! single run (it has `summary.json`). Runs on different data cannot be compared: the
//! events each run read (its plan's event file, or its split files) must agree.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::RunCurve;
use super::run::{StudyRunError, read_rounds};

/// Runs gathered for a report.
#[derive(Clone, Debug)]
pub struct Collected {
    /// Each run's curve; arms are named `<study>/<arm>` when several studies are gathered,
    /// a single run's arm is its pipeline name.
    pub curves: Vec<RunCurve>,
    /// Each run's folder.
    pub dirs: Vec<PathBuf>,
}

/// The part of a run's `summary.json` that identifies it.
#[derive(Deserialize)]
struct RunIdentity {
    name: String,
    seed: u64,
    config: serde_json::Value,
}

/// Gathers the runs under `dirs`.
pub fn collect_runs(dirs: &[PathBuf]) -> Result<Collected, StudyRunError> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    let several = dirs.len() > 1;
    for dir in dirs {
        let runs = dir.join("runs");
        if runs.is_dir() {
            let study = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string());
            for arm_dir in sorted_dirs(&runs)? {
                let arm = arm_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let label = if several {
                    format!("{study}/{arm}")
                } else {
                    arm
                };
                for seed_dir in sorted_dirs(&arm_dir)? {
                    if seed_dir.join("summary.json").is_file() {
                        found.push((label.clone(), seed_dir));
                    }
                }
            }
        } else if dir.join("summary.json").is_file() {
            found.push((String::new(), dir.clone()));
        } else {
            return Err(StudyRunError::Unreadable {
                path: dir.clone(),
                reason: "neither a finished run (no summary.json) nor a study (no runs/ folder)"
                    .into(),
            });
        }
    }
    if found.is_empty() {
        return Err(StudyRunError::Unreadable {
            path: dirs.first().cloned().unwrap_or_default(),
            reason: "no finished run found (a finished run has a summary.json)".into(),
        });
    }
    let mut curves = Vec::new();
    let mut datasets: Vec<(String, PathBuf)> = Vec::new();
    for (label, dir) in &found {
        let identity = read_identity(dir)?;
        let dataset = dataset_of(&identity.config);
        if let Some((first, first_dir)) = datasets.first()
            && *first != dataset
        {
            return Err(StudyRunError::MixedData {
                first: format!("{} ({first})", first_dir.display()),
                other: format!("{} ({dataset})", dir.display()),
            });
        }
        datasets.push((dataset, dir.clone()));
        curves.push(RunCurve {
            arm: if label.is_empty() {
                identity.name
            } else {
                label.clone()
            },
            seed: identity.seed,
            rounds: read_rounds(dir)?,
        });
    }
    Ok(Collected {
        curves,
        dirs: found.into_iter().map(|(_, d)| d).collect(),
    })
}

fn read_identity(dir: &Path) -> Result<RunIdentity, StudyRunError> {
    let path = dir.join("summary.json");
    let unreadable = |reason: String| StudyRunError::Unreadable {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| unreadable(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))
}

/// The events a run read, as text: its event file, or its split's files.
fn dataset_of(config: &serde_json::Value) -> String {
    // Earlier runs wrote the event log under `data.events`; runs since the plan gave each
    // protocol its own sources, under the protocol (a replay's `events`, a split's
    // `log.events`).
    let protocol = config["protocol"]
        .as_object()
        .and_then(|p| p.values().next())
        .unwrap_or(&serde_json::Value::Null);
    let logs = [
        &config["data"]["events"],
        &protocol["events"],
        &protocol["split"]["log"]["events"],
    ];
    if let Some(path) = logs.iter().find_map(|events| events["path"].as_str()) {
        return path.to_string();
    }
    let files = &protocol["split"]["files"];
    if files.is_object() {
        format!(
            "{} + {}",
            files["train"]["path"].as_str().unwrap_or("?"),
            files["test"]["path"].as_str().unwrap_or("?")
        )
    } else {
        "unknown data".into()
    }
}

/// The subfolders of `dir`, sorted by name.
fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>, StudyRunError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StudyRunError::Unreadable {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dataset_is_the_event_file_or_the_split_files() {
        let events: serde_json::Value =
            serde_json::from_str(r#"{"data": {"events": {"path": "/d/ratings.parquet"}}}"#)
                .unwrap();
        assert_eq!(dataset_of(&events), "/d/ratings.parquet");
        let split_log: serde_json::Value = serde_json::from_str(
            r#"{"protocol": {"pool": {"split": {"log":
                {"events": {"path": "/d/log.parquet"}, "rule": {"random": {}}}}}}}"#,
        )
        .unwrap();
        assert_eq!(dataset_of(&split_log), "/d/log.parquet");
        let replay: serde_json::Value = serde_json::from_str(
            r#"{"protocol": {"replay": {"events": {"path": "/d/replay.parquet"}}}}"#,
        )
        .unwrap();
        assert_eq!(dataset_of(&replay), "/d/replay.parquet");
        let files: serde_json::Value = serde_json::from_str(
            r#"{"data": {"events": null}, "protocol": {"pool": {"split": {"files":
                {"train": {"path": "a"}, "test": {"path": "b"}}}}}}"#,
        )
        .unwrap();
        assert_eq!(dataset_of(&files), "a + b");
    }
}
