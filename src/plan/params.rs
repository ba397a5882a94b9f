//! Resolved parameters: what each part of the engine receives once a pipeline is validated.
//!
//! These are plain data with every default filled in. The spec layer produces them; the
//! I/O, model and driver layers consume them. They do not know YAML, timely or candle.

use std::path::PathBuf;

use serde::Serialize;

use crate::data::LabelKind;
use crate::scoring::Loss;

/// Where the logged events live and how their columns map onto recsift's fields.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventSource {
    /// Parquet file of events (absolute, resolved against the pipeline file).
    pub path: PathBuf,
    /// Column names in that file.
    pub columns: EventColumns,
    /// What the label column holds.
    pub label_kind: LabelKind,
}

/// Names of the event columns in a Parquet file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventColumns {
    /// User id column (any integer type, or UTF-8).
    pub user: String,
    /// Item id column (any integer type, or UTF-8).
    pub item: String,
    /// Label column (any numeric type; ratings or 0/1 clicks).
    pub label: String,
    /// Timestamp column (integer seconds, or an Arrow timestamp).
    pub time: String,
}

impl Default for EventColumns {
    fn default() -> Self {
        Self {
            user: "user_id".into(),
            item: "item_id".into(),
            label: "rating".into(),
            time: "timestamp".into(),
        }
    }
}

/// Where item text lives and how to render it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ItemSource {
    /// Parquet file with one row per item.
    pub path: PathBuf,
    /// The item id column (same ids as the events' item column).
    pub id_column: String,
    /// Text template over the file's columns, e.g. `"{title} | {genres}"`. A list column
    /// renders its elements joined by spaces.
    pub text_template: String,
}

/// Which device candle runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// The CPU (default).
    Cpu,
    /// An NVIDIA GPU by ordinal; needs the `cuda` cargo feature.
    Cuda(usize),
}

impl DeviceChoice {
    /// The device a pipeline's `device:` or a `--device` flag names: `cpu`, `cuda` (the
    /// first GPU) or `cuda:N`; `None` for anything else.
    pub fn parse(text: &str) -> Option<DeviceChoice> {
        match text {
            "cpu" => Some(DeviceChoice::Cpu),
            "cuda" => Some(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Gradient-descent optimiser and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerParams {
    /// Plain SGD on the summed batch loss, with L2 weight decay on the rows it touches.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// L2 regularisation applied to the touched rows.
        weight_decay: f64,
    },
    /// Adam with per-row ("lazy") moments: only the rows of a batch are updated.
    Adam {
        /// Learning rate.
        lr: f64,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator epsilon.
        eps: f64,
        /// L2 regularisation of the touched rows, added to each sample's gradient as for SGD
        /// (coupled, not AdamW's decoupled decay: see `model::optim`).
        weight_decay: f64,
    },
}

/// Which recommender to train.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Biased matrix factorisation: global mean + user/item bias + dot of factors.
    Mf {
        /// Factor dimension.
        dim: usize,
        /// Standard deviation of the normal initialisation of factors.
        init_std: f64,
    },
    /// Biased MF whose item row is a free row plus a learned linear projection of the
    /// item's text embedding, so an item without ratings is scored from its text alone.
    TextMf {
        /// Factor dimension.
        dim: usize,
        /// Standard deviation of the normal initialisation of user factors (free item rows
        /// and the projection start at zero).
        init_std: f64,
        /// Fine-tuning of the encoder's top layers, if asked for (else it is frozen).
        #[serde(skip_serializing_if = "Option::is_none")]
        tune: Option<EncoderTuning>,
    },
    /// Two MLP towers with dropout: a user tower over a user ID embedding and an item tower
    /// over an item ID embedding concatenated with the item's text embedding; the score is
    /// the dot product of their outputs plus biases.
    TwoTower {
        /// Length of the ID embeddings and of each tower's output vector.
        dim: usize,
        /// Width of each tower's hidden layer.
        hidden: usize,
        /// Probability of dropping a hidden unit, in `[0, 1)`.
        dropout: f64,
        /// Standard deviation of the normal initialisation of user ID embeddings (item ID
        /// embeddings start at zero).
        init_std: f64,
        /// Fine-tuning of the encoder's top layers, if asked for (else it is frozen).
        #[serde(skip_serializing_if = "Option::is_none")]
        tune: Option<EncoderTuning>,
    },
}

impl ModelKind {
    /// The model family's name, as in the pipeline YAML.
    pub fn name(&self) -> &'static str {
        match self {
            ModelKind::Mf { .. } => "mf",
            ModelKind::TextMf { .. } => "text_mf",
            ModelKind::TwoTower { .. } => "two_tower",
        }
    }

    /// The fine-tuning of the encoder it asks for (`tune:`), if any.
    pub fn tuning(&self) -> Option<EncoderTuning> {
        match self {
            ModelKind::Mf { .. } => None,
            ModelKind::TextMf { tune, .. } | ModelKind::TwoTower { tune, .. } => *tune,
        }
    }
}

/// Fine-tuning of the text encoder's top layers with a recommender's loss.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct EncoderTuning {
    /// Top transformer layers trained.
    pub layers: usize,
    /// Low-rank adapters trained in those layers instead of their own weights (`None`:
    /// every weight of the layers trains).
    pub lora: Option<LoraAdapters>,
    /// Adam's learning rate for them.
    pub lr: f64,
    /// Most items back-propagated through them per gradient step.
    pub items_per_step: usize,
}

