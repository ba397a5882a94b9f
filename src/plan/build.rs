//! From a typed spec to a [`Plan`]: resolve defaults, check values and edges, collect every
//! problem with its YAML path.

use crate::suggest::closest;
use std::path::{Path, PathBuf};

use crate::data::LabelKind;
use crate::io::sort::{DEFAULT_SORT_MEMORY, parse_memory};
use crate::metrics::{METRIC_DOCS, Metric};
use crate::registry::defaults;
use crate::scoring::Loss;
use crate::spec::diagnostic::{Diagnostic, Diagnostics};
use crate::spec::path::YamlPath;
use crate::spec::schema::{
    CandidatesSpec, DataSpec, EarlyStoppingSpec, EmbedSpec, EvaluateSpec, FuseSpec,
    InitialLabelsSpec, OptimizerSpec, PoolSpec, ReplaySpec, ScoreSpec, SelectSpec, SplitSpec,
    TrainOptions, TrainSpec,
};
use crate::spec::{LoadedSpec, NodeSpec, OperatorSpec, PipelineSpec};
use crate::strategy::{STRATEGIES, Strategy};

use super::graph::{NodeRoles, check_edges};
use super::params::{
    DeviceChoice, EarlyStopping, EventColumns, EventSource, ItemSource, ModelKind, OptimizerParams,
    RefitPolicy, TrainParams, UncertaintyParams,
};
use super::{
    CandidateSet, ClusterHosts, ClusterPlan, DataPlan, DiversityPlan, DiversitySpace, EmbedPlan,
    EvaluatePlan, FusePlan, FuseWeights, InitialLabels, ModelsPlan, OutputPlan, Plan, PlanNode,
    PoolPlan, ProtocolPlan, RecommendationsPlan, RecommendedUsers, ReplayPlan, ScorePlan,
    SelectPlan, SelectionProtocolPlan, SplitPlan, TrainedModel, UncertaintyMode, WindowPlan,
};

/// Seconds in a duration such as `90s`, `30m`, `12h`, `7d` or `2w`.
fn parse_duration(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().ok().filter(|n| *n > 0)?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    number.checked_mul(unit)
}

/// Default text template for items.
pub const DEFAULT_ITEM_TEXT: &str = "{title} | {genres}";

/// Validates `loaded` into a plan, or returns every problem found (including those found
/// while typing the file).
pub fn build(loaded: &LoadedSpec) -> Result<Plan, Diagnostics> {
    let mut cx = Resolver {
        typing_errors: loaded.diagnostics.iter().map(|d| d.path.clone()).collect(),
        base_dir: loaded.base_dir.clone(),
        diagnostics: loaded.diagnostics.clone(),
        params: Vec::new(),
    };
    let plan = cx.plan(&loaded.spec, &loaded.file);
    match plan {
        Some(plan) if cx.diagnostics.is_empty() => Ok(plan),
        _ => Err(loaded.locate(cx.diagnostics)),
    }
}

/// Collects diagnostics and the resolved parameters of the node being planned.
struct Resolver {
    /// Paths of the problems found while typing the file: a section that failed to type
    /// is absent, and its absence is not reported again.
    typing_errors: Vec<YamlPath>,
    base_dir: PathBuf,
    diagnostics: Vec<Diagnostic>,
    params: Vec<(String, String, bool)>,
}

impl Resolver {
    /// Whether something under `path` failed to type (so it may be absent for that reason).
    fn failed_to_type(&self, path: &YamlPath) -> bool {
        self.typing_errors.iter().any(|p| p.starts_with(path))
    }

