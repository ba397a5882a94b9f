//! A study's files, written atomically with `study.json` last (a folder without it holds an
//! unfinished study): `study.parquet` (every run's rounds), `arms.parquet` (per arm and
//! metric: final value over seeds, AULC, labels to target, paired tests), the
//! `learning_curves.svg` and the self-contained `report.html`. `recsift report` builds the
//! same files from finished runs chosen by the user.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, StringArray, UInt64Array};
use serde::Serialize;

use super::plan::StudyPlan;
use super::run::{StudyRunError, run_study};
use super::{ReportContext, RunCurve, StudyAnalysis, analyse, learning_curves_svg, report_html};
use crate::io::results::OutputDir;

/// `study.json`: the study's shape and its analysis.
#[derive(Serialize)]
struct StudyFile<'a> {
    name: &'a str,
    recsift_version: &'static str,
    command_line: &'a str,
    /// The study plan (absent for `recsift report` over chosen runs).
    study: Option<&'a StudyPlan>,
    /// Each run: arm, seed and folder.
    runs: Vec<RunEntry>,
    analysis: &'a StudyAnalysis,
}

#[derive(Serialize)]
struct RunEntry {
    arm: String,
    seed: u64,
    dir: PathBuf,
}

/// What a study run did, for the command's last line.
#[derive(Clone, Debug)]
pub struct StudyOutcome {
    /// The study's name.
    pub name: String,
    /// Runs in the study.
    pub runs: usize,
    /// Runs skipped because they had finished before.
    pub skipped: usize,
    /// Runs that continued a round 0 shared with other arms of their seed.
    pub shared_round_zero: usize,
    /// Wall time of the runs executed now, in seconds.
    pub wall_s: f64,
    /// Where the results are.
    pub out_dir: PathBuf,
    /// A compact table of the first metric's arms (empty on a process other than 0).
    pub table: String,
    /// `(process, processes)` when the study was shared out to several processes.
    pub cluster: Option<(usize, usize)>,
}

impl fmt::Display for StudyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((process, processes)) = self.cluster.filter(|(p, _)| *p > 0) {
            return write!(
                f,
                "{}: process {process} of {processes} ran its {} runs ({} skipped, finished \
                 before) in {:.1} s; process 0 writes the report into {}",
                self.name,
                self.runs,
                self.skipped,
                self.wall_s,
                self.out_dir.display()
            );
        }
        write!(f, "{}", self.table)?;
        write!(
            f,
            "{}: {} runs ({} skipped, finished before; {} continued a shared round 0) in {:.1} s -> {} (report.html)",
            self.name,
            self.runs,
            self.skipped,
            self.shared_round_zero,
            self.wall_s,
            self.out_dir.display()
        )
    }
}

