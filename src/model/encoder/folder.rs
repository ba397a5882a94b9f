//! The files of a sentence-transformers model folder and what the encoder reads from them.
//!
//! Required: `config.json` (the BERT architecture), `tokenizer.json`, `model.safetensors`.
//! Optional sentence-transformers metadata: `sentence_bert_config.json` (its
//! `max_seq_length`, default 256) and the pooling module's `config.json` (found through
//! `modules.json`), which must ask for mean pooling when present.

use std::path::{Path, PathBuf};

use candle_transformers::models::bert::Config;
use serde::Deserialize;

use super::error::EncoderError;

/// Files an encoder folder must have.
pub const REQUIRED_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// Maximum sequence length when the folder does not say (sentence-transformers' value for
/// the MiniLM family).
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// The required files `dir` lacks (empty when it is a usable model folder).
pub fn missing_files(dir: &Path) -> Vec<&'static str> {
    REQUIRED_FILES
        .into_iter()
        .filter(|file| !dir.join(file).is_file())
        .collect()
}

/// Fails unless `dir` has every one of the [`REQUIRED_FILES`].
fn require_files(dir: &Path) -> Result<(), EncoderError> {
    let missing = missing_files(dir);
    if missing.is_empty() {
        return Ok(());
    }
    Err(EncoderError::MissingFiles {
        dir: dir.to_path_buf(),
        missing,
    })
}

/// Hex digits of [`folder_digest`] kept: 64 bits, enough to tell weights apart.
const DIGEST_HEX: usize = 16;

