//! Studies: one pipeline run as a grid of arms (strategies, say) over several seeds, and the
//! comparison of the arms with a baseline arm: the product's main output for
//! active-learning papers.
//!
//! Running ([`plan`], [`run`], `schedule`, [`output`], [`collect`]): a pipeline's `study:`
//! section becomes one validated plan per arm x seed, each run as an ordinary `recsift run`
//! in its own folder (arms of a seed sharing round 0), then analysed. Analysing (the rest) is plain data in, plain data and text
//! out, and knows nothing of how the runs were made.
//!
//! ```text
//! [RunCurve] (arm, seed, round records)
//!   -> analyse          StudyAnalysis: per metric and arm, final value and AULC over seeds,
//!                       mean curve, labels to reach the baseline, paired tests + Holm
//!   -> serde_json       study.json
//!   -> learning_curves_svg   learning_curves.svg
//!   -> report_html      report.html (curves, tables, plan, command line, versions)
//! ```
//!
//! - `stats`: summaries, paired t-test, Wilcoxon signed-rank, Holm (checked against SciPy);
//! - `curves`: metric direction, mean curves, AULC, labels to target;
//! - `analysis`: the runs grouped into arms and analysed per metric;
//! - `plot` and `report`: the SVG and the HTML page.
//!
//! ```
//! use recsift::results::RoundRecord;
//! use recsift::study::{ReportContext, RunCurve, analyse, report_html};
//!
//! let run = |arm: &str, seed: u64, ndcg: [f64; 2]| RunCurve {
//!     arm: arm.into(),
//!     seed,
//!     rounds: (0..2)
//!         .map(|round| RoundRecord {
//!             round,
//!             labelled: 100 * (u64::from(round) + 1),
//!             selected: 0,
//!             rescored: 0,
//!             metrics: vec![("ndcg@10".into(), ndcg[round as usize])],
//!             timings_ms: vec![],
//!         })
//!         .collect(),
//! };
//! let runs = [
//!     run("random", 1, [0.10, 0.20]),
//!     run("random", 2, [0.11, 0.22]),
//!     run("uncertainty", 1, [0.10, 0.30]),
//!     run("uncertainty", 2, [0.12, 0.32]),
//! ];
//! let analysis = analyse(&runs, "random")?;
//! let ndcg = &analysis.metrics[0];
//! // Uncertainty's mean curve (0.11, 0.31) reaches random's final mean (0.21) halfway:
//! // at 150 labels instead of 200, a saving of 25%.
//! let labels = ndcg.arms[1].labels_to_target.unwrap_or(f64::NAN);
//! assert!((labels - 150.0).abs() < 1e-9);
//! let html = report_html(&analysis, &ReportContext::default());
//! assert!(html.contains("uncertainty"));
//! # Ok::<(), recsift::study::StudyError>(())
//! ```

mod analysis;
pub mod collect;
pub mod curves;
mod distribute;
pub mod output;
pub mod plan;
mod plot;
mod report;
pub mod run;
mod schedule;
pub mod stats;

pub use analysis::{
    ArmMetric, Comparison, MetricAnalysis, RunCurve, StudyAnalysis, StudyError, analyse,
};
pub use output::{StudyInput, StudyOutcome, run_and_report, write_study};
pub use plan::{StudyPlan, plan_study};
pub use plot::learning_curves_svg;
pub use report::{ReportContext, SIGNIFICANCE, report_html};
