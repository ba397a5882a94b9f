//! Download of a model folder from the Hugging Face hub (cargo feature `hf-download`).
//!
//! `hf-hub` stores the files in the Hugging Face cache (honouring `HF_HOME`), in the same
//! `models--ORG--NAME/snapshots/<revision>` layout that [`super::resolve`] searches, so a
//! model is downloaded once per machine. This is the only code that needs the network; it
//! is not covered by tests (CI has no network), everything around it is.

use std::path::PathBuf;

use super::folder::REQUIRED_FILES;

/// Metadata that sentence-transformers folders carry; fetched when present.
const OPTIONAL_FILES: [&str; 3] = [
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
];

/// Download `model`'s encoder files and return the snapshot folder holding them.
pub fn download(model: &str) -> Result<PathBuf, String> {
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.model(model.to_string());
    let mut folder = None;
    for file in REQUIRED_FILES {
        let path = repo.get(file).map_err(|e| format!("{file}: {e}"))?;
        folder = path.parent().map(PathBuf::from);
    }
    for file in OPTIONAL_FILES {
        // Absent in plain BERT repositories; the defaults then apply.
        let _ = repo.get(file);
    }
    folder.ok_or_else(|| "the hub returned no file paths".to_string())
}
