//! From a typed spec to a [`Plan`]: resolve defaults, check values and edges, collect every
//! problem with its YAML path. [`Resolver::plan`] reads a pipeline top to bottom: the
//! top-level sections, then each operator's nodes through the planner its registry entry
//! holds ([`operators`]), a train node's family options through its family's planner
//! ([`families`]) and a select node's strategy options through its strategy's planner
//! ([`strategies`]); each part of the file has its own module.

mod families;
mod models;
mod nodes;
mod operators;
mod protocol;
mod strategies;

pub(crate) use families::{FamilyPlanner, plan_mf, plan_text_mf, plan_two_tower};
use operators::{HeldOut, PlannedModels};
pub(crate) use operators::{
    NodePlans, OperatorPlanner, plan_embed, plan_evaluate, plan_fuse, plan_score, plan_select,
    plan_train,
};
#[cfg(test)]
pub(crate) use protocol::parse_duration;
pub(crate) use strategies::{StrategyPlanner, plan_k_center, plan_top_of_key};

use protocol::WrittenProtocol;

use std::path::{Path, PathBuf};

use crate::registry::{OPERATORS, defaults};
use crate::spec::diagnostic::{Diagnostic, Diagnostics};
use crate::spec::path::{Segment, YamlPath};
use crate::spec::{LoadedSpec, PipelineSpec};

use super::graph::check_edges;
use super::params::DeviceChoice;
use super::{
    ClusterHosts, ClusterPlan, OutputPlan, Plan, ProtocolPlan, RecommendationsPlan, SplitPlan,
};

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
pub(crate) struct Resolver {
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

    /// The ids of the nodes that could not be typed, or `None` when every node was read
    /// (see [`check_edges`]).
    fn failed_nodes(&self) -> Option<Vec<String>> {
        let nodes = YamlPath::keys(&["nodes"]);
        if !self.failed_to_type(&nodes) {
            return None;
        }
        let mut ids: Vec<String> = self
            .typing_errors
            .iter()
            .filter(|p| p.starts_with(&nodes))
            .filter_map(|p| match p.0.get(1) {
                Some(Segment::Key(id)) => Some(id.clone()),
                _ => None,
            })
            .collect();
        ids.sort();
        ids.dedup();
        Some(ids)
    }

    /// Whether a node that failed to type may be an `operator` node (so that a missing one
    /// is not reported): a node whose options failed under another operator's key is not.
    fn failed_node_may_be(&self, operator: &str) -> bool {
        let nodes = YamlPath::keys(&["nodes"]);
        self.typing_errors
            .iter()
            .filter(|p| p.starts_with(&nodes))
            .any(|p| match p.0.get(2) {
                Some(Segment::Key(key)) => {
                    key == operator || !crate::spec::OPERATOR_KEYS.contains(&key.as_str())
                }
                _ => true,
            })
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
        let seed = spec.seed.unwrap_or(defaults::SEED);
        let workers = spec.workers.unwrap_or(defaults::WORKERS);
        if workers == 0 {
            self.error(
                root.key("workers"),
                "`workers` must be at least 1",
                "use `workers: 1` (or the number of cores)",
            );
        }
        let cluster = self.cluster(spec);
        let device = self.device(spec.device.as_deref());
        let label_kind = spec
            .data
            .as_ref()
            .and_then(|d| d.label)
            .unwrap_or(defaults::LABEL);
        let columns = self.columns(spec.data.as_ref());

        let failed_nodes = self.failed_nodes();
        let roles = check_edges(&spec.nodes, failed_nodes.as_deref(), &mut self.diagnostics);
        let events = self.written_events(spec.data.as_ref(), &columns, label_kind);
        let data = self.data(spec.data.as_ref(), label_kind);
        let protocol = self.written_protocol(spec);
        let split = protocol
            .as_ref()
            .and_then(|p| self.protocol_split(p, events.as_ref(), &columns, label_kind));

        let mut nodes = NodePlans {
            graph: protocol::source_nodes(events.as_ref(), &data),
            roles,
            data,
            seed,
            device,
            label_kind,
            held_out: match protocol {
                Some(WrittenProtocol::Replay(_)) => HeldOut::Windows,
                _ if split.as_ref().is_some_and(SplitPlan::has_validation) => HeldOut::Validation,
                _ => HeldOut::Nothing,
            },
            select_needed: protocol.as_ref().and_then(WrittenProtocol::select_needed),
            embed: None,
            models: PlannedModels::new(),
            score: None,
            select: None,
            evaluate: Vec::new(),
        };
        for operator in OPERATORS {
            (operator.plan)(self, &mut nodes);
        }
        self.check_tuning_protocol(&nodes.roles, protocol.as_ref(), nodes.models.finished());
        let protocol =
            protocol.and_then(|p| self.protocol(p, split, events.as_ref(), nodes.select.take()));
        if let Some(ProtocolPlan::Replay(_)) = &protocol {
            self.check_replay_evaluations(&nodes.roles, &nodes.evaluate, nodes.score.as_ref());
        }
        let early_stopping = self.early_stopping(
            &nodes.roles,
            protocol.as_ref(),
            nodes.evaluate.first(),
            &mut nodes.graph,
        );
        let output = self.output(spec, &name);

        let models = nodes
            .models
            .finished()
            .is_some()
            .then_some(nodes.models.plan);
        Some(Plan {
            name,
            source: file.to_path_buf(),
            seed,
            workers,
            cluster,
            device: device?,
            data: nodes.data,
            protocol: protocol?,
            embed: nodes.embed,
            models: models?,
            early_stopping,
            score: match (&nodes.roles.score, nodes.score) {
                // A score node that could not be planned: its problems are reported.
                (Some(_), None) => return None,
                (_, score) => score,
            },
            evaluate: nodes.evaluate,
            output,
            graph: nodes.graph,
        })
    }

    fn device(&mut self, written: Option<&str>) -> Option<DeviceChoice> {
        let written = written.unwrap_or(defaults::DEVICE);
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
            None => PathBuf::from(defaults::RESULTS_DIR).join(name),
        };
        let path = YamlPath::keys(&["output", "recommendations"]);
        let recommendations = output.recommendations.map(|written| {
            let k = written.k.unwrap_or(defaults::RECOMMENDATIONS_K);
            if k == 0 {
                self.error(path.key("k"), "`k` must be at least 1", "use e.g. `k: 20`");
            }
            RecommendationsPlan {
                k,
                users: written.users.unwrap_or(defaults::RECOMMENDED_USERS),
                every_round: written
                    .every_round
                    .unwrap_or(defaults::RECOMMEND_EVERY_ROUND),
            }
        });
        let checkpoint = spec.checkpoint.clone().unwrap_or_default();
        let min_interval_s = checkpoint
            .min_interval_s
            .unwrap_or(defaults::CHECKPOINT_MIN_INTERVAL_S);
        if !(min_interval_s.is_finite() && min_interval_s >= 0.0) {
            self.error(
                YamlPath::keys(&["checkpoint", "min_interval_s"]),
                format!("`min_interval_s` must be 0 or more seconds, not {min_interval_s}"),
                "use e.g. `min_interval_s: 30` (0 saves after every due round)",
            );
        }
        OutputPlan {
            dir,
            plots: output.plots.unwrap_or(defaults::PLOTS),
            recommendations,
            checkpoint_every: checkpoint.every.unwrap_or(defaults::CHECKPOINT_EVERY),
            checkpoint_min_interval_s: min_interval_s,
        }
    }
}
