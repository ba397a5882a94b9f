//! Per-operator latency histograms (hdrhistogram), per round and over the whole run, for
//! `<out>/latency.json`.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles of one histogram, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Recorded values.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest value.
    pub max_ms: f64,
    /// Sum of all values.
    pub total_ms: f64,
}

/// Latency histograms keyed by operator name (`score`, `select`, `train`, `embed`, `io`).
#[derive(Clone, Debug, Default)]
pub struct LatencyRecorder {
    histograms: BTreeMap<String, (Histogram<u64>, f64)>,
}

impl LatencyRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one duration of `operator` (microsecond resolution, up to an hour).
    pub fn record(&mut self, operator: &str, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let (histogram, total) = self
            .histograms
            .entry(operator.to_string())
            .or_insert_with(|| {
                (
                    Histogram::new_with_bounds(1, 3_600_000_000, 3)
                        .expect("valid histogram bounds"),
                    0.0,
                )
            });
        histogram.saturating_record(micros);
        *total += elapsed.as_secs_f64() * 1e3;
    }

    /// Percentiles per operator.
    pub fn summary(&self) -> BTreeMap<String, LatencySummary> {
        self.histograms
            .iter()
            .map(|(name, (h, total))| {
                let ms = |v: u64| v as f64 / 1e3;
                let summary = LatencySummary {
                    count: h.len(),
                    p50_ms: ms(h.value_at_quantile(0.5)),
                    p90_ms: ms(h.value_at_quantile(0.9)),
                    p99_ms: ms(h.value_at_quantile(0.99)),
                    max_ms: ms(h.max()),
                    total_ms: *total,
                };
                (name.clone(), summary)
            })
            .collect()
    }

    /// Adds every value recorded in `other`.
    pub fn merge(&mut self, other: &LatencyRecorder) {
        for (name, (h, total)) in &other.histograms {
            match self.histograms.get_mut(name) {
                Some((mine, my_total)) => {
                    mine.add(h).expect("histograms with equal bounds");
                    *my_total += total;
                }
                None => {
                    self.histograms.insert(name.clone(), (h.clone(), *total));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_recorded_values() {
        let mut rec = LatencyRecorder::new();
        for ms in 1..=100u64 {
            rec.record("score", Duration::from_millis(ms));
        }
        let s = &rec.summary()["score"];
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
        assert!((s.total_ms - 5050.0).abs() < 1e-6);
    }

    #[test]
    fn merging_adds_counts() {
        let mut a = LatencyRecorder::new();
        let mut b = LatencyRecorder::new();
        a.record("train", Duration::from_millis(5));
        b.record("train", Duration::from_millis(7));
        b.record("io", Duration::from_millis(1));
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s["train"].count, 2);
        assert_eq!(s["io"].count, 1);
    }
}
