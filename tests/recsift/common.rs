//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use recsift::fixtures::{Fixture, find};
use recsift::plan::{self, Plan};
use recsift::spec::LoadedSpec;

/// A short pool run: 3 rounds of the quickstart (text_mf) with little training.
pub const QUICK_POOL: &[&str] = &[
    "pipelines/quickstart.yaml",
    "--set",
    "protocol.pool.rounds=3",
    "--set",
    "nodes.model.train.text_mf.epochs=5",
    "--set",
    "nodes.model.train.text_mf.epochs_per_round=1",
];

/// The crate root (tests run with it as the current directory).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A plan from a pipeline file (relative to the crate root) with `--set` overrides.
pub fn plan_of(pipeline: &str, set: &[&str]) -> Plan {
    let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    let loaded = LoadedSpec::load(&root().join(pipeline), &set).unwrap_or_else(|e| panic!("{e}"));
    plan::build(&loaded).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs the `recsift` binary in the crate root.
pub fn recsift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recsift"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the recsift binary runs")
}

/// stderr of a run as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// MovieLens 100K imported into `dir` (never into the repository), or `None` when the
/// release is not found (`test` is then skipped; see `recsift::fixtures`).
pub fn import_ml100k(dir: &Path, test: &str) -> Option<PathBuf> {
    let release = find(Fixture::Ml100k, test)?;
    let dest = dir.join("ml-100k");
    recsift::io::movielens::import_movielens(&release, &dest).unwrap_or_else(|e| panic!("{e}"));
    Some(dest)
}

/// The all-MiniLM-L6-v2 folder, or `None` when it is not found (`test` is then skipped).
pub fn minilm(test: &str) -> Option<PathBuf> {
    find(Fixture::MiniLm, test)
}

/// A replay on ml-latest-small (in `dir`, with `protocol` added to its `replay:` section and
/// `nodes` to its nodes) scoring and evaluating `blend`, a prequentially learning fusion of
/// two MF models of different sizes.
pub fn two_mf_replay(dir: &std::path::Path, protocol: &str, nodes: &str) -> String {
    let file = dir.join("prequential.yaml");
    let events = root().join("data/ml-latest-small/ratings.parquet");
    std::fs::write(
        &file,
        format!(
            "version: 1
data: {{events: {}}}
protocol: {{replay: {{window: 7d, {protocol}}}}}
nodes:
  small: {{train: {{mf: {{dim: 4, epochs: 3, optimizer: {{adam: {{}}}}}}}}, input: labelled}}
  large: {{train: {{mf: {{dim: 24, init_std: 0.1, epochs: 3, optimizer: {{adam: {{}}}}}}}}, input: labelled}}
  blend: {{fuse: {{learn: prequential}}, inputs: [small, large]}}
  report: {{evaluate: {{metrics: [rmse]}}, inputs: [test, blend]}}
{nodes}",
            events.display()
        ),
    )
    .unwrap();
    file.to_str().unwrap().to_string()
}