/// Runs the study's unfinished runs (all of them with `force`) and writes its files.
pub fn run_and_report(
    plan: &StudyPlan,
    force: bool,
    progress: bool,
    command_line: &str,
) -> Result<StudyOutcome, StudyRunError> {
    let finished = run_study(plan, force, progress)?;
    let cluster =
        (plan.cluster.processes > 1).then_some((plan.cluster.process, plan.cluster.processes));
    if !plan.cluster.writes_results() {
        return Ok(StudyOutcome {
            name: plan.name.clone(),
            runs: finished.mine,
            skipped: finished.skipped,
            shared_round_zero: finished.shared_round_zero,
            wall_s: finished.wall_s,
            out_dir: plan.out_dir.clone(),
            table: String::new(),
            cluster,
        });
    }
    let curves: Vec<RunCurve> = finished
        .runs
        .iter()
        .map(|r| RunCurve {
            arm: plan.arms[r.arm].name.clone(),
            seed: r.seed,
            rounds: r.rounds.clone(),
        })
        .collect();
    let dirs: Vec<PathBuf> = plan
        .runs
        .iter()
        .map(|r| r.plan.output.dir.clone())
        .collect();
    let first_plan = plan
        .runs
        .first()
        .map(|r| format!("{}", r.plan))
        .unwrap_or_default();
    let context = ReportContext {
        title: format!("study {}", plan.name),
        plan: format!("{plan}{first_plan}"),
        command_line: command_line.to_string(),
        versions: versions(),
    };
    let order = plan
        .runs
        .first()
        .map(|r| {
            r.plan
                .evaluate
                .iter()
                .flat_map(|e| e.metric_names())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let analysis = write_study(
        &plan.out_dir,
        &StudyInput {
            name: &plan.name,
            plan: Some(plan),
            curves: &curves,
            dirs: &dirs,
            baseline: &plan.baseline,
            metric_order: &order,
        },
        &context,
    )?;
    Ok(StudyOutcome {
        name: plan.name.clone(),
        runs: plan.runs.len(),
        skipped: finished.skipped,
        shared_round_zero: finished.shared_round_zero,
        wall_s: finished.wall_s,
        out_dir: plan.out_dir.clone(),
        table: headline_table(&analysis),
        cluster,
    })
}

/// The versions a report states.
pub fn versions() -> Vec<(String, String)> {
    vec![
        ("recsift".into(), env!("CARGO_PKG_VERSION").into()),
        ("os".into(), std::env::consts::OS.into()),
        ("arch".into(), std::env::consts::ARCH.into()),
    ]
}

/// What a study's files are made from.
pub struct StudyInput<'a> {
    /// The study's (or report's) name.
    pub name: &'a str,
    /// The study plan, when the runs come from one.
    pub plan: Option<&'a StudyPlan>,
    /// Every run's curve.
    pub curves: &'a [RunCurve],
    /// Run `k`'s folder is `dirs[k]`.
    pub dirs: &'a [PathBuf],
    /// The arm the others are compared with.
    pub baseline: &'a str,
    /// Metrics listed here come first, in this order (the pipeline's `evaluate` order);
    /// the others follow by name.
    pub metric_order: &'a [String],
}

/// Analyses the runs against the baseline and writes the study's files into `out`,
/// `study.json` last.
pub fn write_study(
    out: &Path,
    input: &StudyInput<'_>,
    context: &ReportContext,
) -> Result<StudyAnalysis, StudyRunError> {
    let StudyInput {
        name,
        plan,
        curves,
        dirs,
        baseline,
        metric_order,
    } = *input;
    let mut analysis = analyse(curves, baseline).map_err(StudyRunError::Analysis)?;
    analysis.metrics.sort_by_key(|m| {
        metric_order
            .iter()
            .position(|name| *name == m.metric)
            .unwrap_or(metric_order.len())
    });
    let dir = OutputDir::prepare(out, true).map_err(StudyRunError::write)?;
    let rounds: Vec<(String, u64, &[crate::results::RoundRecord])> = curves
        .iter()
        .map(|c| (c.arm.clone(), c.seed, c.rounds.as_slice()))
        .collect();
    dir.write_study_rounds("study.parquet", &rounds)
        .map_err(StudyRunError::write)?;
    dir.write_table("arms.parquet", arms_columns(&analysis))
        .map_err(StudyRunError::write)?;
    dir.write_bytes(
        "learning_curves.svg",
        learning_curves_svg(&analysis).as_bytes(),
    )
    .map_err(StudyRunError::write)?;
    dir.write_bytes("report.html", report_html(&analysis, context).as_bytes())
        .map_err(StudyRunError::write)?;
    let file = StudyFile {
        name,
        recsift_version: env!("CARGO_PKG_VERSION"),
        command_line: &context.command_line,
        study: plan,
        runs: curves
            .iter()
            .zip(dirs)
            .map(|(c, d)| RunEntry {
                arm: c.arm.clone(),
                seed: c.seed,
                dir: d.clone(),
            })
            .collect(),
        analysis: &analysis,
    };
    dir.write_json("study.json", &file)
        .map_err(StudyRunError::write)?;
    Ok(analysis)
}

/// `arms.parquet`: one row per metric and arm.
fn arms_columns(analysis: &StudyAnalysis) -> Vec<(&'static str, ArrayRef)> {
    let rows: Vec<(&str, &super::ArmMetric)> = analysis
        .metrics
        .iter()
        .flat_map(|m| m.arms.iter().map(move |a| (m.metric.as_str(), a)))
        .collect();
    let float = |f: &dyn Fn(&super::ArmMetric) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(rows.iter().map(|(_, a)| f(a))))
    };
    let versus = |f: fn(&super::Comparison) -> Option<f64>| {
        move |a: &super::ArmMetric| a.versus_baseline.as_ref().and_then(f)
    };
    vec![
        (
            "metric",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|(m, _)| *m))),
        ),
        (
            "arm",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, a)| a.arm.as_str()),
            )),
        ),
        (
            "is_baseline",
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|(_, a)| Some(a.is_baseline)),
            )),
        ),
        (
            "seeds",
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|(_, a)| a.final_value.n as u64),
            )),
        ),
        ("final_mean", float(&|a| a.final_value.mean)),
        ("final_std", float(&|a| a.final_value.std)),
        (
            "final_ci95_low",
            float(&|a| a.final_value.ci95.map(|c| c[0])),
        ),
        (
            "final_ci95_high",
            float(&|a| a.final_value.ci95.map(|c| c[1])),
        ),
        ("aulc_mean", float(&|a| a.aulc.mean)),
        ("aulc_std", float(&|a| a.aulc.std)),
        ("labels_to_target", float(&|a| a.labels_to_target)),
        ("saving_percent", float(&|a| a.saving_percent)),
        ("mean_difference", float(&versus(|c| c.mean_difference))),
        ("t_test_p", float(&versus(|c| c.t_test_p))),
        ("t_test_p_holm", float(&versus(|c| c.t_test_p_holm))),
        ("wilcoxon_p", float(&versus(|c| c.wilcoxon_p))),
        ("wilcoxon_p_holm", float(&versus(|c| c.wilcoxon_p_holm))),
    ]
}

/// The first metric's arms as a small text table (what the command prints).
fn headline_table(analysis: &StudyAnalysis) -> String {
    let Some(metric) = analysis.metrics.first() else {
        return String::new();
    };
    let mut table = format!(
        "{:<28} {:>18} {:>10} {:>12} {:>10}\n",
        format!("arm ({})", metric.metric),
        "final (mean ± std)",
        "AULC",
        "saving %",
        "Holm p (t)"
    );
    let show =
        |x: Option<f64>, digits: usize| x.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    for arm in &metric.arms {
        let p = arm.versus_baseline.as_ref().and_then(|c| c.t_test_p_holm);
        table.push_str(&format!(
            "{:<28} {:>18} {:>10} {:>12} {:>10}\n",
            if arm.is_baseline {
                format!("{} (baseline)", arm.arm)
            } else {
                arm.arm.clone()
            },
            format!(
                "{} ± {}",
                show(arm.final_value.mean, 4),
                show(arm.final_value.std, 4)
            ),
            show(arm.aulc.mean, 4),
            show(arm.saving_percent, 1),
            show(p, 3),
        ));
    }
    table
}
