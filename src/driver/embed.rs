//! Item text vectors for a run: the item file's rows rendered through the text template,
//! looked up in the Parquet cache, and embedded with the sentence encoder only when missing.
//!
//! The encoder is loaded on first need, so a run whose texts are all cached needs no model
//! at all (the shipped quickstart runs offline this way). The cache keys vectors by the
//! weights that computed them (`cache_key`). A replay asks for the items of
//! each window as they appear: only texts never seen before reach the encoder.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::data::{IdMap, ItemEmbeddings, ItemIdx};
use crate::io::embedding_cache::EmbeddingCache;
use crate::io::items::read_item_texts;
use crate::model::encoder::{TextEncoder, TunableText, folder_digest, resolve_model_dir};
use crate::model::{ModelError, candle_device};
use crate::plan::params::{DeviceChoice, ItemSource};
use crate::plan::{EmbedPlan, ModelsPlan};

use super::RunError;

/// What one call to [`ItemEmbedder::ensure`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EmbedRound {
    /// Items that gained a vector, sorted.
    pub added: Vec<ItemIdx>,
    /// Distinct texts found in the cache.
    pub cached: usize,
    /// Distinct texts the encoder embedded.
    pub embedded: usize,
    /// Seconds spent in the encoder (including loading it).
    pub encoder_s: f64,
}

/// The embedding cache's key of the vectors `plan` computes: which weights computed them.
/// The model id names its published weights; with `model_dir:` (weights of one's own,
/// perhaps fine-tuned, under that id) the key is the id and a digest of that folder
/// (`<id>@<16 hex digits>`), so vectors of other weights are never served. Vectors of
/// weights tuned during a run never enter the cache (they live in the model and its
/// checkpoints).
fn cache_key(plan: &EmbedPlan) -> Result<String, RunError> {
    let Some(dir) = &plan.model_dir else {
        return Ok(plan.model.clone());
    };
    let dir = resolve_model_dir(&plan.model, Some(dir))?;
    let digest = folder_digest(&dir).map_err(ModelError::from)?;
    Ok(format!("{}@{digest}", plan.model))
}

/// What the train nodes that fine-tune the encoder start from, by number of tuned layers:
/// the frozen layers' token states of every item and the tuned layers' weights.
pub type EncoderSources = BTreeMap<usize, Arc<TunableText>>;

/// The text vectors of a run's items, filled on demand.
pub struct ItemEmbedder {
    plan: EmbedPlan,
    device: DeviceChoice,
    /// `texts[item]`: the rendered text, `None` for an item without a row in the item file.
    texts: Vec<Option<String>>,
    /// The cache's key of this node's vectors (`cache_key`).
    cache_key: String,
    cache: Option<EmbeddingCache>,
    encoder: Option<TextEncoder>,
    vectors: ItemEmbeddings,
}

impl ItemEmbedder {
    /// Reads the item file (interning its ids into `items`, after those already there) and
    /// opens the cache. Nothing is embedded yet.
    pub fn open(
        plan: &EmbedPlan,
        source: &ItemSource,
        items: &mut IdMap,
        device: DeviceChoice,
    ) -> Result<Self, RunError> {
        let texts = read_item_texts(source, items)?.texts;
        let cache_key = cache_key(plan)?;
        let cache = EmbeddingCache::open_recorded(&plan.cache, &cache_key)?;
        let dim = cache.as_ref().map_or(0, EmbeddingCache::dim);
        Ok(Self {
            plan: plan.clone(),
            device,
            texts,
            cache_key,
            cache,
            encoder: None,
            vectors: ItemEmbeddings {
                dim,
                vectors: Vec::new(),
                present: Vec::new(),
            },
        })
    }

