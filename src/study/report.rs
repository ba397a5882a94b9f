//! `report.html` of a study: one self-contained page (inline CSS and SVG, no script, nothing
//! fetched) with the learning curves, a table of the arms per metric, the resolved plan, the
//! command line and the versions. Every text from the caller or the runs is escaped.

use std::fmt::Write;

use super::analysis::{ArmMetric, MetricAnalysis, StudyAnalysis};
use super::plot::learning_curves_svg;
use super::stats::Summary;

/// Significance level of the marks in the arm tables (on Holm-adjusted p-values).
pub const SIGNIFICANCE: f64 = 0.05;

/// What the report shows besides the analysis, all given by the caller.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportContext {
    /// The page's title (e.g. the study's name).
    pub title: String,
    /// The resolved plan, shown verbatim (YAML or text).
    pub plan: String,
    /// The command line that ran the study.
    pub command_line: String,
    /// `(name, version)` of the software that ran it (recsift, rustc, ...).
    pub versions: Vec<(String, String)>,
}

/// The study's `report.html`.
pub fn report_html(analysis: &StudyAnalysis, context: &ReportContext) -> String {
    let title = escape(&context.title);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    );
    let arms = analysis
        .arms
        .iter()
        .map(|a| format!("<b>{}</b>", escape(a)))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        html,
        "<p>Arms: {arms}. Baseline: <b>{}</b>. Every run's metrics are read at its last \
         round; runs of different arms are paired by seed.</p>",
        escape(&analysis.baseline)
    );
    let _ = writeln!(
        html,
        "<h2>Learning curves</h2>\n<figure>{}</figure>",
        learning_curves_svg(analysis)
    );
    html.push_str("<h2>Arms</h2>\n");
    for metric in &analysis.metrics {
        metric_table(&mut html, metric);
    }
    html.push_str(NOTES);
    let _ = writeln!(
        html,
        "<h2>Plan</h2>\n<pre>{}</pre>\n<h2>Reproduce</h2>\n<pre>{}</pre>",
        escape(&context.plan),
        escape(&context.command_line)
    );
    html.push_str("<table class=\"versions\">\n");
    for (name, version) in &context.versions {
        let _ = writeln!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(name),
            escape(version)
        );
    }
    html.push_str("</table>\n</body>\n</html>\n");
    html
}

/// One metric's heading and table of arms.
fn metric_table(html: &mut String, metric: &MetricAnalysis) {
    let direction = if metric.lower_is_better {
        "lower is better"
    } else {
        "higher is better"
    };
    let target = match (metric.target, metric.baseline_labels) {
        (Some(t), Some(l)) => format!(
            "; target: the baseline's final mean, {} at {} labels",
            number(t),
            labels(l)
        ),
        _ => String::new(),
    };
    let _ = writeln!(
        html,
        "<h3>{} <span class=\"dim\">({direction}{target})</span></h3>",
        escape(&metric.metric)
    );
    html.push_str(
        "<div class=\"wide\"><table>\n<tr><th>arm</th><th>seeds</th><th>final (mean ± std)</th><th>95% CI</th>\
         <th>AULC (mean ± std)</th><th>labels to target</th><th>saving</th>\
         <th>Δ vs baseline</th><th>p (t)</th><th>p (Wilcoxon)</th>\
         <th>Holm p (t)</th><th>Holm p (Wilcoxon)</th></tr>\n",
    );
    for arm in &metric.arms {
        arm_row(html, arm, metric.lower_is_better);
    }
    html.push_str("</table></div>\n");
}

/// One arm's row; the baseline and significant differences are marked.
fn arm_row(html: &mut String, arm: &ArmMetric, lower_is_better: bool) {
    let comparison = arm.versus_baseline.as_ref();
    let verdict = comparison.and_then(|c| {
        let significant = c.t_test_p_holm? < SIGNIFICANCE;
        let better = (c.mean_difference? < 0.0) == lower_is_better;
        significant.then_some(if better { "better" } else { "worse" })
    });
    // The row's class (its colour) and the tag after the arm's name.
    let marks = if arm.is_baseline {
        Some(("baseline", "baseline".to_string()))
    } else {
        verdict.map(|v| (v, format!("★ {v}")))
    };
    let (class, tag) = marks.map_or_else(Default::default, |(class, tag)| {
        (
            format!(" class=\"{class}\""),
            format!(" <span class=\"tag\">{tag}</span>"),
        )
    });
    let p = |value: Option<f64>, adjusted: bool| match value {
        Some(v) if adjusted && v < SIGNIFICANCE => format!("<b>{}</b>", p_value(v)),
        Some(v) => p_value(v),
        None => NONE.to_string(),
    };
    let _ = writeln!(
        html,
        "<tr{class}><td>{}{tag}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(&arm.arm),
        arm.final_value.n,
        mean_std(&arm.final_value),
        arm.final_value.ci95.map_or(NONE.into(), |[l, h]| format!(
            "[{}, {}]",
            number(l),
            number(h)
        )),
        mean_std(&arm.aulc),
        arm.labels_to_target.map_or(NONE.into(), labels),
        arm.saving_percent
            .map_or(NONE.into(), |s| format!("{s:.1}%")),
        comparison
            .and_then(|c| c.mean_difference)
            .map_or(NONE.into(), |d| format!(
                "{}{}",
                if d > 0.0 { "+" } else { "" },
                number(d)
            )),
        p(comparison.and_then(|c| c.t_test_p), false),
        p(comparison.and_then(|c| c.wilcoxon_p), false),
        p(comparison.and_then(|c| c.t_test_p_holm), true),
        p(comparison.and_then(|c| c.wilcoxon_p_holm), true),
    );
}

