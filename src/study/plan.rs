//! From a pipeline with a `study:` section to the runs it asks for: every arm (one
//! combination of the `vary` grid) with every seed, each an ordinary, validated [`Plan`].
//!
//! An arm is the pipeline with its `vary` values applied as `--set` overrides, exactly as a
//! user would write them on the command line, so every key `recsift run --set` accepts can
//! be varied, and every arm is checked by the same planner as a single run. Problems in an
//! arm are reported at the `vary` key that produced them, prefixed with the arm's name.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::driver::pool::PoolStart;
use crate::plan::{self, ClusterPlan, Plan};
use crate::registry::defaults;
use crate::spec::LoadedSpec;
use crate::spec::diagnostic::{Diagnostic, Diagnostics, LocatedDiagnostic, Origin};
use crate::spec::path::YamlPath;
use crate::spec::schema::{SeedsSpec, StudySpec};

/// A validated study.
#[derive(Clone, Debug, Serialize)]
pub struct StudyPlan {
    /// The study's name (the pipeline's).
    pub name: String,
    /// The pipeline file.
    pub source: PathBuf,
    /// The seeds every arm runs with.
    pub seeds: Vec<u64>,
    /// The arms, in grid order (the first `vary` key varies slowest).
    pub arms: Vec<Arm>,
    /// The name of the arm the others are compared with.
    pub baseline: String,
    /// Runs at once.
    pub parallel: usize,
    /// Whether runs of one seed whose plans differ only after round 0 share it.
    pub share_round_zero: bool,
    /// The study's results directory.
    pub out_dir: PathBuf,
    /// The processes the study's runs are shared out to (`cluster:`, `--processes`); each
    /// run itself runs in one process.
    pub cluster: ClusterPlan,
    /// Every run: arm x seed, arms outer.
    #[serde(skip)]
    pub runs: Vec<StudyRun>,
}

/// One arm: a name and the overrides that make it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Arm {
    /// The values it takes, joined by `+` (a folder name: unsafe characters become `_`).
    pub name: String,
    /// `(path, value)` of each varied key, the value as YAML.
    pub settings: Vec<(String, String)>,
}

/// One run of a study.
#[derive(Clone, Debug)]
pub struct StudyRun {
    /// Index of its arm in [`StudyPlan::arms`].
    pub arm: usize,
    /// Its seed.
    pub seed: u64,
    /// The validated plan (output directory already set to the run's folder).
    pub plan: Plan,
    /// Its round-0 group: runs of one group train the same round-0 model (same seed, plans
    /// that differ only after round 0; see [`PoolStart::serves`]). Every run has a group,
    /// alone in it when nothing can share its round 0.
    pub round_zero: usize,
}

impl StudyPlan {
    /// Moves the study's results to `dir` (each run's folder with it).
    pub fn set_out_dir(&mut self, dir: PathBuf) {
        self.out_dir = dir;
        let dirs: Vec<PathBuf> = self
            .runs
            .iter()
            .map(|r| self.run_dir(r.arm, r.seed))
            .collect();
        for (run, dir) in self.runs.iter_mut().zip(dirs) {
            run.plan.output.dir = dir;
        }
    }

    /// The folder of one run: `<out>/runs/<arm>/seed-<seed>/`.
    pub fn run_dir(&self, arm: usize, seed: u64) -> PathBuf {
        self.out_dir
            .join("runs")
            .join(&self.arms[arm].name)
            .join(format!("seed-{seed}"))
    }
}

/// The study `file` describes (with `set` applied to every arm), or `None` when the file
/// has no `study:` section. Every arm x seed is planned; all problems are reported at once.
pub fn plan_study(file: &Path, set: &[String]) -> Result<Option<StudyPlan>, Diagnostics> {
    let loaded = LoadedSpec::load(file, set)?;
    let Some(spec) = loaded.spec.study.clone() else {
        return Ok(None);
    };
    let mut problems = Vec::new();
    let base = plan::build(&loaded);
    let base_seed = match &base {
        Ok(p) => p.seed,
        Err(_) => loaded.spec.seed.unwrap_or(defaults::SEED),
    };
    let (seeds, arms, parallel) = study_shape(&spec, base_seed, &mut problems);
    let baseline = choose_baseline(&spec, &arms, &mut problems);
    let mut located = loaded.locate(problems).items;
    let base = match base {
        Ok(plan) => plan,
        Err(diagnostics) => {
            located.extend(diagnostics.items);
            return Err(Diagnostics {
                file: file.to_path_buf(),
                items: located,
            });
        }
    };
    let out_dir = base.output.dir.clone();
    let mut runs = Vec::new();
    for (a, arm) in arms.iter().enumerate() {
        for &seed in &seeds {
            let mut arguments = set.to_vec();
            arguments.extend(arm.settings.iter().map(|(p, v)| format!("{p}={v}")));
            arguments.push(format!("seed={seed}"));
            let planned = LoadedSpec::load(file, &arguments).and_then(|l| plan::build(&l));
            match planned {
                Ok(plan) => runs.push(StudyRun {
                    arm: a,
                    seed,
                    plan,
                    round_zero: 0,
                }),
                Err(diagnostics) => {
                    located.extend(in_arm(&loaded, arm, diagnostics));
                    // The other seeds of this arm fail the same way.
                    break;
                }
            }
        }
    }
    if !located.is_empty() {
        located.dedup();
        return Err(Diagnostics {
            file: file.to_path_buf(),
            items: located,
        });
    }
    let mut plan = StudyPlan {
        name: base.name.clone(),
        source: file.to_path_buf(),
        seeds,
        arms,
        baseline,
        parallel,
        share_round_zero: spec.share_round_zero.unwrap_or(defaults::SHARE_ROUND_ZERO),
        out_dir,
        cluster: base.cluster.clone(),
        runs: Vec::new(),
    };
    for run in &mut runs {
        run.plan.output.dir = plan.run_dir(run.arm, run.seed);
        run.plan.cluster = ClusterPlan::single();
    }
    group_round_zero(&mut runs);
    plan.runs = runs;
    Ok(Some(plan))
}