    /// Gives every item in `wanted` that has text a vector, from the cache or the encoder,
    /// and saves the cache if the encoder ran. Items beyond the item file (known only from
    /// events) have no text and stay absent.
    pub fn ensure(
        &mut self,
        wanted: impl IntoIterator<Item = ItemIdx>,
    ) -> Result<EmbedRound, RunError> {
        let mut todo: Vec<ItemIdx> = wanted
            .into_iter()
            .filter(|&i| {
                self.texts.get(i as usize).is_some_and(Option::is_some)
                    && !self
                        .vectors
                        .present
                        .get(i as usize)
                        .copied()
                        .unwrap_or(false)
            })
            .collect();
        todo.sort_unstable();
        todo.dedup();
        if todo.is_empty() {
            return Ok(EmbedRound::default());
        }
        let mut round = EmbedRound::default();
        let mut distinct: Vec<&str> = todo
            .iter()
            .filter_map(|&i| self.texts[i as usize].as_deref())
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        let missing: Vec<String> = match &self.cache {
            Some(cache) => cache.missing(&distinct),
            None => distinct.clone(),
        }
        .into_iter()
        .map(str::to_string)
        .collect();
        round.cached = distinct.len() - missing.len();
        round.embedded = missing.len();
        if !missing.is_empty() {
            let started = Instant::now();
            self.embed_missing(&missing)?;
            round.encoder_s = started.elapsed().as_secs_f64();
        }
        let cache = self
            .cache
            .as_ref()
            .expect("the cache is open once anything was embedded");
        let dim = cache.dim();
        self.vectors.dim = dim;
        let needed = self.texts.len().max(self.vectors.present.len());
        self.vectors.present.resize(needed, false);
        self.vectors.vectors.resize(needed * dim, 0.0);
        for &item in &todo {
            let text = self.texts[item as usize].as_deref().unwrap_or_default();
            let vector = cache
                .lookup(text)
                .expect("every text was cached or just embedded");
            let at = item as usize * dim;
            self.vectors.vectors[at..at + dim].copy_from_slice(vector);
            self.vectors.present[item as usize] = true;
        }
        round.added = todo;
        Ok(round)
    }

    /// The vectors so far, one slot per item of the item file (absent where not ensured).
    pub fn vectors(&self) -> &ItemEmbeddings {
        &self.vectors
    }

    /// Items in the item file.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether the item file had no rows.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The sources of the encoder tunings `models` ask for (none when no train node tunes):
    /// the encoder's lower layers run once over every item's text, on the CPU.
    pub fn encoder_sources(&self, models: &ModelsPlan) -> Result<EncoderSources, RunError> {
        let mut sources = EncoderSources::new();
        for trained in &models.trained {
            let Some(tuning) = trained.params.model.tuning() else {
                continue;
            };
            if sources.contains_key(&tuning.layers) {
                continue;
            }
            let dir = resolve_model_dir(&self.plan.model, self.plan.model_dir.as_deref())?;
            let texts: Vec<Option<&str>> = self.texts.iter().map(Option::as_deref).collect();
            let threads = self
                .plan
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let source = TunableText::load(&dir, &self.plan.model, &texts, tuning.layers, threads)?;
            sources.insert(tuning.layers, Arc::new(source));
        }
        Ok(sources)
    }

    /// Embeds `missing` texts with the encoder (loading it first), caches and saves them.
    fn embed_missing(&mut self, missing: &[String]) -> Result<(), RunError> {
        if self.encoder.is_none() {
            let dir = resolve_model_dir(&self.plan.model, self.plan.model_dir.as_deref())?;
            let device = candle_device(self.device)?;
            let encoder =
                TextEncoder::load(&dir, &device)?
                    .with_threads(self.plan.threads.unwrap_or_else(|| {
                        std::thread::available_parallelism().map_or(1, |n| n.get())
                    }))
                    .with_batch_size(self.plan.batch_size)
                    .with_model_id(self.plan.model.clone());
            self.encoder = Some(encoder);
        }
        let encoder = self.encoder.as_ref().expect("loaded above");
        let dim = encoder.dim();
        let cache = match self.cache.take() {
            Some(cache) if cache.dim() == dim => cache,
            Some(cache) => {
                return Err(RunError::Model(ModelError::Input(format!(
                    "the embedding cache {} holds {}-d vectors of `{}`, but the model found \
                     computes {dim}-d vectors: delete the cache or point `cache:` elsewhere",
                    cache.path().display(),
                    cache.dim(),
                    self.cache_key
                ))));
            }
            None => EmbeddingCache::open(&self.plan.cache, &self.cache_key, dim)?,
        };
        let cache = self.cache.insert(cache);
        let refs: Vec<&str> = missing.iter().map(String::as_str).collect();
        let vectors = encoder.encode(&refs)?;
        for (text, vector) in refs.iter().zip(vectors.chunks_exact(dim)) {
            cache.insert(text, vector)?;
        }
        cache.save()?;
        Ok(())
    }
}
