//! What can go wrong while finding, loading or running a text encoder.

use std::path::PathBuf;

/// Errors of the text encoder; each says which file or model it is about and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// The model folder was found nowhere; the message lists every place looked at and
    /// how to provide the folder.
    #[error("{message}")]
    NotFound {
        /// The full explanation.
        message: String,
    },
    /// A model name that cannot be a Hugging Face model id (`ORG/NAME` or `NAME`).
    #[error(
        "model name {name:?} is not a Hugging Face model id like \
         `sentence-transformers/all-MiniLM-L6-v2`: {reason}"
    )]
    BadModelName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The folder exists but lacks files an encoder needs.
    #[error(
        "model folder {} lacks {}: an encoder folder needs config.json, tokenizer.json and \
         model.safetensors (as in a Hugging Face snapshot of a sentence-transformers model; \
         PyTorch-only pytorch_model.bin weights are not read)",
        dir.display(), missing.join(", ")
    )]
    MissingFiles {
        /// The folder.
        dir: PathBuf,
        /// The required files it lacks.
        missing: Vec<&'static str>,
    },
    /// A JSON configuration file could not be read or parsed.
    #[error("cannot read {}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The configuration describes a model this encoder does not implement.
    #[error("{}: unsupported model: {message}", path.display())]
    Unsupported {
        /// The file that says so.
        path: PathBuf,
        /// What is unsupported.
        message: String,
    },
    /// `tokenizer.json` could not be loaded.
    #[error("cannot load tokenizer {}: {message}", path.display())]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The weights file could not be read, or a tensor is missing or has the wrong shape.
    #[error("cannot load weights {}: {message}", path.display())]
    Weights {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Tokenising the input texts failed.
    #[error("tokenising the texts failed: {message}")]
    Tokenize {
        /// What went wrong.
        message: String,
    },
}
