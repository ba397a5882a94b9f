//! `learning_curves.svg` of a study: one panel per metric, one line per arm (its mean over
//! seeds against the mean labels of each round) inside a shaded mean ± std band.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::analysis::{MetricAnalysis, StudyAnalysis};
use super::curves::CurvePoint;
use crate::report::{PanelGrid, axis_range};

/// Opacity of an arm's mean ± std band.
const BAND_OPACITY: f64 = 0.2;

/// Arm colours, in the order of the study's arms (Tableau 10: distinct, none too pale on
/// white); they repeat past ten arms.
const ARM_COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The study's learning curves as an SVG document.
pub fn learning_curves_svg(analysis: &StudyAnalysis) -> String {
    let grid = PanelGrid::for_panels(analysis.metrics.len());
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (grid.width, grid.height)).into_drawing_area();
        // Drawing into a String cannot fail for I/O reasons; errors only come from
        // degenerate ranges, which `axis_range` rules out.
        let _ = draw(&root, analysis, &grid);
        let _ = root.present();
    }
    svg
}

/// Draws the title and a panel per metric.
fn draw(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    analysis: &StudyAnalysis,
    grid: &PanelGrid,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let root = root.titled("Learning curves: mean ± std over seeds", ("sans-serif", 22))?;
    let panels = root.split_evenly((grid.rows, grid.columns));
    for (metric, panel) in analysis.metrics.iter().zip(panels.iter()) {
        draw_panel(panel, metric)?;
    }
    Ok(())
}

/// One metric's panel: every arm's band, line and points, and a legend.
fn draw_panel(
    panel: &DrawingArea<SVGBackend<'_>, Shift>,
    metric: &MetricAnalysis,
) -> Result<(), Box<dyn std::error::Error>> {
    let points = metric.arms.iter().flat_map(|a| &a.curve);
    let (x0, x1) = axis_range(points.clone().map(|p| p.labels));
    let (y0, y1) = axis_range(points.flat_map(|p| {
        let (low, high) = band(p);
        [low, high]
    }));
    let direction = if metric.lower_is_better {
        "lower is better"
    } else {
        "higher is better"
    };
    let mut chart = ChartBuilder::on(panel)
        .caption(
            format!("{} ({direction})", metric.metric),
            ("sans-serif", 18),
        )
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
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .x_desc("labels used")
        .y_desc(metric.metric.as_str())
        .draw()?;
    for (n, arm) in metric.arms.iter().enumerate() {
        let color = ARM_COLOURS[n % ARM_COLOURS.len()].to_rgba();
        let upper = arm.curve.iter().map(|p| (p.labels, band(p).1));
        let lower = arm.curve.iter().rev().map(|p| (p.labels, band(p).0));
        chart.draw_series(std::iter::once(Polygon::new(
            upper.chain(lower).collect::<Vec<_>>(),
            color.mix(BAND_OPACITY).filled(),
        )))?;
        let line: Vec<(f64, f64)> = arm.curve.iter().map(|p| (p.labels, p.mean)).collect();
        let label = if arm.is_baseline {
            format!("{} (baseline)", arm.arm)
        } else {
            arm.arm.clone()
        };
        chart
            .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart.draw_series(line.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(if metric.lower_is_better {
            SeriesLabelPosition::UpperRight
        } else {
            SeriesLabelPosition::LowerRight
        })
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// `(mean - std, mean + std)` of a point; just the mean where a single run gives no std.
fn band(point: &CurvePoint) -> (f64, f64) {
    let std = point.std.unwrap_or(0.0);
    (point.mean - std, point.mean + std)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::analysis::{analyse, tests::run};

    #[test]
    fn svg_has_a_panel_per_metric_and_a_band_and_line_per_arm() {
        let runs = [
            run("random", 1, 0.1, 0.02, 4),
            run("random", 2, 0.12, 0.02, 4),
            run("coreset", 1, 0.1, 0.03, 4),
            run("coreset", 2, 0.11, 0.03, 4),
        ];
        let analysis = analyse(&runs, "random").expect("valid study");
        let svg = learning_curves_svg(&analysis);
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("ndcg@10 (higher is better)"));
        assert!(svg.contains("rmse (lower is better)"));
        assert!(svg.contains("random (baseline)"));
        // Two metrics x two arms: four bands, four points per line.
        assert_eq!(svg.matches("<polygon").count(), 4);
        assert_eq!(svg.matches("<circle").count(), 16);
    }
}
