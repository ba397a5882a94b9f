//! Texts to token ids, and token ids to length-sorted batches.
//!
//! The tokenizer comes from the model folder's `tokenizer.json`, with its stored padding
//! removed (the CPU forward pass never pads) and truncation set to the model's maximum
//! sequence length, as sentence-transformers does. Batches group texts of similar length
//! (longest first), so that a padded backend wastes little and the threads of the CPU
//! backend finish together.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::error::EncoderError;

/// Token id sequences of several texts, stored end to end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ragged {
    ids: Vec<u32>,
    /// `offsets[i]..offsets[i + 1]` is sequence `i`; one more entry than sequences.
    offsets: Vec<usize>,
}

impl Ragged {
    /// An empty list of sequences.
    pub fn new() -> Self {
        Self {
            ids: Vec::new(),
            offsets: vec![0],
        }
    }

    /// Append one sequence.
    pub fn push(&mut self, ids: &[u32]) {
        self.ids.extend_from_slice(ids);
        self.offsets.push(self.ids.len());
    }

    /// Append every sequence of `other`.
    pub fn append(&mut self, other: &Ragged) {
        for i in 0..other.len() {
            self.push(other.get(i));
        }
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether there are no sequences.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequence `i`.
    pub fn get(&self, i: usize) -> &[u32] {
        &self.ids[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// Load `tokenizer.json` with padding off and truncation at `max_tokens` (special tokens
/// included).
pub fn load_tokenizer(path: &Path, max_tokens: usize) -> Result<Tokenizer, EncoderError> {
    let error = |message: String| EncoderError::Tokenizer {
        path: path.to_path_buf(),
        message,
    };
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| error(e.to_string()))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_tokens,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| error(e.to_string()))?;
    Ok(tokenizer)
}

/// Token ids (special tokens added) of every text, in order, tokenised on up to
/// `threads` threads.
pub fn tokenize(
    tokenizer: &Tokenizer,
    texts: &[&str],
    threads: usize,
) -> Result<Ragged, EncoderError> {
    let one_part = |part: &[&str]| -> Result<Ragged, EncoderError> {
        let mut out = Ragged::new();
        for text in part {
            let encoding =
                tokenizer
                    .encode_fast(*text, true)
                    .map_err(|e| EncoderError::Tokenize {
                        message: format!("{e} (text: {:?})", shorten(text)),
                    })?;
            out.push(encoding.get_ids());
        }
        Ok(out)
    };
    // Below a few hundred texts a thread costs more than it saves.
    let threads = threads.clamp(1, texts.len().div_ceil(256).max(1));
    if threads == 1 {
        return one_part(texts);
    }
    let per_thread = texts.len().div_ceil(threads);
    let parts: Vec<Result<Ragged, EncoderError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = texts
            .chunks(per_thread)
            .map(|part| scope.spawn(move || one_part(part)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle.join().unwrap_or_else(|_| {
                    Err(EncoderError::Tokenize {
                        message: "the tokenizer panicked".into(),
                    })
                })
            })
            .collect()
    });
    let mut all = Ragged::new();
    for part in parts {
        all.append(&part?);
    }
    Ok(all)
}

/// The first 80 characters of `text`, for error messages.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// Sequence indices grouped into batches of at most `batch_size`, longest sequences
/// first (ties keep input order), so that each batch holds sequences of similar length.
pub fn length_sorted_batches(tokens: &Ragged, batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tokens.get(i).len()));
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ragged(seqs: &[&[u32]]) -> Ragged {
        let mut r = Ragged::new();
        for s in seqs {
            r.push(s);
        }
        r
    }

    #[test]
    fn ragged_keeps_sequences_apart() {
        let r = ragged(&[&[1, 2], &[], &[3]]);
        assert_eq!(r.len(), 3);
        assert_eq!(r.get(0), &[1, 2]);
        assert_eq!(r.get(1), &[] as &[u32]);
        assert_eq!(r.get(2), &[3]);
        let mut both = r.clone();
        both.append(&r);
        assert_eq!(both.len(), 6);
        assert_eq!(both.get(5), &[3]);
        assert!(Ragged::new().is_empty());
    }

    #[test]
    fn batches_are_longest_first_cover_every_sequence_once() {
        let r = ragged(&[&[1], &[1, 2, 3], &[1, 2], &[1, 2, 3], &[], &[1, 2]]);
        let batches = length_sorted_batches(&r, 4);
        assert_eq!(batches, vec![vec![1, 3, 2, 5], vec![0, 4]]);
        assert_eq!(
            length_sorted_batches(&r, 0).len(),
            6,
            "batch size 0 acts as 1"
        );
        assert!(length_sorted_batches(&Ragged::new(), 8).is_empty());
    }

    #[test]
    fn shorten_cuts_long_texts_on_char_boundaries() {
        assert_eq!(shorten("abc"), "abc");
        let long = "é".repeat(100);
        assert_eq!(shorten(&long), format!("{}...", "é".repeat(80)));
    }
}