    fn error(&mut self, path: YamlPath, message: impl Into<String>, help: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::new(path, message).with_help(help));
    }

    /// `written` or `default`, recorded for display under `key`.
    fn value<T: Clone + std::fmt::Display>(
        &mut self,
        key: &str,
        written: Option<T>,
        default: T,
    ) -> T {
        let was_written = written.is_some();
        let value = written.unwrap_or(default);
        self.params
            .push((key.to_string(), value.to_string(), was_written));
        value
    }

    fn take_params(&mut self) -> Vec<(String, String, bool)> {
        std::mem::take(&mut self.params)
    }

    /// A path in the file, resolved against the pipeline's directory; missing files are
    /// reported here so `validate` catches them.
    fn file(&mut self, path: &YamlPath, written: &str, what: &str) -> PathBuf {
        let resolved = self.base_dir.join(written);
        if !resolved.is_file() {
            let hint = if written.contains("ml-100k") {
                "MovieLens 100K may not be redistributed, so it is not shipped: import your copy with \
                 `recsift import movielens PATH/TO/ml-100k data/ml-100k`"
                    .to_string()
            } else {
                format!(
                    "paths resolve relative to the pipeline file ({}); fix the path or create the file",
                    self.base_dir.display()
                )
            };
            self.error(
                path.clone(),
                format!(
                    "{what} `{written}` not found (looked for {})",
                    resolved.display()
                ),
                hint,
            );
        }
        resolved
    }

    /// Exactly one of `options` is set; returns its name.
    fn one_of(
        &mut self,
        path: &YamlPath,
        what: &str,
        options: &[(&'static str, bool)],
    ) -> Option<&'static str> {
        let set: Vec<&str> = options
            .iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| *name)
            .collect();
        let names = options
            .iter()
            .map(|(n, _)| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        match set.as_slice() {
            [one] => Some(one),
            [] => {
                self.error(
                    path.clone(),
                    format!("{what} needs one of {names}"),
                    format!("add one of {names}"),
                );
                None
            }
            several => {
                self.error(
                    path.key(several[1]),
                    format!(
                        "{what} takes exactly one of {names}, found {}",
                        several.join(" and ")
                    ),
                    "keep one",
                );
                None
            }
        }
    }

    fn plan(&mut self, spec: &PipelineSpec, file: &Path) -> Option<Plan> {
        let root = YamlPath::root();
        match spec.version {
            Some(1) => {}
            Some(v) => self.error(
                root.key("version"),
                format!("unsupported version {v}"),
                "this recsift reads `version: 1`",
            ),
            None => self.error(
                root.clone(),
                "missing `version:`",
                "add `version: 1` at the top of the file",
            ),
        }
        let name = spec.name.clone().unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "pipeline".into())
        });
        let seed = spec.seed.unwrap_or(42);
        let workers = spec.workers.unwrap_or(1);
        if workers == 0 {
            self.error(
                root.key("workers"),
                "`workers` must be at least 1",
                "use `workers: 1` (or the number of cores)",
            );
        }
        let cluster = self.cluster(spec);
        let device = self.device(spec.device.as_deref());
        let label_kind = self.label_kind(spec.data.as_ref());
        let columns = self.columns(spec.data.as_ref());

        let nodes_failed = self.failed_to_type(&YamlPath::keys(&["nodes"]));
        let roles = check_edges(&spec.nodes, nodes_failed, &mut self.diagnostics);
        let protocol = self.protocol(spec, &columns, label_kind);
        let data = self.data(spec.data.as_ref(), &columns, label_kind, protocol.as_ref());

        let mut graph = source_nodes(&data);
        let embed = self.embed(&roles, data.as_ref(), &mut graph);
        let has_validation = protocol
            .as_ref()
            .and_then(ProtocolPlan::split)
            .is_some_and(SplitPlan::has_validation);
        let models = self.models(
            &roles,
            embed.as_ref(),
            seed,
            device,
            label_kind,
            has_validation,
            &mut graph,
        );
        let score = self.score(&roles, models.as_ref(), &mut graph);
        // Why the protocol needs a select node, if it does (a replay may run on free labels
        // alone: selecting is optional there).
        let select_needed = match &protocol {
            Some(ProtocolPlan::Pool(p)) if p.rounds > 0 => Some(format!(
                "the protocol runs {} rounds but no node selects samples",
                p.rounds
            )),
            Some(ProtocolPlan::Selection(_)) => Some(
                "the selection protocol needs a select node: it decides what each round trains on"
                    .to_string(),
            ),
            _ => None,
        };
        let select = self.select(
            &roles,
            score.as_ref(),
            embed.as_ref(),
            select_needed,
            &mut graph,
        );
        let evaluate = self.evaluations(&roles, label_kind, models.as_ref(), &mut graph);
        if let (Some(ProtocolPlan::Replay(_)), Some(score)) = (&protocol, &score) {
            self.check_replay_evaluations(&roles, &evaluate, score);
        }
        let early_stopping =
            self.early_stopping(&roles, protocol.as_ref(), evaluate.first(), &mut graph);
        let output = self.output(spec, &name);

        Some(Plan {
            name,
            source: file.to_path_buf(),
            seed,
            workers,
            cluster,
            device: device?,
            data: data?,
            protocol: protocol?,
            embed,
            models: models?,
            early_stopping,
            score: score?,
            select: select?,
            evaluate,
            output,
            graph,
        })
    }

    fn device(&mut self, written: Option<&str>) -> Option<DeviceChoice> {
        let written = written.unwrap_or("cpu");
        let choice = DeviceChoice::parse(written);
        if choice.is_none() {
            self.error(
                YamlPath::keys(&["device"]),
                format!("unknown device `{written}`"),
                "use `cpu`, `cuda` or `cuda:N`",
            );
        }
        choice
    }

    fn label_kind(&mut self, data: Option<&DataSpec>) -> LabelKind {
        match data.and_then(|d| d.label.as_deref()) {
            None | Some("rating") => LabelKind::Rating,
            Some("click") => LabelKind::Click,
            Some(other) => {
                let help = match closest(other, ["rating", "click"]) {
                    Some(best) => format!("did you mean `{best}`? (accepted: `rating`, `click`)"),
                    None => "accepted: `rating`, `click`".to_string(),
                };
                self.error(
                    YamlPath::keys(&["data", "label"]),
                    format!("unknown label kind `{other}`"),
                    help,
                );
                LabelKind::Rating
            }
        }
    }

    fn columns(&mut self, data: Option<&DataSpec>) -> EventColumns {
        let written = data.and_then(|d| d.columns.clone()).unwrap_or_default();
        let default = EventColumns::default();
        EventColumns {
            user: written.user.unwrap_or(default.user),
            item: written.item.unwrap_or(default.item),
            label: written.label.unwrap_or(default.label),
            time: written.time.unwrap_or(default.time),
        }
    }

    fn data(
        &mut self,
        data: Option<&DataSpec>,
        columns: &EventColumns,
        label_kind: LabelKind,
        protocol: Option<&ProtocolPlan>,
    ) -> Option<DataPlan> {
        let path = YamlPath::keys(&["data"]);
        let split_has_files = matches!(
            protocol.and_then(ProtocolPlan::split),
            Some(SplitPlan::Files { .. })
        );
        let events = match data.and_then(|d| d.events.as_deref()) {
            Some(written) if split_has_files => {
                self.error(
                    path.key("events"),
                    format!("`data.events` (`{written}`) is not used: the split names its own train and test files"),
                    "remove `data.events`, or use a `random`/`temporal` split of it",
                );
                None
            }
            Some(written) => Some(EventSource {
                path: self.file(&path.key("events"), written, "event file"),
                columns: columns.clone(),
                label_kind,
            }),
            None if split_has_files || self.failed_to_type(&path) => None,
            None => {
                self.error(
                    path.clone(),
                    "missing `data.events`: the Parquet file of logged events",
                    "add e.g. `events: ../data/ml-latest-small/ratings.parquet`",
                );
                return None;
            }
        };
        let items = data.and_then(|d| d.items.as_ref()).map(|items| ItemSource {
            path: self.file(&path.key("items").key("path"), &items.path, "item file"),
            id_column: items.id.clone().unwrap_or_else(|| "item_id".into()),
            text_template: items
                .text
                .clone()
                .unwrap_or_else(|| DEFAULT_ITEM_TEXT.into()),
        });
        Some(DataPlan {
            events,
            items,
            label_kind,
        })
    }

    fn protocol(
        &mut self,
        spec: &PipelineSpec,
        columns: &EventColumns,
        label_kind: LabelKind,
    ) -> Option<ProtocolPlan> {
        let path = YamlPath::keys(&["protocol"]);
        let Some(protocol) = &spec.protocol else {
            if !self.failed_to_type(&path) {
                self.error(
                    path,
                    "missing `protocol:`",
                    "add e.g. `protocol: {pool: {split: {random: {test: 0.2}}, rounds: 10}}`",
                );
            }
            return None;
        };
        let chosen = self.one_of(
            &path,
            "`protocol`",
            &[
                ("pool", protocol.pool.is_some()),
                ("replay", protocol.replay.is_some()),
                ("selection", protocol.selection.is_some()),
            ],
        )?;
        let path = path.key(chosen);
        match chosen {
            "pool" => self
                .pool(protocol.pool.as_ref()?, &path, columns, label_kind)
                .map(ProtocolPlan::Pool),
            "replay" => self
                .replay(protocol.replay.as_ref()?, &path)
                .map(ProtocolPlan::Replay),
            _ => {
                let selection = protocol.selection.as_ref()?;
                let split = self.split(&selection.split, &path.key("split"), columns, label_kind);
                Some(ProtocolPlan::Selection(SelectionProtocolPlan {
                    split: split?,
                    rounds: selection.rounds.unwrap_or(10),
                    warmup_epochs: selection.warmup_epochs.unwrap_or(0),
                }))
            }
        }
    }

    fn replay(&mut self, replay: &ReplaySpec, path: &YamlPath) -> Option<ReplayPlan> {
        let chosen = self.one_of(
            path,
            "`replay`",
            &[
                ("window", replay.window.is_some()),
                ("window_events", replay.window_events.is_some()),
            ],
        )?;
        let window = if chosen == "window" {
            let written = replay.window.as_deref()?;
            match parse_duration(written) {
                Some(seconds) => WindowPlan::Duration { seconds },
                None => {
                    self.error(
                        path.key("window"),
                        format!("`{written}` is not a duration"),
                        "write a positive number and a unit: `90s`, `30m`, `12h`, `7d` or `2w`",
                    );
                    return None;
                }
            }
        } else {
            let events = replay.window_events?;
            if events == 0 {
                self.error(
                    path.key("window_events"),
                    "`window_events` must be at least 1",
                    "use e.g. `window_events: 10000`",
                );
            }
            WindowPlan::Events { events }
        };
        let free_labels = replay.free_labels.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&free_labels) {
            self.error(
                path.key("free_labels"),
                format!("`free_labels` {free_labels} is not between 0 and 1"),
                "use e.g. `free_labels: 0.05`",
            );
        }
        if replay.pool_windows == Some(0) {
            self.error(
                path.key("pool_windows"),
                "`pool_windows` must be at least 1 (an event is a candidate in its own window)",
                "leave it out to keep every unlabelled event in the pool to the end",
            );
        }
        let batch_rows = replay.batch_rows.unwrap_or(1 << 20);
        if batch_rows == 0 {
            self.error(
                path.key("batch_rows"),
                "`batch_rows` must be at least 1",
                "leave it out for the default",
            );
        }
        let sort_memory = match replay.sort_memory.as_deref() {
            None => DEFAULT_SORT_MEMORY,
            Some(written) => match parse_memory(written) {
                Some(bytes) if bytes > 0 => bytes,
                _ => {
                    self.error(
                        path.key("sort_memory"),
                        format!("`{written}` is not a memory size"),
                        "write a positive whole number and a unit: `B`, `KiB`, `MiB`, `GiB` or \
                         `TiB` (e.g. `512MiB`)",
                    );
                    return None;
                }
            },
        };
        Some(ReplayPlan {
            window,
            warmup_windows: replay.warmup_windows.unwrap_or(1),
            free_labels,
            max_windows: replay.max_windows,
            pool_windows: replay.pool_windows,
            batch_rows,
            sort_memory,
        })
    }

    fn pool(
        &mut self,
        pool: &PoolSpec,
        path: &YamlPath,
        columns: &EventColumns,
        label_kind: LabelKind,
    ) -> Option<PoolPlan> {
        let split = self.split(&pool.split, &path.key("split"), columns, label_kind);
        let initial = self.initial(pool.labelled.as_ref(), &path.key("labelled"));
        let rounds = pool.rounds.unwrap_or(10);
        Some(PoolPlan {
            split: split?,
            initial: initial?,
            rounds,
        })
    }

    fn split(
        &mut self,
        split: &SplitSpec,
        path: &YamlPath,
        columns: &EventColumns,
        label_kind: LabelKind,
    ) -> Option<SplitPlan> {
        let chosen = self.one_of(
            path,
            "`split`",
            &[
                ("random", split.random.is_some()),
                ("temporal", split.temporal.is_some()),
                ("files", split.files.is_some()),
            ],
        )?;
        match chosen {
            "random" => {
                let random = split.random.as_ref()?;
                let test = random.test;
                if !(test > 0.0 && test < 1.0) {
                    self.error(
                        path.key("random").key("test"),
                        format!("test fraction {test} is not between 0 and 1"),
                        "use e.g. `test: 0.2`",
                    );
                }
                let cold_items = random.cold_items.unwrap_or(0.0);
                if !(0.0..1.0).contains(&cold_items) {
                    self.error(
                        path.key("random").key("cold_items"),
                        format!("cold item fraction {cold_items} is not in [0, 1)"),
                        "use e.g. `cold_items: 0.1` (a tenth of the items are never trained on)",
                    );
                }
                let validation = random.validation.unwrap_or(0.0);
                if !(0.0..1.0).contains(&validation) {
                    self.error(
                        path.key("random").key("validation"),
                        format!("validation fraction {validation} is not in [0, 1)"),
                        "use e.g. `validation: 0.1`",
                    );
                } else if test > 0.0 && test < 1.0 && test + validation >= 1.0 {
                    self.error(
                        path.key("random").key("validation"),
                        format!("test {test} + validation {validation} leave no training events"),
                        "keep `test + validation` below 1, e.g. `{test: 0.1, validation: 0.1}`",
                    );
                }
                Some(SplitPlan::Random {
                    test,
                    validation,
                    cold_items,
                })
            }
            "temporal" => {
                let temporal = split.temporal.as_ref()?;
                let leave_last = temporal.leave_last.unwrap_or(1);
                if leave_last == 0 {
                    self.error(
                        path.key("temporal").key("leave_last"),
                        "`leave_last` must be at least 1",
                        "use e.g. `leave_last: 1`",
                    );
                }
                Some(SplitPlan::Temporal {
                    leave_last,
                    validation_last: temporal.validation_last.unwrap_or(0),
                })
            }
            _ => {
                let files = split.files.as_ref()?;
                let source = |cx: &mut Self, key: &str, written: &str| EventSource {
                    path: cx.file(&path.key("files").key(key), written, "split file"),
                    columns: columns.clone(),
                    label_kind,
                };
                let train = source(self, "train", &files.train);
                let test = source(self, "test", &files.test);
                let validation = files
                    .validation
                    .as_ref()
                    .map(|written| Box::new(source(self, "validation", written)));
                Some(SplitPlan::Files {
                    train: Box::new(train),
                    test: Box::new(test),
                    validation,
                })
            }
        }
    }

    fn initial(
        &mut self,
        labelled: Option<&InitialLabelsSpec>,
        path: &YamlPath,
    ) -> Option<InitialLabels> {
        let Some(labelled) = labelled else {
            return Some(InitialLabels::Fraction(0.05));
        };
        let chosen = self.one_of(
            path,
            "`labelled`",
            &[
                ("fraction", labelled.fraction.is_some()),
                ("per_user", labelled.per_user.is_some()),
            ],
        )?;
        if chosen == "fraction" {
            let fraction = labelled.fraction?;
            if !(0.0..=1.0).contains(&fraction) {
                self.error(
                    path.key("fraction"),
                    format!("fraction {fraction} is not between 0 and 1"),
                    "use e.g. `fraction: 0.05`",
                );
            }
            Some(InitialLabels::Fraction(fraction))
        } else {
            Some(InitialLabels::PerUser(labelled.per_user?))
        }
    }

    fn embed(
        &mut self,
        roles: &NodeRoles,
        data: Option<&DataPlan>,
        graph: &mut Vec<PlanNode>,
    ) -> Option<EmbedPlan> {
        let node = roles.embed.as_ref()?;
        let OperatorSpec::Embed(spec) = &node.operator else {
            return None;
        };
        let EmbedSpec {
            model,
            model_dir,
            cache,
            batch_size,
            threads,
        } = spec;
        let path = node.path.key("embed");
        let items = data.and_then(|d| d.items.as_ref());
        if items.is_none() && !self.failed_to_type(&YamlPath::keys(&["data"])) {
            self.error(
                node.path.clone(),
                format!("`{}` embeds item text, but `data.items` names no item file", node.id),
                "add e.g. `items: {path: ../data/ml-latest-small/items.parquet, text: \"{title} | {genres}\"}` under `data:`",
            );
        }
        let model = self.value(
            "model",
            model.clone(),
            crate::model::encoder::DEFAULT_MODEL.to_string(),
        );
        let model_dir = model_dir.as_ref().map(|written| {
            self.params.push(("model_dir".into(), written.clone(), true));
            let resolved = self.base_dir.join(written);
            if !resolved.is_dir() {
                self.error(
                    path.key("model_dir"),
                    format!("model folder `{written}` not found (looked for {})", resolved.display()),
                    "point `model_dir` at a folder with config.json, tokenizer.json and model.safetensors, or remove it to look the model up by `model`",
                );
            }
            resolved
        });
        let cache = match cache {
            Some(written) => {
                self.params.push(("cache".into(), written.clone(), true));
                self.base_dir.join(written)
            }
            None => {
                let beside = items
                    .map(|i| default_cache_path(&i.path))
                    .unwrap_or_default();
                self.params
                    .push(("cache".into(), beside.display().to_string(), false));
                beside
            }
        };
        let batch_size = self.value("batch_size", *batch_size, 32);
        self.params.push((
            "threads".into(),
            threads.map_or_else(|| "all cores".to_string(), |t| t.to_string()),
            threads.is_some(),
        ));
        for (key, value) in [
            ("batch_size", batch_size),
            ("threads", threads.unwrap_or(1)),
        ] {
            if value == 0 {
                self.error(
                    path.key(key),
                    format!("`{key}` must be at least 1"),
                    format!("set `{key}` to a positive integer"),
                );
            }
        }
        graph.push(PlanNode {
            id: node.id.clone(),
            operator: "embed",
            inputs: node.inputs.clone(),
            params: self.take_params(),
        });
        Some(EmbedPlan {
            node: node.id.clone(),
            model,
            model_dir,
            cache,
            batch_size,
            threads: *threads,
        })
    }

    /// Every `train` node and every `fuse` node over them, with the checks that tie them:
    /// one shared training schedule, fusions of models with one loss, learned weights only
    /// where the split sets validation events apart.
    #[allow(clippy::too_many_arguments)]
    fn models(
        &mut self,
        roles: &NodeRoles,
        embed: Option<&EmbedPlan>,
        seed: u64,
        device: Option<DeviceChoice>,
        label_kind: LabelKind,
        has_validation: bool,
        graph: &mut Vec<PlanNode>,
    ) -> Option<ModelsPlan> {
        let mut trained = Vec::new();
        let mut complete = true;
        for node in &roles.train {
            match self.train(node, embed, seed, device, label_kind, graph) {
                Some(params) => trained.push(TrainedModel {
                    node: node.id.clone(),
                    params,
                }),
                None => complete = false,
            }
        }
        if let [first, rest @ ..] = trained.as_slice() {
            for other in rest {
                self.check_shared_schedule(first, other, roles);
            }
        }
        let mut fused = Vec::new();
        for node in &roles.fuse {
            match self.fuse(node, &trained, has_validation, graph) {
                Some(plan) => fused.push(plan),
                None => complete = false,
            }
        }
        (complete && !trained.is_empty()).then_some(ModelsPlan { trained, fused })
    }

    /// Reports where `other` trains on another schedule than `first`: the protocols train
    /// every model on the same samples at the same rounds.
    fn check_shared_schedule(
        &mut self,
        first: &TrainedModel,
        other: &TrainedModel,
        roles: &NodeRoles,
    ) {
        let Some(node) = roles.train.iter().find(|n| n.id == other.node) else {
            return;
        };
        let (a, b) = (&first.params, &other.params);
        let differing = [
            ("epochs", a.epochs.to_string(), b.epochs.to_string()),
            (
                "epochs_per_round",
                a.epochs_per_round.to_string(),
                b.epochs_per_round.to_string(),
            ),
            ("refit", a.refit.to_string(), b.refit.to_string()),
        ];
        for (key, wanted, found) in differing {
            if wanted != found {
                self.error(
                    node.path.key("train").key(b.model.name()).key(key),
                    format!(
                        "`{}` trains with `{key}: {found}`, `{}` with `{key}: {wanted}`",
                        other.node, first.node
                    ),
                    format!(
                        "the train nodes of a pipeline share one schedule (every round trains each on the same labels); write `{key}: {wanted}` in both"
                    ),
                );
            }
        }
    }

    /// One `fuse` node over the trained models `trained`.
    fn fuse(
        &mut self,
        node: &NodeSpec,
        trained: &[TrainedModel],
        has_validation: bool,
        graph: &mut Vec<PlanNode>,
    ) -> Option<FusePlan> {
        let OperatorSpec::Fuse(FuseSpec { weights, learn }) = &node.operator else {
            return None;
        };
        let path = node.path.key("fuse");
        let parts: Vec<&TrainedModel> = node
            .inputs
            .iter()
            .filter_map(|input| trained.iter().find(|t| &t.node == input))
            .collect();
        if parts.len() != node.inputs.len() || parts.len() < 2 {
            // The edge check reported it.
            return None;
        }
        let losses: Vec<Loss> = parts.iter().map(|p| p.params.loss).collect();
        if losses.iter().any(|&l| l != losses[0]) {
            let each: Vec<String> = parts
                .iter()
                .map(|p| format!("`{}` {}", p.node, p.params.loss))
                .collect();
            self.error(
                node.path.clone(),
                format!(
                    "a fusion averages predictions of one kind, but its parts train with different losses: {}",
                    each.join(", ")
                ),
                "give the fused train nodes the same `loss:`",
            );
        }
        let fused = match (weights, learn.as_deref()) {
            (Some(_), Some(_)) => {
                self.error(
                    path.clone(),
                    "`weights` and `learn` both set the fusion's weights",
                    "keep one: `weights: [0.5, 0.5]` or `learn: validation`",
                );
                None
            }
            (None, Some("validation")) => {
                if !has_validation {
                    self.error(
                        path.key("learn"),
                        "`learn: validation` fits the weights on validation events, but the split has none",
                        "add them, e.g. `split: {random: {test: 0.1, validation: 0.1}}`, or give `weights: [0.5, 0.5]`",
                    );
                }
                self.params
                    .push(("learn".into(), "validation".into(), true));
                Some(FuseWeights::LearnedOnValidation)
            }
            (None, Some(other)) => {
                self.error(
                    path.key("learn"),
                    format!("unknown `learn: {other}`"),
                    "use `learn: validation` (weights fitted on the validation events after every fit), or give `weights:`",
                );
                None
            }
            (written, None) => {
                let weights = written.clone().unwrap_or_else(|| vec![1.0; parts.len()]);
                let total: f64 = weights.iter().sum();
                if weights.len() != parts.len() {
                    self.error(
                        path.key("weights"),
                        format!("{} weights for {} inputs", weights.len(), parts.len()),
                        "give one weight per input, in the order of `inputs:`",
                    );
                    None
                } else if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
                    || total.is_nan()
                    || total <= 0.0
                {
                    self.error(
                        path.key("weights"),
                        "fusion weights must be finite, non-negative and not all 0",
                        "use e.g. `weights: [0.7, 0.3]`",
                    );
                    None
                } else {
                    let scaled: Vec<f32> = weights.iter().map(|w| (w / total) as f32).collect();
                    let shown: Vec<String> = scaled.iter().map(|w| format!("{w}")).collect();
                    self.params.push((
                        "weights".into(),
                        format!("[{}]", shown.join(", ")),
                        written.is_some(),
                    ));
                    Some(FuseWeights::Given(scaled))
                }
            }
        };
        graph.push(PlanNode {
            id: node.id.clone(),
            operator: "fuse",
            inputs: node.inputs.clone(),
            params: self.take_params(),
        });
        Some(FusePlan {
            node: node.id.clone(),
            parts: node.inputs.clone(),
            weights: fused?,
        })
    }

    /// The loss of model `name` (a trained model, or a fusion: its parts' loss).
    fn model_loss(models: &ModelsPlan, name: &str) -> Option<Loss> {
        let part = match models.fused(name) {
            Some(fusion) => fusion.parts.first()?,
            None => name,
        };
        models.trained(part).map(|t| t.params.loss)
    }

    fn train(
        &mut self,
        node: &NodeSpec,
        embed: Option<&EmbedPlan>,
        seed: u64,
        device: Option<DeviceChoice>,
        label_kind: LabelKind,
        graph: &mut Vec<PlanNode>,
    ) -> Option<TrainParams> {
        let OperatorSpec::Train(spec) = &node.operator else {
            return None;
        };
        let TrainSpec {
            mf,
            text_mf,
            two_tower,
        } = spec.as_ref();
        let path = node.path.key("train");
        let family = self.one_of(
            &path,
            "`train`",
            &[
                ("mf", mf.is_some()),
                ("text_mf", text_mf.is_some()),
                ("two_tower", two_tower.is_some()),
            ],
        )?;
        let options: TrainOptions = match family {
            "mf" => mf.clone()?,
            "text_mf" => text_mf.clone()?,
            _ => two_tower.clone()?,
        };
        let path = path.key(family);
        let reads_text = embed.is_some_and(|e| node.inputs.contains(&e.node));
        if family != "mf" && !reads_text && !self.failed_to_type(&YamlPath::keys(&["nodes"])) {
            let help = match embed {
                Some(e) => format!("add `{}` to the inputs: `inputs: [labelled, {}]`", e.node, e.node),
                None => "add an embed node, e.g. `item_text: {embed: {}, input: items}`, and list it in this node's inputs: `inputs: [labelled, item_text]`".to_string(),
            };
            self.error(
                node.path.clone(),
                format!(
                    "`{family}` reads item text vectors, but `{}` reads no `embed` node",
                    node.id
                ),
                help,
            );
        }
        let key = |name: &str| format!("{family}.{name}");
        let dim = self.value(&key("dim"), options.dim, defaults::DIM);
        let init_std = self.value(&key("init_std"), options.init_std, defaults::INIT_STD);
        let members = self.value(&key("members"), options.members, defaults::MEMBERS);
        let epochs = self.value(&key("epochs"), options.epochs, defaults::EPOCHS);
        let epochs_per_round = self.value(
            &key("epochs_per_round"),
            options.epochs_per_round,
            defaults::EPOCHS_PER_ROUND,
        );
        let batch_size = self.value(&key("batch_size"), options.batch_size, defaults::BATCH_SIZE);
        let refit_name = self.value(
            &key("refit"),
            options.refit.clone(),
            defaults::REFIT.to_string(),
        );
        let mut positive = vec![
            ("dim", dim),
            ("members", members),
            ("batch_size", batch_size),
        ];
        let model = if family == "two_tower" {
            let hidden = self.value(&key("hidden"), options.hidden, defaults::HIDDEN);
            let dropout = self.value(&key("dropout"), options.dropout, defaults::DROPOUT);
            positive.push(("hidden", hidden));
            if !(0.0..1.0).contains(&dropout) {
                self.error(
                    path.key("dropout"),
                    format!("dropout {dropout} is not in [0, 1)"),
                    "use e.g. `dropout: 0.1`",
                );
            }
            if options.mc_dropout.is_some() && dropout == 0.0 {
                self.error(
                    path.key("mc_dropout"),
                    "Monte Carlo dropout with `dropout: 0` gives identical passes",
                    "set `dropout` above 0 (e.g. 0.1), or use ensemble `members`",
                );
            }
            ModelKind::TwoTower {
                dim,
                hidden,
                dropout,
                init_std,
            }
        } else {
            for (name, written) in [
                ("hidden", options.hidden.is_some()),
                ("dropout", options.dropout.is_some()),
                ("mc_dropout", options.mc_dropout.is_some()),
            ] {
                if written {
                    self.error(
                        path.key(name),
                        format!("`{name}` is an option of `two_tower`, not of `{family}`"),
                        "remove it, or train `two_tower`",
                    );
                }
            }
            if family == "mf" {
                ModelKind::Mf { dim, init_std }
            } else {
                ModelKind::TextMf { dim, init_std }
            }
        };
        let uncertainty = match options.mc_dropout.filter(|_| family == "two_tower") {
            Some(passes) => {
                self.params
                    .push((key("mc_dropout"), passes.to_string(), true));
                if options.members.is_some_and(|m| m > 1) {
                    self.error(
                        path.key("mc_dropout"),
                        "a model measures uncertainty by ensemble `members` or by `mc_dropout` passes, not both",
                        "keep one: `members: 4` or `mc_dropout: 8`",
                    );
                }
                if passes < 2 {
                    self.error(
                        path.key("mc_dropout"),
                        format!("`mc_dropout` needs at least 2 passes to measure a variance, got {passes}"),
                        "use e.g. `mc_dropout: 8`",
                    );
                }
                UncertaintyParams::McDropout { passes }
            }
            None => UncertaintyParams::Ensemble { members },
        };
        for (name, value) in positive {
            if value == 0 {
                self.error(
                    path.key(name),
                    format!("`{name}` must be at least 1"),
                    format!("set `{name}` to a positive integer"),
                );
            }
        }
        if !(init_std.is_finite() && init_std >= 0.0) {
            self.error(
                path.key("init_std"),
                format!("`init_std` {init_std} must be a finite number >= 0"),
                "use e.g. `init_std: 0.1`",
            );
        }
        let refit = match refit_name.as_str() {
            "new_labels" => RefitPolicy::NewLabels,
            "all_labels" => RefitPolicy::AllLabels,
            "rehearsal" => RefitPolicy::Rehearsal {
                ratio: self.value(&key("rehearsal"), options.rehearsal, defaults::REHEARSAL),
            },
            other => {
                self.error(
                    path.key("refit"),
                    format!("unknown refit policy `{other}`"),
                    "use `new_labels` (fine-tune on this round's labels), `rehearsal` (this round's labels and `rehearsal` x as many earlier ones) or `all_labels` (train on every label)",
                );
                RefitPolicy::NewLabels
            }
        };
        if options.rehearsal.is_some() && !matches!(refit, RefitPolicy::Rehearsal { .. }) {
            self.error(
                path.key("rehearsal"),
                "`rehearsal` sets how many earlier labels `refit: rehearsal` mixes in",
                "add `refit: rehearsal`, or remove `rehearsal`",
            );
        }
        let loss = self.loss(&key("loss"), options.loss.clone(), label_kind, &path);
        let optimizer = self.optimizer(options.optimizer.as_ref(), &path.key("optimizer"));
        graph.push(PlanNode {
            id: node.id.clone(),
            operator: "train",
            inputs: node.inputs.clone(),
            params: self.take_params(),
        });
        Some(TrainParams {
            model,
            uncertainty,
            loss,
            optimizer: optimizer?,
            epochs,
            epochs_per_round,
            refit,
            batch_size,
            device: device?,
            seed,
        })
    }

    /// The train node's `loss:` (recorded under `key`), by default the label kind's.
    /// `squared` on clicks and `cross_entropy` on ratings are the pipeline's choice to make;
    /// only an unknown name is an error.
    fn loss(
        &mut self,
        key: &str,
        written: Option<String>,
        label_kind: LabelKind,
        path: &YamlPath,
    ) -> Loss {
        let default = Loss::default_for(label_kind);
        let name = self.value(key, written, default.name().to_string());
        if let Some(loss) = Loss::from_name(&name) {
            return loss;
        }
        let names = Loss::ALL.map(Loss::name);
        let accepted = names.map(|n| format!("`{n}`")).join(", ");
        let help = match closest(&name, names) {
            Some(best) => format!("did you mean `{best}`? (accepted: {accepted})"),
            None => format!("accepted: {accepted}"),
        };
        self.error(path.key("loss"), format!("unknown loss `{name}`"), help);
        default
    }

    fn optimizer(
        &mut self,
        written: Option<&OptimizerSpec>,
        path: &YamlPath,
    ) -> Option<OptimizerParams> {
        let default = OptimizerSpec {
            sgd: Some(Default::default()),
            adam: None,
        };
        let spec = written.unwrap_or(&default);
        let chosen = self.one_of(
            path,
            "`optimizer`",
            &[("sgd", spec.sgd.is_some()), ("adam", spec.adam.is_some())],
        )?;
        let params = if chosen == "sgd" {
            let sgd = spec.sgd.clone()?;
            OptimizerParams::Sgd {
                lr: self.value("sgd.lr", sgd.lr, 0.02),
                weight_decay: self.value("sgd.weight_decay", sgd.weight_decay, 0.1),
            }
        } else {
            let adam = spec.adam.clone()?;
            OptimizerParams::Adam {
                lr: self.value("adam.lr", adam.lr, 0.005),
                beta1: self.value("adam.beta1", adam.beta1, 0.9),
                beta2: self.value("adam.beta2", adam.beta2, 0.999),
                eps: self.value("adam.eps", adam.eps, 1e-8),
                weight_decay: self.value("adam.weight_decay", adam.weight_decay, 0.1),
            }
        };
        let (lr, weight_decay) = match params {
            OptimizerParams::Sgd { lr, weight_decay }
            | OptimizerParams::Adam {
                lr, weight_decay, ..
            } => (lr, weight_decay),
        };
        if !(lr.is_finite() && lr > 0.0) {
            self.error(
                path.key(chosen).key("lr"),
                format!("learning rate {lr} must be a finite number > 0"),
                "use e.g. `lr: 0.01`",
            );
        }
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            self.error(
                path.key(chosen).key("weight_decay"),
                format!("weight decay {weight_decay} must be a finite number >= 0"),
                "use e.g. `weight_decay: 0.02`",
            );
        }
        Some(params)
    }

    fn score(
        &mut self,
        roles: &NodeRoles,
        models: Option<&ModelsPlan>,
        graph: &mut Vec<PlanNode>,
    ) -> Option<ScorePlan> {
        let node = roles.score.as_ref()?;
        let OperatorSpec::Score(ScoreSpec { uncertainty }) = &node.operator else {
            return None;
        };
        let model = roles.model_read_by(node, "pool");
        // A fusion's members are all its parts' members: their spread is the parts'
        // disagreement, an ensemble's uncertainty.
        let train = model
            .as_deref()
            .and_then(|m| models?.trained(m))
            .map(|t| &t.params);
        let fused = model.as_deref().and_then(|m| models?.fused(m)).is_some();
        let measured = match train.map(|t| t.uncertainty) {
            _ if fused => "ensemble",
            Some(UncertaintyParams::McDropout { .. }) => "mc_dropout",
            Some(UncertaintyParams::Ensemble { members }) if members > 1 => "ensemble",
            _ => "none",
        };

        let written = uncertainty.clone();
        let path = node.path.key("score").key("uncertainty");
        let chosen = self.value("uncertainty", written.clone(), measured.to_string());
        let mode = match chosen.as_str() {
            "ensemble" => UncertaintyMode::Ensemble,
            "mc_dropout" => UncertaintyMode::McDropout,
            "none" => UncertaintyMode::None,
            other => {
                self.error(
                    path.clone(),
                    format!("unknown uncertainty `{other}`"),
                    "use `ensemble` (variance over members), `mc_dropout` (variance over dropout passes) or `none`",
                );
                UncertaintyMode::None
            }
        };
        if mode != UncertaintyMode::None && chosen != measured && (train.is_some() || fused) {
            let help = match chosen.as_str() {
                "ensemble" => "set `members: 4` (or more) in the train node's options",
                _ => "train `two_tower` with `mc_dropout: 8` (passes)",
            };
            let has = match measured {
                "none" => "measures none (1 member)".to_string(),
                other => format!("measures `{other}`"),
            };
            self.error(
                path,
                format!(
                    "`{chosen}` uncertainty needs a model that measures it; the train node {has}"
                ),
                help,
            );
        }
        graph.push(PlanNode {
            id: node.id.clone(),
            operator: "score",
            inputs: node.inputs.clone(),
            params: self.take_params(),
        });
        Some(ScorePlan {
            model: model?,
            uncertainty: mode,
        })
    }

    fn select(
        &mut self,
        roles: &NodeRoles,
        score: Option<&ScorePlan>,
        embed: Option<&EmbedPlan>,
        needed: Option<String>,
        graph: &mut Vec<PlanNode>,
    ) -> Option<Option<SelectPlan>> {
        let Some(node) = roles.select.as_ref() else {
            let nodes_failed = self.failed_to_type(&YamlPath::keys(&["nodes"]));
            if let (Some(why), Some(_), false) = (needed, &roles.score, nodes_failed) {
                self.error(
                    YamlPath::keys(&["nodes"]),
                    why,
                    "add e.g. `pick: {select: {strategy: uncertainty, budget: 500}, input: scores}`, or set `rounds: 0` in a pool protocol",
                );
            }
            return Some(None);
        };
        let OperatorSpec::Select(SelectSpec {
            strategy,
            budget,
            per_user,
            space,
            candidates,
        }) = &node.operator
        else {
            return None;
        };
        let path = node.path.key("select");
        let Some(def) = Strategy::by_name(strategy) else {
            let names: Vec<&str> = STRATEGIES.iter().map(|d| d.name).collect();
            let listed = names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let help = match closest(strategy, names.iter().copied()) {
                Some(best) => format!("did you mean `{best}`? (accepted: {listed})"),
                None => format!("accepted: {listed}"),
            };
            self.error(
                path.key("strategy"),
                format!("unknown strategy `{strategy}`"),
                help,
            );
            return None;
        };
        if def.needs_uncertainty && score.is_some_and(|s| s.uncertainty == UncertaintyMode::None) {
            self.error(
                path.key("strategy"),
                format!("strategy `{}` ranks by uncertainty, but the score node measures none", def.name),
                "train an ensemble (`members: 4` in the train node) or a `two_tower` with `mc_dropout: 8`, so the score node measures uncertainty",
            );
        }
        if *budget == 0 {
            self.error(
                path.key("budget"),
                "`budget` must be at least 1",
                "set the number of samples labelled per round, e.g. `budget: 500`",
            );
        }
        self.params.push(("strategy".into(), def.name.into(), true));
        self.params
            .push(("budget".into(), budget.to_string(), true));
        let per_user = self.value("per_user", *per_user, false);
        let diversity = if def.diverse {
            let default_space = if embed.is_some() { "text" } else { "factors" };
            let space = match self
                .value("space", space.clone(), default_space.to_string())
                .as_str()
            {
                "text" => {
                    if embed.is_none() {
                        self.error(
                            path.key("space"),
                            "`space: text` measures distances between item text vectors, but the pipeline embeds no text",
                            "add an embed node (e.g. `item_text: {embed: {}, input: items}`), or use `space: factors`",
                        );
                    }
                    DiversitySpace::Text
                }
                "factors" => DiversitySpace::Factors,
                other => {
                    self.error(
                        path.key("space"),
                        format!("unknown space `{other}`"),
                        "use `text` (item text vectors) or `factors` (the model's user and item rows)",
                    );
                    DiversitySpace::Factors
                }
            };
            let candidates = self.value(
                "candidates",
                *candidates,
                (*budget as usize).saturating_mul(10),
            );
            if candidates < *budget as usize {
                self.error(
                    path.key("candidates"),
                    format!("{candidates} candidates cannot fill a budget of {budget}"),
                    "set `candidates` to at least the budget (default 10 x budget)",
                );
            }
            if per_user {
                self.error(
                    path.key("per_user"),
                    format!(
                        "`{}` spreads one batch over the whole pool; it has no per-user budget",
                        def.name
                    ),
                    "remove `per_user`",
                );
            }
            Some(DiversityPlan { space, candidates })
        } else {
            for (name, written) in [
                ("space", space.is_some()),
                ("candidates", candidates.is_some()),
            ] {
                if written {
                    self.error(
                        path.key(name),
                        format!("`{name}` is an option of `coreset` and `uncertainty_diversity`, not of `{}`", def.name),
                        "remove it",
                    );
                }
            }
            None
        };
        graph.push(PlanNode {
            id: node.id.clone(),
            operator: "select",
            inputs: node.inputs.clone(),
            params: self.take_params(),
        });
        Some(Some(SelectPlan {
            node: node.id.clone(),
            strategy: def.strategy,
            budget: *budget,
            per_user,
            diversity,
        }))
    }

    /// Every `evaluate` node; their metric names carry the node's id when there are several.
    fn evaluations(
        &mut self,
        roles: &NodeRoles,
        label_kind: LabelKind,
        models: Option<&ModelsPlan>,
        graph: &mut Vec<PlanNode>,
    ) -> Vec<EvaluatePlan> {
        let several = roles.evaluate.len() > 1;
        roles
            .evaluate
            .iter()
            .filter_map(|node| {
                let model = roles.model_read_by(node, "test")?;
                let loss = models.and_then(|m| Self::model_loss(m, &model));
                let prefix = if several {
                    format!("{}/", node.id)
                } else {
                    String::new()
                };
                self.evaluate(node, model, prefix, label_kind, loss, graph)
            })
            .collect()
    }

    /// A replay tests the scored model prequentially, on each window before it trains: one
    /// evaluate node, reading the scored model.
    fn check_replay_evaluations(
        &mut self,
        roles: &NodeRoles,
        evaluate: &[EvaluatePlan],
        score: &ScorePlan,
    ) {
        for (plan, node) in evaluate.iter().zip(&roles.evaluate).skip(1) {
            self.error(
                node.path.clone(),
                format!("a second `evaluate` node (`{}`) in a replay", plan.node),
                format!(
                    "a replay tests the scored model `{}` on each window before training on \
                     it; keep one evaluate node",
                    score.model
                ),
            );
        }
        if let (Some(plan), Some(node)) = (evaluate.first(), roles.evaluate.first())
            && plan.model != score.model
        {
            self.error(
                node.path.clone(),
                format!(
                    "`{}` evaluates `{}`, but a replay tests the scored model `{}`",
                    plan.node, plan.model, score.model
                ),
                format!("write `inputs: [test, {}]`", score.model),
            );
        }
    }

    fn evaluate(
        &mut self,
        node: &NodeSpec,
        model: String,
        prefix: String,
        label_kind: LabelKind,
        loss: Option<Loss>,
        graph: &mut Vec<PlanNode>,
    ) -> Option<EvaluatePlan> {
        let OperatorSpec::Evaluate(EvaluateSpec {
            metrics,
            relevant,
            candidates,
        }) = &node.operator
        else {
            return None;
        };
        let path = node.path.key("evaluate");
        // A BPR model's scores rank items; they do not predict labels, so only ranking
        // metrics describe it.
        let ranks_only = loss == Some(Loss::Bpr);
        let default_names = match label_kind {
            _ if ranks_only => vec!["ndcg@10", "recall@10", "mrr@10", "hit@10"],
            LabelKind::Rating => vec!["rmse", "mae", "ndcg@10", "recall@10"],
            LabelKind::Click => vec!["auc", "logloss", "ndcg@10", "recall@10"],
        };
        let names: Vec<String> = metrics
            .clone()
            .unwrap_or_else(|| default_names.iter().map(|s| s.to_string()).collect());
        self.params
            .push(("metrics".into(), names.join(", "), metrics.is_some()));
        let mut parsed = Vec::new();
        for (n, name) in names.iter().enumerate() {
            match Metric::parse(name) {
                Ok(metric) if ranks_only && metric.compares_labels() => self.error(
                    path.key("metrics").index(n),
                    format!(
                        "`{name}` compares predictions with labels, but `loss: bpr` trains \
                         ranking scores that predict no label"
                    ),
                    "use ranking metrics (ndcg@10, recall@10, mrr@10, hit@10, ...), or train \
                     with `loss: squared` / `cross_entropy` to predict labels",
                ),
                Ok(metric) => parsed.push(metric),
                Err(message) => {
                    self.error(path.key("metrics").index(n), message, metric_help(name));
                }
            }
        }
        let default_relevant = match label_kind {
            LabelKind::Rating => 4.0,
            LabelKind::Click => 1.0,
        };
        let relevant = self.value("relevant", *relevant, default_relevant);
        let candidates_written = candidates.is_some();
        let candidates = match candidates.unwrap_or(CandidatesSpec::All) {
            CandidatesSpec::All => CandidateSet::All,
            CandidatesSpec::TestItems => CandidateSet::TestItems,
            CandidatesSpec::Sampled { negatives } => {
                if negatives == 0 {
                    self.error(
                        path.key("candidates").key("sampled").key("negatives"),
                        "`negatives` must be at least 1",
                        "use e.g. `{sampled: {negatives: 100}}`, or `candidates: all`",
                    );
                }
                CandidateSet::Sampled { negatives }
            }
        };
        self.params.push((
            "candidates".into(),
            candidates.to_string(),
            candidates_written,
        ));
        graph.push(PlanNode {
            id: node.id.clone(),
            operator: "evaluate",
            inputs: node.inputs.clone(),
            params: self.take_params(),
        });
        Some(EvaluatePlan {
            node: node.id.clone(),
            model,
            prefix,
            metrics: parsed,
            relevant,
            candidates,
        })
    }

    /// `cluster:`, with its defaults (one process).
    fn cluster(&mut self, spec: &PipelineSpec) -> ClusterPlan {
        let single = ClusterPlan::single();
        let Some(written) = spec.cluster.clone() else {
            return single;
        };
        let cluster = ClusterPlan {
            processes: written.processes.unwrap_or(single.processes),
            process: written.process.unwrap_or(single.process),
            hosts: match written.hostfile {
                Some(file) => ClusterHosts::File(self.base_dir.join(file)),
                None => ClusterHosts::Local {
                    port: written.port.unwrap_or(ClusterPlan::DEFAULT_PORT),
                },
            },
            timeout_s: written.timeout_s.unwrap_or(single.timeout_s),
            resumed_after: None,
        };
        if let Some(problem) = cluster.problem() {
            self.error(
                YamlPath::keys(&["cluster"]),
                problem,
                "e.g. `cluster: {processes: 2, process: 0}` (process indices start at 0; \
                 --processes and --process on the command line win)",
            );
        }
        cluster
    }

    fn output(&mut self, spec: &PipelineSpec, name: &str) -> OutputPlan {
        let output = spec.output.clone().unwrap_or_default();
        let dir = match output.dir {
            Some(dir) => self.base_dir.join(dir),
            None => PathBuf::from("results").join(name),
        };
        let path = YamlPath::keys(&["output", "recommendations"]);
        let recommendations = output.recommendations.map(|written| {
            let k = written.k.unwrap_or(20);
            if k == 0 {
                self.error(path.key("k"), "`k` must be at least 1", "use e.g. `k: 20`");
            }
            let users = match written.users.as_deref().unwrap_or("test") {
                "test" => RecommendedUsers::Test,
                "all" => RecommendedUsers::All,
                other => {
                    self.error(
                        path.key("users"),
                        format!("unknown user set `{other}`"),
                        "use `test` (users with test events) or `all` (every user)",
                    );
                    RecommendedUsers::Test
                }
            };
            RecommendationsPlan {
                k,
                users,
                every_round: written.every_round.unwrap_or(false),
            }
        });
        OutputPlan {
            dir,
            plots: output.plots.unwrap_or(true),
            recommendations,
            checkpoint_every: spec.checkpoint.as_ref().and_then(|c| c.every).unwrap_or(1),
        }
    }

    /// The train node's `early_stopping:`, checked against the split (it reads validation
    /// metrics) and the evaluate node (which computes them).
    fn early_stopping(
        &mut self,
        roles: &NodeRoles,
        protocol: Option<&ProtocolPlan>,
        evaluate: Option<&EvaluatePlan>,
        graph: &mut [PlanNode],
    ) -> Option<EarlyStopping> {
        if roles.train.len() > 1 {
            for node in &roles.train {
                if let Some((family, _)) = written_early_stopping(node) {
                    self.error(
                        node.path.key("train").key(family).key("early_stopping"),
                        "early stopping chooses one model's epochs, but the train nodes of a \
                         pipeline share one schedule",
                        "remove `early_stopping` and set `epochs:` in every train node, or \
                         train one model",
                    );
                }
            }
            return None;
        }
        let node = roles.train.first()?;
        let (family, written) = written_early_stopping(node)?;
        let path = node.path.key("train").key(family).key("early_stopping");
        let patience = written.patience.unwrap_or(3);
        let max_epochs = written.max_epochs.unwrap_or(100);
        for (name, value) in [("patience", patience), ("max_epochs", max_epochs)] {
            if value == 0 {
                self.error(
                    path.key(name),
                    format!("`{name}` must be at least 1"),
                    format!("set `{name}` to a positive integer"),
                );
            }
        }
        let metric = match Metric::parse(&written.metric) {
            Ok(metric) => Some(metric),
            Err(message) => {
                self.error(path.key("metric"), message, metric_help(&written.metric));
                None
            }
        };
        match protocol {
            Some(ProtocolPlan::Replay(_)) => self.error(
                path.clone(),
                "a replay has no validation split to stop on",
                "remove `early_stopping`, or use the `pool` or `selection` protocol",
            ),
            Some(p) if p.split().is_some_and(|s| !s.has_validation()) => self.error(
                path.clone(),
                "early stopping reads validation metrics, but the split has no validation set",
                "add one, e.g. `split: {random: {test: 0.1, validation: 0.1}}` or \
                 `{temporal: {leave_last: 1, validation_last: 1}}`",
            ),
            _ => {}
        }
        match (evaluate, metric) {
            (None, _) => self.error(
                path.key("metric"),
                "early stopping reads a metric of the `evaluate` node, but there is none",
                "add e.g. `report: {evaluate: {metrics: [ndcg@10]}, inputs: [test, model]}`",
            ),
            (Some(plan), Some(metric)) if !plan.metrics.contains(&metric) => self.error(
                path.key("metric"),
                format!("`{metric}` is not among the evaluate node's metrics"),
                format!("add `{metric}` to `evaluate.metrics`, or watch one of them"),
            ),
            _ => {}
        }
        let stopping = EarlyStopping {
            metric: metric?,
            patience,
            max_epochs,
        };
        if let Some(train) = graph.iter_mut().find(|n| n.id == node.id) {
            train.params.extend([
                (
                    "early_stopping.metric".into(),
                    stopping.metric.to_string(),
                    true,
                ),
                (
                    "early_stopping.patience".into(),
                    patience.to_string(),
                    written.patience.is_some(),
                ),
                (
                    "early_stopping.max_epochs".into(),
                    max_epochs.to_string(),
                    written.max_epochs.is_some(),
                ),
            ]);
        }
        Some(stopping)
    }
}

