//! The models of a pipeline: every `train` node's recommender and every `fuse` node over
//! them, trained together and exported as the one model the pipeline scores.
//!
//! A [`ModelSet`] is itself a [`Recommender`]: its head and rows are those of the scored
//! model (a trained one, or a fusion, see [`super::fusion`]), its fit trains every model on
//! the same samples and re-learns the weights of learned fusions (after the fit on
//! validation events, before it on a replay window's labels), and its state holds
//! every model's state. A pipeline with one `train` node is a set of one, which passes every
//! call straight to its model (same rows, same state, same results as the model alone).
//! Evaluation reads any model of the set by its node name ([`ModelSet::export`]).

use std::collections::BTreeMap;

use crate::data::{HostTensor, HostValues, Interaction, ItemEmbeddings, ItemIdx, UserIdx};
use crate::plan::{FuseWeights, ModelsPlan};
use crate::scoring::ScoringHead;

use super::fusion::{ResidualGram, fused_head, fused_rows, learn_weights};
use super::{FitReport, ModelError, ModelState, Recommender};

/// The family name of a set's state (one model's state keeps its family's name).
const SET_KIND: &str = "models";

/// The scalar under a prequentially learning fusion's node in a set's state: the
/// [`ResidualGram`] its weights are fitted on.
const RESIDUAL_GRAM: &str = "residual_gram";

/// Several recommenders and their fusions; exports the scored one.
pub struct ModelSet {
    /// Every trained model with its node name, in plan order.
    trained: Vec<(String, Box<dyn Recommender>)>,
    /// Every fusion, in plan order.
    fusions: Vec<Fusion>,
    /// The model whose head and rows the set exports.
    scored: ModelRef,
    /// The events learned fusions fit their weights on: a split's validation events, or a
    /// replay window's revealed labels.
    learn_events: Vec<Interaction>,
    /// The clip range of squared-loss predictions (the training labels' scale), which the
    /// learned weights' fit applies.
    clip: Option<(f32, f32)>,
}

/// A model of the set: a trained one or a fusion, by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelRef {
    Trained(usize),
    Fused(usize),
}

/// One fusion: its parts (indices into the trained models) and current weights.
#[derive(Clone, Debug)]
struct Fusion {
    node: String,
    parts: Vec<usize>,
    weights: Vec<f32>,
    /// How it learns its weights; `None`: they are given.
    learns: Option<Learning>,
}

/// How a learned fusion fits its weights on the set's learning events.
#[derive(Clone, Debug, PartialEq)]
enum Learning {
    /// After every fit, on the validation events (which no fit sees) alone.
    AfterFit,
    /// Before every fit, on the residuals of every learning event given so far (a replay's
    /// windows, each as the parts predicted it before training on it).
    BeforeFit(ResidualGram),
}

