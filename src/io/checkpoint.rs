//! A run's checkpoint file: named tensors (a model's state) and one JSON document (the
//! driver's state) in a single [safetensors](https://github.com/huggingface/safetensors)
//! file, the document stored in the header's metadata under [`DOCUMENT_KEY`].
//!
//! The file is replaced atomically (a temporary file renamed over it): a crash while saving
//! leaves the previous checkpoint whole. Reading checks the header and every tensor's
//! extent; what the document says is the driver's to check.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::{Dtype, SafeTensors, View};

use super::IoError;
use super::atomic::write_bytes_atomic;
use crate::data::{HostTensor, HostValues};

/// The metadata key holding the JSON document.
pub const DOCUMENT_KEY: &str = "recsift";

/// What a checkpoint file holds.
#[derive(Debug)]
pub struct CheckpointContents {
    /// Tensors by name.
    pub tensors: BTreeMap<String, HostTensor>,
    /// The JSON document.
    pub document: String,
}

/// A host tensor as safetensors writes it: little-endian values.
struct Stored<'a>(&'a HostTensor);

impl View for Stored<'_> {
    fn dtype(&self) -> Dtype {
        match self.0.values {
            HostValues::F32(_) => Dtype::F32,
            HostValues::U32(_) => Dtype::U32,
        }
    }

    fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(match &self.0.values {
            HostValues::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostValues::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        })
    }

    fn data_len(&self) -> usize {
        match &self.0.values {
            HostValues::F32(v) => v.len() * 4,
            HostValues::U32(v) => v.len() * 4,
        }
    }
}

/// Writes `tensors` (name, tensor) and `document` to `path`, replacing it atomically.
pub fn write_checkpoint<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (String, &'a HostTensor)>,
    document: &str,
) -> Result<(), IoError> {
    let invalid = |reason: String| IoError::InvalidRecords {
        path: path.to_path_buf(),
        reason,
    };
    let tensors: Vec<(String, &HostTensor)> = tensors.into_iter().collect();
    if let Some((name, _)) = tensors.iter().find(|(_, t)| !t.is_consistent()) {
        return Err(invalid(format!(
            "tensor `{name}` has values for another shape"
        )));
    }
    let metadata = HashMap::from([(DOCUMENT_KEY.to_string(), document.to_string())]);
    let bytes = safetensors::serialize(
        tensors.into_iter().map(|(name, t)| (name, Stored(t))),
        Some(metadata),
    )
    .map_err(|e| invalid(e.to_string()))?;
    write_bytes_atomic(path, &bytes)
}

/// Reads a checkpoint written by [`write_checkpoint`].
pub fn read_checkpoint(path: &Path) -> Result<CheckpointContents, IoError> {
    let bytes = std::fs::read(path).map_err(|source| IoError::Read {
        what: "checkpoint",
        path: path.to_path_buf(),
        source,
    })?;
    parse_checkpoint(&bytes).map_err(|problem| IoError::BadCheckpoint {
        path: path.to_path_buf(),
        problem,
    })
}

/// The contents of checkpoint `bytes`, or what is wrong with them.
fn parse_checkpoint(bytes: &[u8]) -> Result<CheckpointContents, String> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a recsift checkpoint (safetensors: {e})"))?;
    let (_, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("not a recsift checkpoint (safetensors: {e})"))?;
    let document = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(DOCUMENT_KEY))
        .cloned()
        .ok_or_else(|| format!("the file has no `{DOCUMENT_KEY}` document"))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in file.tensors() {
        let words = view
            .data()
            .chunks_exact(4)
            .map(|w| [w[0], w[1], w[2], w[3]]);
        let values = match view.dtype() {
            Dtype::F32 => HostValues::F32(words.map(f32::from_le_bytes).collect()),
            Dtype::U32 => HostValues::U32(words.map(u32::from_le_bytes).collect()),
            other => return Err(format!("tensor `{name}` holds {other:?}, not f32 or u32")),
        };
        let tensor = HostTensor {
            shape: view.shape().to_vec(),
            values,
        };
        if !tensor.is_consistent() {
            return Err(format!("tensor `{name}` has values for another shape"));
        }
        tensors.insert(name, tensor);
    }
    Ok(CheckpointContents { tensors, document })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_and_document_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.safetensors");
        let values = vec![1.5f32, -0.0, f32::MIN_POSITIVE, 3.25e-30, f32::NAN, 8.0];
        let tensors = BTreeMap::from([
            (
                "a".to_string(),
                HostTensor {
                    shape: vec![2, 3],
                    values: HostValues::F32(values.clone()),
                },
            ),
            (
                "known".to_string(),
                HostTensor {
                    shape: vec![2],
                    values: HostValues::U32(vec![3, u32::MAX]),
                },
            ),
        ]);
        write_checkpoint(
            &path,
            tensors.iter().map(|(k, t)| (k.clone(), t)),
            "{\"round\": 3}",
        )
        .unwrap();
        let back = read_checkpoint(&path).unwrap();
        assert_eq!(back.document, "{\"round\": 3}");
        let HostValues::F32(a) = &back.tensors["a"].values else {
            panic!("f32 expected");
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a), bits(&values));
        assert_eq!(back.tensors["a"].shape, [2, 3]);
        assert_eq!(back.tensors["known"], tensors["known"]);
    }

    #[test]
    fn damaged_files_are_refused_with_the_path_and_no_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.safetensors");
        let tensors = BTreeMap::from([(
            "a".to_string(),
            HostTensor {
                shape: vec![64],
                values: HostValues::F32(vec![1.0; 64]),
            },
        )]);
        write_checkpoint(&path, tensors.iter().map(|(k, t)| (k.clone(), t)), "{}").unwrap();
        let good = std::fs::read(&path).unwrap();
        for cut in [0, 4, 8, 20, good.len() / 2, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).unwrap();
            let message = read_checkpoint(&path).unwrap_err().to_string();
            assert!(message.contains("checkpoint.safetensors"), "{message}");
        }
        std::fs::write(&path, b"PAR1 not a checkpoint").unwrap();
        assert!(read_checkpoint(&path).is_err());
    }
}
