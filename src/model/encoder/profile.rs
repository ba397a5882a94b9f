//! Where an encoding call spends its time, stage by stage (for benchmarks and profiles).

use serde::Serialize;

/// Seconds spent per stage of [`super::TextEncoder::encode_profiled`].
///
/// `tokenize` and `total` are wall-clock time; the model stages are measured inside each
/// worker thread and summed over threads (CPU seconds), so with two busy threads they add
/// up to about twice the wall time of the forward passes. The GPU path fills in only
/// `tokenize`, `forward` and `total`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StageTimes {
    /// Turning texts into token ids (wall clock).
    pub tokenize: f64,
    /// Embedding lookup and its layer norm.
    pub embeddings: f64,
    /// The fused query/key/value product.
    pub qkv: f64,
    /// Softmax attention.
    pub attention: f64,
    /// The attention output product.
    pub attn_out: f64,
    /// Residual additions and layer norms after attention and feed-forward.
    pub layer_norm: f64,
    /// The feed-forward up-projection product.
    pub ffn_up: f64,
    /// The feed-forward activation (GELU).
    pub activation: f64,
    /// The feed-forward down-projection product.
    pub ffn_down: f64,
    /// Mean pooling and L2 normalisation.
    pub pooling: f64,
    /// The whole model forward where stages are not measured separately (GPU path).
    pub forward: f64,
    /// The whole call (wall clock).
    pub total: f64,
}

impl StageTimes {
    /// Add every stage of `other` to this one.
    pub fn add(&mut self, other: &StageTimes) {
        self.tokenize += other.tokenize;
        self.embeddings += other.embeddings;
        self.qkv += other.qkv;
        self.attention += other.attention;
        self.attn_out += other.attn_out;
        self.layer_norm += other.layer_norm;
        self.ffn_up += other.ffn_up;
        self.activation += other.activation;
        self.ffn_down += other.ffn_down;
        self.pooling += other.pooling;
        self.forward += other.forward;
        self.total += other.total;
    }

    /// The model stages as `(name, seconds)`, in pipeline order.
    pub fn model_stages(&self) -> [(&'static str, f64); 10] {
        [
            ("embeddings", self.embeddings),
            ("qkv", self.qkv),
            ("attention", self.attention),
            ("attn_out", self.attn_out),
            ("layer_norm", self.layer_norm),
            ("ffn_up", self.ffn_up),
            ("activation", self.activation),
            ("ffn_down", self.ffn_down),
            ("pooling", self.pooling),
            ("forward", self.forward),
        ]
    }
}