/// The family and `early_stopping:` of a train node, when it has one.
fn written_early_stopping(node: &NodeSpec) -> Option<(&'static str, &EarlyStoppingSpec)> {
    let OperatorSpec::Train(spec) = &node.operator else {
        return None;
    };
    [
        ("mf", &spec.mf),
        ("text_mf", &spec.text_mf),
        ("two_tower", &spec.two_tower),
    ]
    .into_iter()
    .find_map(|(family, options)| Some((family, options.as_ref()?.early_stopping.as_ref()?)))
}

/// The help line for a metric name that did not parse: the closest known name, else the
/// list of every metric.
fn metric_help(name: &str) -> String {
    let known: Vec<String> = METRIC_DOCS
        .iter()
        .map(|(name, _)| name.replace('K', "10"))
        .collect();
    match closest(name, known.iter().map(String::as_str)) {
        Some(best) => format!("did you mean `{best}`?"),
        None => {
            let names: Vec<&str> = METRIC_DOCS.iter().map(|(name, _)| *name).collect();
            format!("accepted: {}", names.join(", "))
        }
    }
}

/// The default embedding cache of an item file: `<stem>.embeddings.parquet` beside it.
fn default_cache_path(items: &Path) -> PathBuf {
    let stem = items
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "items".into());
    items.with_file_name(format!("{stem}.embeddings.parquet"))
}

/// The built-in sources, shown first in the graph.
fn source_nodes(data: &Option<DataPlan>) -> Vec<PlanNode> {
    let mut nodes = Vec::new();
    let events = data.as_ref().and_then(|d| d.events.as_ref());
    nodes.push(PlanNode {
        id: "events".into(),
        operator: "source",
        inputs: Vec::new(),
        params: events
            .map(|e| vec![("path".into(), e.path.display().to_string(), true)])
            .unwrap_or_default(),
    });
    if let Some(items) = data.as_ref().and_then(|d| d.items.as_ref()) {
        nodes.push(PlanNode {
            id: "items".into(),
            operator: "source",
            inputs: Vec::new(),
            params: vec![
                ("path".into(), items.path.display().to_string(), true),
                ("text".into(), items.text_template.clone(), true),
            ],
        });
    }
    for (id, from) in [
        ("labelled", "events"),
        ("pool", "events"),
        ("test", "events"),
    ] {
        nodes.push(PlanNode {
            id: id.into(),
            operator: "source",
            inputs: vec![from.into()],
            params: Vec::new(),
        });
    }
    nodes
}