/// Numbers the runs' round-0 groups: a run joins the group of the first earlier run whose
/// round 0 serves it.
fn group_round_zero(runs: &mut [StudyRun]) {
    let mut representatives: Vec<usize> = Vec::new();
    for k in 0..runs.len() {
        let found = representatives
            .iter()
            .position(|&r| PoolStart::serves(&runs[r].plan, &runs[k].plan));
        runs[k].round_zero = found.unwrap_or_else(|| {
            representatives.push(k);
            representatives.len() - 1
        });
    }
}

/// Seeds, arms and parallelism from the `study:` section.
fn study_shape(
    spec: &StudySpec,
    base_seed: u64,
    problems: &mut Vec<Diagnostic>,
) -> (Vec<u64>, Vec<Arm>, usize) {
    let at = |key: &str| YamlPath::keys(&["study", key]);
    let seeds = match &spec.seeds {
        None => (0..defaults::STUDY_SEEDS).map(|k| base_seed + k).collect(),
        Some(SeedsSpec::Count(n)) => (0..*n).map(|k| base_seed + k).collect(),
        Some(SeedsSpec::List(list)) => list.clone(),
    };
    let mut distinct = seeds.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if seeds.is_empty() {
        problems.push(
            Diagnostic::new(at("seeds"), "a study needs at least one seed")
                .with_help("use e.g. `seeds: 5` (at least 5 for significance tests)"),
        );
    } else if distinct.len() != seeds.len() {
        problems.push(
            Diagnostic::new(at("seeds"), "the seed list repeats a seed")
                .with_help("list each seed once"),
        );
    }
    let mut axes: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for (key, values) in spec.vary.iter().flatten() {
        let path = match key.as_str() {
            Some(path) if YamlPath::parse_dotted(path).is_some() => path.to_string(),
            _ => {
                problems.push(
                    Diagnostic::new(at("vary"), format!("`{key:?}` is not a key path"))
                        .with_help("write paths as for `--set`, e.g. `nodes.pick.select.strategy`"),
                );
                continue;
            }
        };
        let here = YamlPath::root().key("study").key("vary").key(&path);
        // A list of values, each named by itself, or a mapping from arm names to values
        // (for values too long to name an arm, such as a whole model section).
        let rendered: Vec<(String, String)> = match values {
            serde_yaml::Value::Sequence(list) => list
                .iter()
                .map(|v| (value_label(v), value_yaml(v)))
                .collect(),
            serde_yaml::Value::Mapping(named) => named
                .iter()
                .map(|(name, v)| (value_label(name), value_yaml(v)))
                .collect(),
            _ => Vec::new(),
        };
        if rendered.is_empty() {
            problems.push(
                Diagnostic::new(
                    here,
                    "each varied key takes a non-empty list of values, or a mapping from arm names to values",
                )
                .with_help(
                    "e.g. `nodes.pick.select.strategy: [random, uncertainty]`, or \
                     `nodes.model.train: {small: {mf: {dim: 8}}, large: {mf: {dim: 64}}}`",
                ),
            );
            continue;
        }
        axes.push((path, rendered));
    }
    let arms = grid(&axes);
    let mut names: Vec<&str> = arms.iter().map(|a| a.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        problems.push(
            Diagnostic::new(at("vary"), "two arms would have the same name")
                .with_help("vary each key over distinct values"),
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parallel = spec.parallel.unwrap_or(cores);
    if parallel == 0 {
        problems.push(
            Diagnostic::new(at("parallel"), "`parallel` must be at least 1")
                .with_help(format!("use e.g. `parallel: {cores}` (the cores)")),
        );
    }
    (seeds, arms, parallel.max(1))
}

/// Every combination of the axes' values (the first axis slowest); one unnamed arm
/// (`base`) when nothing varies.
fn grid(axes: &[(String, Vec<(String, String)>)]) -> Vec<Arm> {
    let mut arms = vec![Arm {
        name: String::new(),
        settings: Vec::new(),
    }];
    for (path, values) in axes {
        arms = arms
            .into_iter()
            .flat_map(|arm| {
                values.iter().map(move |(label, yaml)| {
                    let mut next = arm.clone();
                    if !next.name.is_empty() {
                        next.name.push('+');
                    }
                    next.name.push_str(label);
                    next.settings.push((path.clone(), yaml.clone()));
                    next
                })
            })
            .collect();
    }
    for arm in &mut arms {
        if arm.name.is_empty() {
            arm.name = "base".into();
        }
    }
    arms
}

/// A value as a folder-safe label.
fn value_label(value: &serde_yaml::Value) -> String {
    let text = match value {
        serde_yaml::Value::String(s) => s.clone(),
        other => value_yaml(other).replace(['{', '}', ' ', '\n'], ""),
    };
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A value as YAML text for a `--set` override (one line).
fn value_yaml(value: &serde_yaml::Value) -> String {
    match value {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_else(|_| format!("{other:?}")),
    }
}

/// The baseline arm: as written, else the one whose strategy is `random`, else the first.
fn choose_baseline(spec: &StudySpec, arms: &[Arm], problems: &mut Vec<Diagnostic>) -> String {
    if let Some(written) = &spec.baseline {
        if !arms.iter().any(|a| &a.name == written) {
            let names: Vec<&str> = arms.iter().map(|a| a.name.as_str()).collect();
            problems.push(
                Diagnostic::new(
                    YamlPath::keys(&["study", "baseline"]),
                    format!("no arm is named `{written}`"),
                )
                .with_help(format!("the arms are: {}", names.join(", "))),
            );
        }
        return written.clone();
    }
    arms.iter()
        .find(|a| {
            a.settings
                .iter()
                .any(|(path, value)| path.ends_with("strategy") && value == "random")
        })
        .or(arms.first())
        .map(|a| a.name.clone())
        .unwrap_or_default()
}

impl std::fmt::Display for StudyPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "study {}: {} arms x {} seeds = {} runs, {} at once, results in {}",
            self.name,
            self.arms.len(),
            self.seeds.len(),
            self.runs.len(),
            self.parallel,
            self.out_dir.display()
        )?;
        let seeds: Vec<String> = self.seeds.iter().map(u64::to_string).collect();
        writeln!(f, "  seeds: {}", seeds.join(", "))?;
        for arm in &self.arms {
            let settings: Vec<String> = arm
                .settings
                .iter()
                .map(|(path, value)| format!("{path}={value}"))
                .collect();
            let mark = if arm.name == self.baseline {
                "  (baseline)"
            } else {
                ""
            };
            writeln!(f, "  arm {}: {}{mark}", arm.name, settings.join(" "))?;
        }
        let groups = self
            .runs
            .iter()
            .map(|r| r.round_zero + 1)
            .max()
            .unwrap_or(0);
        if self.share_round_zero && groups < self.runs.len() {
            writeln!(
                f,
                "  round 0: trained {groups} times for {} runs (arms of a seed share it)",
                self.runs.len()
            )?;
        }
        writeln!(f, "each run's plan (the first arm's, first seed):")
    }
}