/// LoRA (Hu et al. 2021, arXiv:2106.09685): each tuned layer's attention query and value
/// projections `W` (`[out, in]`) become `W + (alpha / rank) B A`, with `A` (`[rank, in]`)
/// and `B` (`[out, rank]`) trained and `W` held fixed. `B` starts at zero, so training
/// starts from the pretrained encoder.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LoraAdapters {
    /// The rank `r`.
    pub rank: usize,
    /// The scale numerator `alpha`.
    pub alpha: f64,
}

/// Which rows a round's training pass visits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefitPolicy {
    /// Fine-tune on the labels revealed this round only: touches only their rows, so the
    /// incremental engine re-scores only the samples sharing a user or item with them.
    NewLabels,
    /// Train over every labelled sample: touches most rows.
    AllLabels,
    /// The round's new labels plus a seeded sample of `ratio` times as many earlier labels
    /// (rehearsal): rounds stay cheap and incremental, but the model keeps seeing the old
    /// labels instead of drifting towards whatever the strategy picked last.
    Rehearsal {
        /// Earlier labels per new label.
        ratio: usize,
    },
}

impl std::fmt::Display for RefitPolicy {
    /// The policy as written in the pipeline (`rehearsal` with its ratio).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefitPolicy::NewLabels => f.write_str("new_labels"),
            RefitPolicy::AllLabels => f.write_str("all_labels"),
            RefitPolicy::Rehearsal { ratio } => write!(f, "rehearsal (rehearsal: {ratio})"),
        }
    }
}

/// How the model expresses uncertainty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UncertaintyParams {
    /// `members` models, each trained on its own Poisson(1) bootstrap of the labels.
    Ensemble {
        /// Number of members (1 means no uncertainty).
        members: usize,
    },
    /// Monte Carlo dropout: `passes` forward passes of one model, each with its own fixed
    /// dropout masks (needs a model with dropout).
    McDropout {
        /// Number of passes.
        passes: usize,
    },
}

impl UncertaintyParams {
    /// Number of predictions per sample the scoring rows hold.
    pub fn members(&self) -> usize {
        match self {
            UncertaintyParams::Ensemble { members } => *members,
            UncertaintyParams::McDropout { passes } => *passes,
        }
    }
}

/// Everything a trainer needs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainParams {
    /// The model family and its shape.
    pub model: ModelKind,
    /// How uncertainty is obtained.
    pub uncertainty: UncertaintyParams,
    /// The objective (default: [`Loss::default_for`] the label kind).
    pub loss: Loss,
    /// The optimiser.
    pub optimizer: OptimizerParams,
    /// Passes over the initially labelled set before round 1.
    pub epochs: usize,
    /// Passes per round after new labels arrive.
    pub epochs_per_round: usize,
    /// Which samples a round's passes visit.
    pub refit: RefitPolicy,
    /// Samples per gradient step.
    pub batch_size: usize,
    /// The device candle runs on.
    pub device: DeviceChoice,
    /// Seed for initialisation, shuffling and bootstrap weights.
    pub seed: u64,
}

/// Early stopping of the initial fit (written under the train node; the driver runs it, the
/// model only trains the epochs it is asked for).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct EarlyStopping {
    /// The validation metric watched (its name without the `val_` prefix).
    #[serde(serialize_with = "serialize_display")]
    pub metric: crate::metrics::Metric,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Most epochs to run.
    pub max_epochs: usize,
}

fn serialize_display<S: serde::Serializer>(
    value: &impl std::fmt::Display,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

#[cfg(test)]
mod tests {
    use super::DeviceChoice;

    #[test]
    fn devices_parse_from_their_names_and_print_back() {
        assert_eq!(DeviceChoice::parse("cpu"), Some(DeviceChoice::Cpu));
        assert_eq!(DeviceChoice::parse("cuda"), Some(DeviceChoice::Cuda(0)));
        assert_eq!(DeviceChoice::parse("cuda:3"), Some(DeviceChoice::Cuda(3)));
        for bad in ["gpu", "CUDA", "cuda:", "cuda:-1", "cuda:x", " cpu"] {
            assert_eq!(DeviceChoice::parse(bad), None, "{bad}");
        }
        assert_eq!(DeviceChoice::Cpu.to_string(), "cpu");
        assert_eq!(DeviceChoice::Cuda(0).to_string(), "cuda:0");
        assert_eq!(
            DeviceChoice::parse("cuda:2")
                .map(|d| d.to_string())
                .as_deref(),
            Some("cuda:2")
        );
    }
}