impl ModelSet {
    /// The set of `plan`'s models from their built recommenders (`trained`, in the plan's
    /// order), scoring `scored`. Learned fusions start with equal weights; they fit them
    /// after (validation) or before (prequential) every fit on the events
    /// [`ModelSet::learn_on`] gives (none: they keep them).
    /// A plan naming a model it does not define is an `Err` (the planner never makes one).
    pub fn new(
        plan: &ModelsPlan,
        trained: Vec<Box<dyn Recommender>>,
        scored: &str,
    ) -> Result<Self, ModelError> {
        let names: Vec<String> = plan.trained.iter().map(|t| t.node.clone()).collect();
        let fusions = plan
            .fused
            .iter()
            .map(|f| {
                let parts = f
                    .parts
                    .iter()
                    .map(|p| names.iter().position(|n| n == p).ok_or_else(|| unknown(p)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Fusion {
                    node: f.node.clone(),
                    weights: match &f.weights {
                        FuseWeights::Given(w) => w.clone(),
                        FuseWeights::LearnedOnValidation | FuseWeights::LearnedPrequentially => {
                            vec![1.0 / parts.len() as f32; parts.len()]
                        }
                    },
                    learns: match f.weights {
                        FuseWeights::Given(_) => None,
                        FuseWeights::LearnedOnValidation => Some(Learning::AfterFit),
                        FuseWeights::LearnedPrequentially => {
                            Some(Learning::BeforeFit(ResidualGram::new(parts.len())))
                        }
                    },
                    parts,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let mut set = Self {
            trained: names.into_iter().zip(trained).collect(),
            fusions,
            scored: ModelRef::Trained(0),
            learn_events: Vec::new(),
            clip: None,
        };
        set.scored = set.find(scored)?;
        Ok(set)
    }

    /// The events learned fusions fit their weights on from the next fit on (a split's
    /// validation events, given once; a replay window's revealed labels, given before the
    /// fit on that window; kept only where a fusion learns), and the clip range of
    /// squared-loss predictions (the labels' scale) under which they are compared.
    pub fn learn_on(&mut self, events: &[Interaction], clip: Option<(f32, f32)>) {
        if self.fusions.iter().any(|f| f.learns.is_some()) {
            self.learn_events = events.to_vec();
        }
        self.clip = clip;
    }

    /// Whether the set is one model and nothing else (it then passes every call through).
    fn single(&self) -> Option<&dyn Recommender> {
        match (self.trained.as_slice(), self.fusions.is_empty()) {
            ([(_, model)], true) => Some(model.as_ref()),
            _ => None,
        }
    }

    /// The model of node `node`.
    fn find(&self, node: &str) -> Result<ModelRef, ModelError> {
        if let Some(i) = self.trained.iter().position(|(n, _)| n == node) {
            return Ok(ModelRef::Trained(i));
        }
        match self.fusions.iter().position(|f| f.node == node) {
            Some(f) => Ok(ModelRef::Fused(f)),
            None => Err(unknown(node)),
        }
    }

    /// The trained models `model` is made of (itself, or a fusion's parts).
    fn parts_of(&self, model: ModelRef) -> Vec<usize> {
        match model {
            ModelRef::Trained(i) => vec![i],
            ModelRef::Fused(f) => self.fusions[f].parts.clone(),
        }
    }

    /// The node whose head and rows the set exports (the model the pipeline scores).
    pub fn scored(&self) -> &str {
        match self.scored {
            ModelRef::Trained(i) => &self.trained[i].0,
            ModelRef::Fused(f) => &self.fusions[f].node,
        }
    }

    /// The current weight of every part of every learned fusion, named
    /// `<fusion>/weight[<part>]` (what a round reports beside its metrics).
    pub fn learned_weights(&self) -> Vec<(String, f64)> {
        self.fusions
            .iter()
            .filter(|f| f.learns.is_some())
            .flat_map(|f| {
                f.parts.iter().zip(&f.weights).map(|(&i, &w)| {
                    let name = format!("{}/weight[{}]", f.node, self.trained[i].0);
                    (name, f64::from(w))
                })
            })
            .collect()
    }

    /// The head of `model` (unclipped, as a model's own head).
    fn head_of(&self, model: ModelRef) -> ScoringHead {
        match model {
            ModelRef::Trained(i) => self.trained[i].1.head(),
            ModelRef::Fused(f) => {
                let fusion = &self.fusions[f];
                let heads: Vec<ScoringHead> = fusion
                    .parts
                    .iter()
                    .map(|&i| self.trained[i].1.head())
                    .collect();
                fused_head(&heads, &fusion.weights)
            }
        }
    }

    /// `count` rows of `model`, read from each trained model with `read`.
    fn rows_of(
        &self,
        model: ModelRef,
        count: usize,
        read: impl Fn(&dyn Recommender) -> Result<Vec<f32>, ModelError>,
    ) -> Result<Vec<f32>, ModelError> {
        let f = match model {
            ModelRef::Trained(i) => return read(self.trained[i].1.as_ref()),
            ModelRef::Fused(f) => f,
        };
        let mut layouts = Vec::new();
        let mut parts = Vec::new();
        for &i in &self.fusions[f].parts {
            let part = self.trained[i].1.as_ref();
            layouts.push(part.head().layout);
            parts.push(read(part)?);
        }
        Ok(fused_rows(
            self.head_of(model).layout,
            &layouts,
            &parts,
            count,
        ))
    }

    /// The head (clipping squared-loss predictions to `clip`, which the other losses ignore)
    /// and every user's and item's row of model `node`, for evaluating it.
    pub fn export(
        &self,
        node: &str,
        clip: Option<(f32, f32)>,
    ) -> Result<(ScoringHead, Vec<f32>, Vec<f32>), ModelError> {
        let (n_users, n_items) = self.shape();
        let users: Vec<UserIdx> = (0..n_users as u32).collect();
        let items: Vec<ItemIdx> = (0..n_items as u32).collect();
        let model = self.find(node)?;
        let mut head = self.head_of(model);
        head.clip = clip;
        let user_rows = self.rows_of(model, users.len(), |m| m.user_rows(&users))?;
        let item_rows = self.rows_of(model, items.len(), |m| m.item_rows(&items))?;
        Ok((head, user_rows, item_rows))
    }

    /// Each of the trained models `parts`' clipped prediction of every learning event, in
    /// plan order.
    fn learning_predictions(&self, parts: &[usize]) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut users: Vec<UserIdx> = self.learn_events.iter().map(|e| e.user).collect();
        let mut items: Vec<ItemIdx> = self.learn_events.iter().map(|e| e.item).collect();
        users.sort_unstable();
        users.dedup();
        items.sort_unstable();
        items.dedup();
        parts
            .iter()
            .map(|&i| {
                let model = self.trained[i].1.as_ref();
                let mut head = model.head();
                head.clip = self.clip;
                let width = head.layout.row_len();
                let user_rows = model.user_rows(&users)?;
                let item_rows = model.item_rows(&items)?;
                Ok(self
                    .learn_events
                    .iter()
                    .map(|e| {
                        let u = users.binary_search(&e.user).unwrap_or(0);
                        let i = items.binary_search(&e.item).unwrap_or(0);
                        head.score(
                            &user_rows[u * width..(u + 1) * width],
                            &item_rows[i * width..(i + 1) * width],
                            None,
                        )
                        .prediction
                    })
                    .collect())
            })
            .collect()
    }

    /// Fits the weights of every fusion that learns before (`before_fit`) or after the fit
    /// on the learning events; returns whether the scored model's weights changed.
    fn learn_fusion_weights(&mut self, before_fit: bool) -> Result<bool, ModelError> {
        let labels: Vec<f32> = self.learn_events.iter().map(|e| e.label).collect();
        let mut scored_changed = false;
        for f in 0..self.fusions.len() {
            let learns_now = matches!(
                (&self.fusions[f].learns, before_fit),
                (Some(Learning::AfterFit), false) | (Some(Learning::BeforeFit(_)), true)
            );
            if !learns_now || labels.is_empty() {
                continue;
            }
            let predictions = self.learning_predictions(&self.fusions[f].parts.clone())?;
            let weights = match &mut self.fusions[f].learns {
                Some(Learning::BeforeFit(gram)) => {
                    gram.add(&predictions, &labels);
                    gram.minimum().0
                }
                _ => learn_weights(&predictions, &labels).0,
            };
            let fusion = &mut self.fusions[f];
            if fusion.weights != weights {
                scored_changed |= self.scored == ModelRef::Fused(f);
                fusion.weights = weights;
            }
        }
        Ok(scored_changed)
    }

    /// An independent copy of the set (see [`Recommender::duplicate`]).
    pub fn twin(&self) -> Result<ModelSet, ModelError> {
        Ok(ModelSet {
            trained: self
                .trained
                .iter()
                .map(|(n, m)| Ok((n.clone(), m.duplicate()?)))
                .collect::<Result<_, ModelError>>()?,
            fusions: self.fusions.clone(),
            scored: self.scored,
            learn_events: self.learn_events.clone(),
            clip: self.clip,
        })
    }
}

fn unknown(node: &str) -> ModelError {
    ModelError::Input(format!("no model named `{node}` in the pipeline"))
}

impl Recommender for ModelSet {
    fn kind(&self) -> &'static str {
        self.single().map_or(SET_KIND, |m| m.kind())
    }

    fn head(&self) -> ScoringHead {
        self.head_of(self.scored)
    }

    fn shape(&self) -> (usize, usize) {
        self.trained[0].1.shape()
    }

    fn grow(&mut self, n_users: usize, n_items: usize) -> Result<(), ModelError> {
        for (_, model) in &mut self.trained {
            model.grow(n_users, n_items)?;
        }
        Ok(())
    }

    fn fit(
        &mut self,
        samples: &[Interaction],
        keys: &[u32],
        epochs: usize,
    ) -> Result<FitReport, ModelError> {
        let learned_before = self.learn_fusion_weights(true)?;
        let scored_parts = self.parts_of(self.scored);
        let several = self.trained.len() > 1;
        let mut report = FitReport::default();
        let mut node_losses = Vec::new();
        for (i, (node, model)) in self.trained.iter_mut().enumerate() {
            let fitted = model.fit(samples, keys, epochs)?;
            if several {
                node_losses.push((node.clone(), fitted.last_epoch_loss));
            }
            // Only the scored model's rows are exported; the others' changes reach
            // evaluation through `export`.
            if scored_parts.contains(&i) {
                report.merge(fitted);
            }
        }
        if self.learn_fusion_weights(false)? || learned_before {
            report.shared_changed = true;
        }
        report.node_losses = node_losses;
        Ok(report)
    }

    fn user_rows(&self, users: &[UserIdx]) -> Result<Vec<f32>, ModelError> {
        self.rows_of(self.scored, users.len(), |m| m.user_rows(users))
    }

    fn item_rows(&self, items: &[ItemIdx]) -> Result<Vec<f32>, ModelError> {
        self.rows_of(self.scored, items.len(), |m| m.item_rows(items))
    }

    fn set_item_embeddings(&mut self, text: &ItemEmbeddings) -> Result<(), ModelError> {
        for (_, model) in &mut self.trained {
            model.set_item_embeddings(text)?;
        }
        Ok(())
    }

    fn duplicate(&self) -> Result<Box<dyn Recommender>, ModelError> {
        Ok(Box::new(self.twin()?))
    }

    /// One model's state is its own; a set's holds each model's tensors under
    /// `<node>/<name>`, each fusion's weights as `<node>/weights`, each model's family and
    /// scalars under its node name, and under a prequentially learning fusion's node the
    /// residuals it learns from.
    fn save_state(&self) -> Result<ModelState, ModelError> {
        if let Some(model) = self.single() {
            return model.save_state();
        }
        let mut tensors = BTreeMap::new();
        let mut scalars = serde_json::Map::new();
        for (node, model) in &self.trained {
            let state = model.save_state()?;
            for (name, tensor) in state.tensors {
                tensors.insert(format!("{node}/{name}"), tensor);
            }
            scalars.insert(
                node.clone(),
                serde_json::json!({"kind": state.kind, "scalars": state.scalars}),
            );
        }
        for fusion in &self.fusions {
            tensors.insert(
                format!("{}/weights", fusion.node),
                HostTensor {
                    shape: vec![fusion.weights.len()],
                    values: HostValues::F32(fusion.weights.clone()),
                },
            );
            if let Some(Learning::BeforeFit(gram)) = &fusion.learns {
                scalars.insert(
                    fusion.node.clone(),
                    serde_json::json!({ RESIDUAL_GRAM: gram.sums() }),
                );
            }
        }
        Ok(ModelState {
            kind: SET_KIND.into(),
            tensors,
            scalars: serde_json::Value::Object(scalars),
        })
    }

    fn load_state(&mut self, state: &ModelState) -> Result<(), ModelError> {
        if self.single().is_some() {
            return self.trained[0].1.load_state(state);
        }
        if state.kind != SET_KIND {
            return Err(ModelError::Input(format!(
                "the state is of one `{}` model, but the pipeline trains {} models",
                state.kind,
                self.trained.len()
            )));
        }
        // Load into copies first, so a refused state leaves the set unchanged.
        let mut loaded = self.twin()?;
        for (node, model) in &mut loaded.trained {
            let part = &state.scalars[node.as_str()];
            let prefix = format!("{node}/");
            let tensors = state
                .tensors
                .iter()
                .filter_map(|(name, t)| Some((name.strip_prefix(&prefix)?.to_string(), t.clone())))
                .collect();
            let kind = part["kind"]
                .as_str()
                .ok_or_else(|| ModelError::Input(format!("the state holds no model `{node}`")))?;
            model.load_state(&ModelState {
                kind: kind.to_string(),
                tensors,
                scalars: part["scalars"].clone(),
            })?;
        }
        for fusion in &mut loaded.fusions {
            let name = format!("{}/weights", fusion.node);
            match state.tensors.get(&name).map(|t| &t.values) {
                Some(HostValues::F32(w)) if w.len() == fusion.parts.len() => {
                    fusion.weights = w.clone();
                }
                _ => {
                    return Err(ModelError::Input(format!(
                        "the state holds no {} weights of fusion `{}`",
                        fusion.parts.len(),
                        fusion.node
                    )));
                }
            }
            if let Some(Learning::BeforeFit(gram)) = &mut fusion.learns {
                let sums: Option<Vec<f64>> = state.scalars[fusion.node.as_str()][RESIDUAL_GRAM]
                    .as_array()
                    .and_then(|values| values.iter().map(serde_json::Value::as_f64).collect());
                *gram = sums
                    .and_then(|sums| ResidualGram::from_sums(fusion.parts.len(), sums))
                    .ok_or_else(|| {
                        ModelError::Input(format!(
                            "the state holds no residuals fusion `{}` learns its weights from",
                            fusion.node
                        ))
                    })?;
            }
        }
        *self = loaded;
        Ok(())
    }
}