/// A short digest (SHA-256, first 16 hex digits) of the [`REQUIRED_FILES`] of the model
/// folder `dir`: the weights, configuration and tokenizer that determine its vectors.
/// Reads the files once (90 MB for all-MiniLM-L6-v2), streaming them.
pub fn folder_digest(dir: &Path) -> Result<String, EncoderError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;

    require_files(dir)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for name in REQUIRED_FILES {
        let path = dir.join(name);
        let unreadable = |e: std::io::Error| EncoderError::Weights {
            path: path.clone(),
            message: e.to_string(),
        };
        let mut file = std::fs::File::open(&path).map_err(unreadable)?;
        hasher.update(name.as_bytes());
        hasher.update(file.metadata().map_err(unreadable)?.len().to_le_bytes());
        loop {
            let read = file.read(&mut buffer).map_err(unreadable)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(hex[..DIGEST_HEX].to_string())
}

/// What the encoder knows about a model folder once its configuration is read.
#[derive(Debug)]
pub struct ModelFolder {
    /// The folder.
    pub dir: PathBuf,
    /// The BERT architecture from `config.json`.
    pub config: Config,
    /// Longest token sequence (special tokens included); longer texts are truncated.
    pub max_tokens: usize,
}

impl ModelFolder {
    /// `dir/config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// `dir/tokenizer.json`.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }

    /// `dir/model.safetensors`.
    pub fn weights_path(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }

    /// Check that `dir` has the required files and read its configuration.
    pub fn open(dir: &Path) -> Result<Self, EncoderError> {
        require_files(dir)?;
        let config_path = dir.join("config.json");
        let config: Config = read_json(&config_path)?;
        if let Some(model_type) = &config.model_type
            && model_type != "bert"
        {
            return Err(EncoderError::Unsupported {
                path: config_path,
                message: format!(
                    "model_type is {model_type:?}; this encoder runs BERT models \
                     (model_type \"bert\", e.g. sentence-transformers/all-MiniLM-L6-v2)"
                ),
            });
        }
        check_pooling(dir)?;
        let max_tokens = read_max_tokens(dir)?.min(config.max_position_embeddings);
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            max_tokens,
        })
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, EncoderError> {
    let error = |message: String| EncoderError::Config {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| error(e.to_string()))
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

/// `max_seq_length` from `sentence_bert_config.json`, or [`DEFAULT_MAX_TOKENS`].
fn read_max_tokens(dir: &Path) -> Result<usize, EncoderError> {
    let path = dir.join("sentence_bert_config.json");
    if !path.is_file() {
        return Ok(DEFAULT_MAX_TOKENS);
    }
    let config: SentenceBertConfig = read_json(&path)?;
    match config.max_seq_length {
        Some(0) => Err(EncoderError::Unsupported {
            path,
            message: "max_seq_length is 0".into(),
        }),
        Some(n) => Ok(n),
        None => Ok(DEFAULT_MAX_TOKENS),
    }
}

#[derive(Deserialize)]
struct ModuleEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

/// When `modules.json` names a pooling module, its configuration must ask for mean
/// pooling, the only pooling implemented.
fn check_pooling(dir: &Path) -> Result<(), EncoderError> {
    let modules_path = dir.join("modules.json");
    if !modules_path.is_file() {
        return Ok(());
    }
    let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
    for module in modules.iter().filter(|m| m.kind.ends_with(".Pooling")) {
        let path = dir.join(&module.path).join("config.json");
        if !path.is_file() {
            continue;
        }
        let pooling: PoolingConfig = read_json(&path)?;
        if !pooling.pooling_mode_mean_tokens {
            return Err(EncoderError::Unsupported {
                path,
                message: "the model pools by something other than the mean of its tokens; \
                          only mean pooling (pooling_mode_mean_tokens) is implemented"
                    .into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "max_position_embeddings": 64, "type_vocab_size": 2,
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0}"#;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    fn required(config: &str) -> Vec<(&'static str, String)> {
        vec![
            ("config.json", config.to_string()),
            ("tokenizer.json", "{}".into()),
            ("model.safetensors", String::new()),
        ]
    }

    fn open(files: &[(&str, String)]) -> Result<ModelFolder, EncoderError> {
        let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        let dir = folder(&files);
        ModelFolder::open(dir.path())
    }

    #[test]
    fn missing_files_are_named_in_the_error() {
        let dir = folder(&[("config.json", CONFIG)]);
        let err = ModelFolder::open(dir.path()).expect_err("must fail");
        assert_eq!(
            err.to_string(),
            format!(
                "model folder {} lacks tokenizer.json, model.safetensors: an encoder folder \
                 needs config.json, tokenizer.json and model.safetensors (as in a Hugging Face \
                 snapshot of a sentence-transformers model; PyTorch-only pytorch_model.bin \
                 weights are not read)",
                dir.path().display()
            )
        );
    }

    #[test]
    fn max_tokens_comes_from_sentence_bert_config_capped_by_positions() {
        assert_eq!(open(&required(CONFIG)).expect("open").max_tokens, 64);
        let mut files = required(CONFIG);
        files.push((
            "sentence_bert_config.json",
            r#"{"max_seq_length": 12}"#.into(),
        ));
        assert_eq!(open(&files).expect("open").max_tokens, 12);
        let big = CONFIG.replace(
            "\"max_position_embeddings\": 64",
            "\"max_position_embeddings\": 512",
        );
        assert_eq!(
            open(&required(&big)).expect("open").max_tokens,
            DEFAULT_MAX_TOKENS
        );
    }

    #[test]
    fn cls_pooling_is_refused_and_mean_pooling_accepted() {
        let modules = r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#;
        let mut files = required(CONFIG);
        files.push(("modules.json", modules.into()));
        files.push((
            "1_Pooling/config.json",
            r#"{"pooling_mode_mean_tokens": true}"#.into(),
        ));
        assert!(open(&files).is_ok());
        files.pop();
        files.push((
            "1_Pooling/config.json",
            r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#.into(),
        ));
        let err = open(&files).expect_err("cls pooling");
        assert!(
            err.to_string().ends_with(
                "1_Pooling/config.json: unsupported model: the model pools by something other \
                 than the mean of its tokens; only mean pooling (pooling_mode_mean_tokens) is \
                 implemented"
            ),
            "{err}"
        );
    }

    #[test]
    fn broken_config_names_the_file_and_the_problem() {
        let err = open(&required("{\"hidden_size\": 8}")).expect_err("broken");
        let text = err.to_string();
        assert!(text.starts_with("cannot read "), "{text}");
        assert!(text.contains("config.json: missing field"), "{text}");
        let roberta = CONFIG.replace(
            "\"pad_token_id\": 0",
            "\"pad_token_id\": 0, \"model_type\": \"roberta\"",
        );
        let err = open(&required(&roberta)).expect_err("roberta");
        assert!(
            err.to_string().contains("model_type is \"roberta\""),
            "{err}"
        );
    }
}