/// An arm's problems, attributed to the `vary` keys that made it when they came from its
/// overrides, each prefixed with the arm.
fn in_arm(loaded: &LoadedSpec, arm: &Arm, diagnostics: Diagnostics) -> Vec<LocatedDiagnostic> {
    diagnostics
        .items
        .into_iter()
        .map(|mut item| {
            if let Origin::SetArgument(argument) = &item.origin
                && let Some((path, _)) = arm
                    .settings
                    .iter()
                    .find(|(path, value)| argument == &format!("{path}={value}"))
            {
                let key = YamlPath::root().key("study").key("vary").key(path);
                item.origin = Origin::File(loaded.source_map.locate(&key));
            }
            item.diagnostic.message = format!("arm `{}`: {}", arm.name, item.diagnostic.message);
            item
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(path: &str, values: &[&str]) -> (String, Vec<(String, String)>) {
        (
            path.to_string(),
            values
                .iter()
                .map(|v| (v.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn the_grid_is_every_combination_first_axis_slowest() {
        let arms = grid(&[
            axis("nodes.pick.select.strategy", &["random", "uncertainty"]),
            axis("nodes.model.train.mf.refit", &["new_labels", "all_labels"]),
        ]);
        let names: Vec<&str> = arms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "random+new_labels",
                "random+all_labels",
                "uncertainty+new_labels",
                "uncertainty+all_labels"
            ]
        );
        assert_eq!(arms[1].settings[1].1, "all_labels");
        assert_eq!(grid(&[])[0].name, "base");
    }

    #[test]
    fn labels_are_folder_safe_and_values_one_line() {
        let v: serde_yaml::Value = serde_yaml::from_str("{sgd: {lr: 0.01}}").unwrap();
        assert_eq!(value_yaml(&v), r#"{"sgd":{"lr":0.01}}"#);
        assert!(
            value_label(&v)
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
        assert_eq!(value_label(&serde_yaml::Value::from(0.5)), "0.5");
    }
}