/// What stands in a cell without a value.
const NONE: &str = "–";

/// `mean ± std`, or what of it exists.
fn mean_std(summary: &Summary) -> String {
    match (summary.mean, summary.std) {
        (Some(m), Some(s)) => format!("{} ± {}", number(m), number(s)),
        (Some(m), None) => number(m),
        _ => NONE.to_string(),
    }
}

/// A metric value with four significant digits (at most ten decimals).
fn number(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let decimals = (3 - value.abs().log10().floor() as i32).clamp(0, 10) as usize;
    format!("{value:.decimals$}")
}

/// A number of labels (a mean over seeds, so rounded).
fn labels(value: f64) -> String {
    format!("{value:.0}")
}

/// A p-value: four decimals, or scientific notation below 1e-4.
fn p_value(p: f64) -> String {
    if p != 0.0 && p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

/// `text` with the characters that HTML gives a meaning escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How to read the tables.
const NOTES: &str = "<div class=\"notes\">\n<p><b>final</b>: the metric at each run's last \
round, mean ± sample std over seeds, with the two-sided 95% Student-t interval of the mean. \
<b>AULC</b>: the area under each run's curve over the labels it covers, divided by that range \
(the label-weighted mean of the metric: in [0, 1] for ndcg, recall or auc, in the metric's \
units for rmse or mae). <b>labels to target</b>: labels the arm's mean curve needs to first \
reach the baseline's final mean, interpolated between rounds; <b>saving</b>: the labels this \
saves against the baseline's final round (negative: more needed). <b>Δ</b>: mean of arm − \
baseline over the seeds both have.</p>\n<p><b>p</b>: two-sided paired t-test and Wilcoxon \
signed-rank test (SciPy's defaults: exact for small samples) against the baseline; \
<b>Holm p</b>: Holm-Bonferroni adjusted across the non-baseline arms of the metric, in bold \
below 0.05. ★ marks an arm whose Holm-adjusted t-test p is below 0.05, better or worse than \
the baseline. With five seeds the Wilcoxon p cannot go below 0.0625. – : no value (fewer \
than two seeds, no variation, or the target never reached).</p>\n</div>\n";

/// The page's style sheet.
const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto;
  max-width: 1280px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
h3 { margin-bottom: 0.4em; }
.dim { color: #666; font-weight: normal; font-size: 0.85em; }
figure { margin: 0; }
figure svg { max-width: 100%; height: auto; }
.wide { overflow-x: auto; margin-bottom: 1em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.45em; text-align: right; }
td { white-space: nowrap; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
tr.baseline { background: #eef3fb; }
tr.better { background: #e8f6e8; }
tr.worse { background: #fbeaea; }
.tag { font-size: 0.8em; color: #555; border: 1px solid #aaa; border-radius: 3px;
  padding: 0 0.3em; }
.notes { font-size: 0.85em; color: #444; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.8em; overflow-x: auto; }
table.versions { margin-bottom: 1em; }
table.versions th { text-align: left; }
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::RoundRecord;
    use crate::study::analysis::{RunCurve, analyse, tests::run};

    fn context() -> ReportContext {
        ReportContext {
            title: "study <demo> & co".into(),
            plan: "study:\n  arms: [random, \"<script>alert(1)</script>\"]\n".into(),
            command_line: "recsift study pipelines/study.yaml --set seed='1'".into(),
            versions: vec![("recsift".into(), "0.1.0".into())],
        }
    }

    fn study(arms: &[(&str, f64)], seeds: u64) -> Vec<RunCurve> {
        let mut runs = Vec::new();
        for seed in 0..seeds {
            let noise = [0.0, 0.004, -0.003, 0.002, -0.001, 0.003][seed as usize % 6];
            for (arm, step) in arms {
                runs.push(run(arm, seed, 0.1 + noise, *step + noise / 4.0, 8));
            }
        }
        runs
    }

    #[test]
    fn report_is_self_contained_and_escapes_text() {
        let analysis =
            analyse(&study(&[("random", 0.02), ("a<b>", 0.03)], 5), "random").expect("valid study");
        let html = report_html(&analysis, &context());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<title>study &lt;demo&gt; &amp; co</title>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("a&lt;b&gt;"));
        assert!(html.contains("--set seed=&#39;1&#39;"));
        // Nothing to load: no script, no link, no reference outside the page (the SVG's
        // `xmlns` is a name, not a fetch).
        for forbidden in [
            "<script", "<link", "<img", "src=", "href=", "url(", "@import",
        ] {
            assert!(!html.contains(forbidden), "{forbidden}");
        }
        assert_eq!(html.matches("<svg").count(), 1);
        // A table per metric, a row per arm plus the header.
        assert_eq!(html.matches("<tr").count(), 2 * 3 + 1);
    }

    #[test]
    fn significant_arms_are_marked() {
        let analysis =
            analyse(&study(&[("random", 0.02), ("good", 0.04)], 6), "random").expect("valid study");
        let html = report_html(&analysis, &context());
        assert!(html.contains("<tr class=\"baseline\"><td>random <span class=\"tag\">baseline"));
        assert!(html.contains("<tr class=\"better\"><td>good <span class=\"tag\">★ better"));
    }

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(number(0.182345), "0.1823");
        assert_eq!(number(12.5), "12.50");
        assert_eq!(number(0.00123456), "0.001235");
        assert_eq!(number(0.0), "0");
        assert_eq!(p_value(0.0312), "0.0312");
        assert_eq!(p_value(2.5e-7), "2.5e-7");
        assert_eq!(p_value(0.0), "0.0000");
    }

    /// Saturating curves with seed noise: uncertainty clearly ahead of random, coreset
    /// close to it; 5 seeds, 10 rounds of 200 labels after 500.
    fn sample_runs() -> Vec<RunCurve> {
        let arms = [
            ("random", 0.20, 0.0),
            ("uncertainty", 0.26, 0.02),
            ("coreset", 0.21, 0.0),
        ];
        let mut runs = Vec::new();
        for (a, (arm, gain, rmse_gain)) in arms.into_iter().enumerate() {
            for seed in 0..5u64 {
                // A fixed pseudo-random offset in [-0.5, 0.5) per (arm, seed, round): a seed
                // effect shared by the run's rounds plus a little per-round jitter.
                let uniform = |key: u64| {
                    let mut z = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    (z ^ (z >> 31)) as f64 / u64::MAX as f64 - 0.5
                };
                let key = ((a as u64) << 40) | (seed << 20);
                let noise = |round: u64| 0.8 * uniform(key) + 0.2 * uniform(key | (round + 1));
                let rounds = (0..10u32)
                    .map(|round| {
                        let progress = 1.0 - (-f64::from(round) / 3.0).exp();
                        let ndcg = 0.05 + gain * progress * (1.0 + 0.15 * noise(u64::from(round)));
                        let rmse = 1.05
                            - (0.12 + rmse_gain)
                                * progress
                                * (1.0 + 0.2 * noise(u64::from(round) + 99));
                        RoundRecord {
                            round,
                            labelled: 500 + 200 * u64::from(round),
                            selected: if round == 0 { 0 } else { 200 },
                            rescored: 0,
                            metrics: vec![("rmse".into(), rmse), ("ndcg@10".into(), ndcg)],
                            timings_ms: Vec::new(),
                        }
                    })
                    .collect();
                runs.push(RunCurve {
                    arm: arm.into(),
                    seed,
                    rounds,
                });
            }
        }
        runs
    }

    /// Writes a sample `report.html`, `learning_curves.svg` and `study.json` into the folder
    /// named by `RECSIFT_STUDY_SAMPLE_DIR`, for `scripts/check-report.sh`:
    ///
    /// ```text
    /// RECSIFT_STUDY_SAMPLE_DIR=/tmp/study cargo test --release --lib sample_report -- --ignored
    /// scripts/check-report.sh /tmp/study/report.html /tmp/study/report.png
    /// ```
    #[test]
    #[ignore = "writes files for a person to look at"]
    fn sample_report() {
        let Ok(dir) = std::env::var("RECSIFT_STUDY_SAMPLE_DIR") else {
            panic!("set RECSIFT_STUDY_SAMPLE_DIR to the folder to write to");
        };
        let analysis = analyse(&sample_runs(), "random").expect("valid study");
        let context = ReportContext {
            title: "Study: strategies on synthetic ratings".into(),
            plan: "name: sample\nstudy:\n  arms: [random, uncertainty, coreset]\n  \
                   seeds: [0, 1, 2, 3, 4]\n  baseline: random\n"
                .into(),
            command_line: "recsift study pipelines/sample-study.yaml".into(),
            versions: vec![
                ("recsift".into(), env!("CARGO_PKG_VERSION").into()),
                ("data".into(), "synthetic (unit test)".into()),
            ],
        };
        let dir = std::path::Path::new(&dir);
        let json = serde_json::to_string_pretty(&analysis).expect("serialise");
        for (name, text) in [
            ("report.html", report_html(&analysis, &context)),
            ("learning_curves.svg", learning_curves_svg(&analysis)),
            ("study.json", json),
        ] {
            std::fs::write(dir.join(name), text).expect("write the sample");
        }
    }
}
