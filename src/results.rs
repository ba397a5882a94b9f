//! What an experiment produces, independent of file formats: one record per round and one
//! per selected sample. `io::results` writes them as Parquet; the driver fills them.

use crate::data::RawId;

/// The metric holding a round's training loss (the mean loss of the last epoch over the
/// labels the model trained on). With several train nodes each reports its own, as
/// `<node>/train_loss`.
pub const TRAIN_LOSS: &str = "train_loss";

/// Whether `metric` is a training loss ([`TRAIN_LOSS`] or `<node>/train_loss`): it measures
/// the fit to a run's own labels, so it is neither compared across runs nor shown with the
/// test metrics.
pub fn is_train_loss(metric: &str) -> bool {
    metric == TRAIN_LOSS
        || metric
            .strip_suffix(TRAIN_LOSS)
            .is_some_and(|node| node.ends_with('/'))
}

/// One round of an experiment (round 0 is the model trained on the initial labels).
#[derive(Clone, Debug, PartialEq)]
pub struct RoundRecord {
    /// Round number, from 0.
    pub round: u32,
    /// Labelled samples the model was trained on after this round's selection.
    pub labelled: u64,
    /// Samples selected this round (0 in round 0).
    pub selected: u64,
    /// Samples whose score the engine (re-)computed this round.
    pub rescored: u64,
    /// Metric name (`rmse`, `ndcg@10`, ...) and value, in the pipeline's order. A metric that
    /// has no value this round (e.g. no cold items in the test set) is `NaN`.
    pub metrics: Vec<(String, f64)>,
    /// Stage name (`score`, `select`, `train`, `evaluate`) and its wall time in milliseconds.
    pub timings_ms: Vec<(String, f64)>,
}

impl RoundRecord {
    /// Records the passes early stopping chose for the initial fit (as the metric
    /// `early_stopping_epochs`), when it ran.
    pub fn note_early_stopping(&mut self, epochs: Option<usize>) {
        if let Some(epochs) = epochs {
            self.metrics
                .push(("early_stopping_epochs".into(), epochs as f64));
        }
    }
}

/// One sample a strategy selected.
#[derive(Clone, Debug, PartialEq)]
pub struct SelectionRecord {
    /// Round in which it was selected (from 1).
    pub round: u32,
    /// The sample's index in the experiment's event table.
    pub sample: u32,
    /// The user, as the source file wrote it.
    pub user_id: RawId,
    /// The item, as the source file wrote it.
    pub item_id: RawId,
    /// The strategy's score for it (higher was picked first).
    pub score: f64,
}

/// One entry of a user's top-K list (`recommendations.parquet`).
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    /// The round whose model made the list.
    pub round: u32,
    /// The user, as the source file wrote it.
    pub user_id: RawId,
    /// Position in the list, from 1.
    pub rank: u32,
    /// The item, as the source file wrote it.
    pub item_id: RawId,
    /// The ranking score (the members' mean raw score; see `driver::evaluation`).
    pub score: f32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FitReport;

    #[test]
    fn training_losses_are_named_per_train_node_when_there_are_several() {
        for name in ["train_loss", "mf_model/train_loss", "a/b/train_loss"] {
            assert!(is_train_loss(name), "{name}");
        }
        for name in [
            "rmse",
            "mf_report/rmse",
            "mytrain_loss",
            "train_loss/rmse",
            "/x",
        ] {
            assert!(!is_train_loss(name), "{name}");
        }
        let one = FitReport {
            last_epoch_loss: 0.5,
            ..FitReport::default()
        };
        assert_eq!(one.loss_metrics(), [("train_loss".to_string(), 0.5)]);
        let several = FitReport {
            last_epoch_loss: 0.5,
            node_losses: vec![("mf".into(), 0.25), ("text".into(), 0.75)],
            ..FitReport::default()
        };
        assert_eq!(
            several.loss_metrics(),
            [
                ("mf/train_loss".to_string(), 0.25),
                ("text/train_loss".to_string(), 0.75)
            ]
        );
        assert!(several.loss_metrics().iter().all(|(n, _)| is_train_loss(n)));
    }
}
