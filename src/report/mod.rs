//! Plots a person can look at: learning curves (each metric against the number of labels)
//! as SVG, one panel per metric, one line per run.

use plotters::prelude::*;

use crate::results::{RoundRecord, is_train_loss};

/// One run's curve: a label and its round records.
pub struct Curve<'a> {
    /// Legend label.
    pub label: &'a str,
    /// Round records, in round order.
    pub rounds: &'a [RoundRecord],
}

/// `learning_curve.svg` for one run: `(file name, bytes)` pairs to write.
pub fn learning_curves(name: &str, rounds: &[RoundRecord]) -> Vec<(String, Vec<u8>)> {
    let svg = compare_svg(
        name,
        &[Curve {
            label: name,
            rounds,
        }],
    );
    vec![("learning_curve.svg".to_string(), svg.into_bytes())]
}

/// An SVG with a panel per metric comparing `curves` (metrics against labels used).
pub fn compare_svg(title: &str, curves: &[Curve<'_>]) -> String {
    let metrics = metric_names(curves);
    let PanelGrid {
        rows,
        columns,
        width,
        height,
    } = PanelGrid::for_panels(metrics.len());
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        // Drawing into a String cannot fail for I/O reasons; errors only come from
        // degenerate ranges, which `axis_range` rules out.
        let _ = draw(&root, title, curves, &metrics, rows, columns);
        let _ = root.present();
    }
    svg
}

fn draw(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    curves: &[Curve<'_>],
    metrics: &[String],
    rows: usize,
    columns: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let panels = root.split_evenly((rows, columns));
    for (metric, panel) in metrics.iter().zip(panels.iter()) {
        let series: Vec<Vec<(f64, f64)>> = curves
            .iter()
            .map(|c| {
                c.rounds
                    .iter()
                    .filter_map(|r| {
                        let value = r.metrics.iter().find(|(n, _)| n == metric)?.1;
                        value.is_finite().then_some((r.labelled as f64, value))
                    })
                    .collect()
            })
            .collect();
        let all: Vec<(f64, f64)> = series.iter().flatten().copied().collect();
        let (x0, x1) = axis_range(all.iter().map(|p| p.0));
        let (y0, y1) = axis_range(all.iter().map(|p| p.1));
        let mut chart = ChartBuilder::on(panel)
            .caption(metric, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .max_light_lines(0)
            .x_labels(6)
            .y_labels(6)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .x_desc("labels used")
            .y_desc(metric.as_str())
            .draw()?;
        for (n, (curve, points)) in curves.iter().zip(&series).enumerate() {
            let color = Palette99::pick(n).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(curve.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
        }
        if curves.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
    }
    Ok(())
}

/// Metric names in first-seen order, without the training loss.
fn metric_names(curves: &[Curve<'_>]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for record in curves.iter().flat_map(|c| c.rounds) {
        for (name, _) in &record.metrics {
            if !is_train_loss(name) && !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
}

/// The layout of a figure with one panel per metric: two columns (one for a single panel),
/// 520 x 360 pixels a panel and 40 for the title.
pub(crate) struct PanelGrid {
    /// Rows of panels.
    pub rows: usize,
    /// Columns of panels.
    pub columns: usize,
    /// Figure width in pixels.
    pub width: u32,
    /// Figure height in pixels.
    pub height: u32,
}

impl PanelGrid {
    /// The grid for `panels` panels (at least one cell).
    pub fn for_panels(panels: usize) -> Self {
        let columns = 2.min(panels.max(1));
        let rows = panels.div_ceil(columns).max(1);
        Self {
            rows,
            columns,
            width: 520 * columns as u32,
            height: 360 * rows as u32 + 40,
        }
    }
}

/// A padded, non-degenerate range covering `values`.
pub(crate) fn axis_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6 * hi.abs().max(1.0));
    (lo - pad, hi + pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(round: u32, labelled: u64, rmse: f64) -> RoundRecord {
        RoundRecord {
            round,
            labelled,
            selected: 0,
            rescored: 0,
            metrics: vec![("rmse".into(), rmse), ("ndcg@10".into(), f64::NAN)],
            timings_ms: Vec::new(),
        }
    }

    #[test]
    fn svg_has_a_panel_per_metric_and_the_points() {
        let rounds = [record(0, 100, 1.0), record(1, 200, 0.9)];
        let svg = compare_svg(
            "t",
            &[Curve {
                label: "a",
                rounds: &rounds,
            }],
        );
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("\nrmse\n"));
        assert!(svg.contains("\nndcg@10\n"));
        assert_eq!(svg.matches("<circle").count(), 2);
    }
}
