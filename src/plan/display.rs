//! Human-readable forms of a plan: the text that `recsift plan` prints, and Graphviz DOT.

use std::fmt::{self, Write};

use super::params::DeviceChoice;
use super::{ClusterHosts, InitialLabels, Plan, ProtocolPlan, SplitPlan, SplitRule, WindowPlan};
use crate::data::LabelKind;
use crate::io::sort::format_memory;

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan `{}` ({})", self.name, self.source.display())?;
        let device = match self.device {
            DeviceChoice::Cpu => "cpu".to_string(),
            DeviceChoice::Cuda(n) => format!("cuda:{n}"),
        };
        writeln!(
            f,
            "  seed {}, workers {}, device {device}",
            self.seed, self.workers
        )?;
        let cluster = &self.cluster;
        if cluster.processes > 1 {
            let hosts = match &cluster.hosts {
                ClusterHosts::Local { port } => {
                    format!(
                        "127.0.0.1 ports {port}..={}",
                        usize::from(*port) + cluster.processes - 1
                    )
                }
                ClusterHosts::File(file) => format!("hosts from {}", file.display()),
            };
            writeln!(
                f,
                "  cluster: process {} of {} ({hosts}; wait {} s for peers)",
                cluster.process, cluster.processes, cluster.timeout_s
            )?;
        }
        let protocol = match &self.protocol {
            ProtocolPlan::Pool(pool) => {
                let initial = match pool.initial {
                    InitialLabels::Fraction(fraction) => format!("fraction {fraction} labelled"),
                    InitialLabels::PerUser(n) => format!("{n} earliest per user labelled"),
                };
                format!(
                    "pool: split {}; {initial}; {} rounds",
                    describe_split(&pool.split),
                    pool.round_count()
                )
            }
            ProtocolPlan::Selection(selection) => format!(
                "selection: split {}; every training label known; {} warm-up epochs; {} rounds",
                describe_split(&selection.split),
                selection.warmup_epochs,
                selection.rounds
            ),
            ProtocolPlan::Replay(replay) => {
                let window = match replay.window {
                    WindowPlan::Duration { seconds } => format!("windows of {seconds} s"),
                    WindowPlan::Events { events } => format!("windows of {events} events"),
                };
                let limit = replay
                    .max_windows
                    .map(|n| format!(", at most {n} windows"))
                    .unwrap_or_default();
                let horizon = replay
                    .pool_windows
                    .map(|n| format!("; unlabelled events leave the pool after {n} windows"))
                    .unwrap_or_default();
                format!(
                    "replay: {window}{limit}; {} warm-up windows; free labels {}{horizon}; read {} events per batch; sort out-of-order logs in {}",
                    replay.warmup_windows,
                    replay.free_labels,
                    replay.batch_rows,
                    format_memory(replay.sort_memory)
                )
            }
        };
        writeln!(f, "  protocol {protocol}")?;
        let label = match self.data.label_kind {
            LabelKind::Rating => "rating",
            LabelKind::Click => "click",
        };
        writeln!(f, "  label {label}")?;
        let interval = self.output.checkpoint_min_interval_s;
        let checkpoints = match self.output.checkpoint_every {
            0 => "no checkpoints".to_string(),
            1 => "checkpoint every round".to_string(),
            n => format!("checkpoint every {n} rounds"),
        };
        let checkpoints = if self.output.checkpoint_every > 0 && interval > 0.0 {
            format!("{checkpoints}, at most every {interval} s")
        } else {
            checkpoints
        };
        writeln!(f, "  output {}; {checkpoints}", self.output.dir.display())?;
        writeln!(f, "  engine {}", self.engine_line())?;
        writeln!(f, "nodes (dependency order; `*` = default):")?;
        let width = self.graph.iter().map(|n| n.id.len()).max().unwrap_or(0);
        for node in &self.graph {
            let inputs = if node.inputs.is_empty() {
                String::new()
            } else {
                format!(" <- {}", node.inputs.join(", "))
            };
            let line = format!("  {:width$}  {:8}{inputs}", node.id, node.operator);
            writeln!(f, "{}", line.trim_end())?;
            for (key, value, written) in &node.params {
                writeln!(
                    f,
                    "  {:width$}    {}{key} = {value}",
                    "",
                    if *written { " " } else { "*" }
                )?;
            }
        }
        Ok(())
    }
}

impl Plan {
    /// What `recsift plan` says the incremental engine maintains ([`Plan::engine_nodes`]).
    fn engine_line(&self) -> String {
        if let Some(nodes) = self.engine_nodes() {
            let statistics = nodes
                .item_statistics_for
                .map(|select| format!(", and the item statistics `{}` ranks by", select.node))
                .unwrap_or_default();
            return format!(
                "maintains `{}`: each pool sample's prediction, uncertainty and loss under \
                 `{}`{statistics}",
                nodes.score.node, nodes.score.model
            );
        }
        match self.protocol.select() {
            Some(select) => format!(
                "maintains nothing: `{}` ranks by a seeded hash of each sample (`{}`), not by \
                 scores",
                select.node,
                select.strategy.def().name
            ),
            None => "maintains nothing: the run selects nothing".to_string(),
        }
    }
}

fn describe_split(split: &SplitPlan) -> String {
    let mut text = match split {
        SplitPlan::Log {
            rule: SplitRule::Random { test, .. },
            ..
        } => format!("random, test fraction {test}"),
        SplitPlan::Log {
            rule: SplitRule::Temporal { leave_last, .. },
            ..
        } => format!("temporal, each user's last {leave_last} to test"),
        SplitPlan::Files { train, test, .. } => format!(
            "files, train {} / test {}",
            train.path.display(),
            test.path.display()
        ),
    };
    match split {
        SplitPlan::Log {
            rule: SplitRule::Random { validation, .. },
            ..
        } if *validation > 0.0 => {
            text.push_str(&format!(", validation fraction {validation}"));
        }
        SplitPlan::Log {
            rule: SplitRule::Temporal {
                validation_last, ..
            },
            ..
        } if *validation_last > 0 => {
            text.push_str(&format!(
                ", the {validation_last} before them to validation"
            ));
        }
        SplitPlan::Files {
            validation: Some(v),
            ..
        } => text.push_str(&format!(" / validation {}", v.path.display())),
        _ => {}
    }
    let cold_items = split.cold_items();
    if cold_items > 0.0 {
        text.push_str(&format!(", cold item fraction {cold_items}"));
    }
    text
}

impl Plan {
    /// The node graph in Graphviz DOT (`recsift plan --dot | dot -Tsvg`).
    pub fn to_dot(&self) -> String {
        let mut dot = String::new();
        let _ = writeln!(dot, "digraph {:?} {{", self.name);
        let _ = writeln!(dot, "  rankdir=LR;");
        for node in &self.graph {
            let shape = if node.operator == "source" {
                "ellipse"
            } else {
                "box"
            };
            let mut label = format!("{}\\n{}", node.id, node.operator);
            for (key, value, _) in &node.params {
                let _ = write!(label, "\\n{key}={}", value.replace('"', "\\\""));
            }
            let _ = writeln!(dot, "  {:?} [shape={shape}, label=\"{label}\"];", node.id);
            for input in &node.inputs {
                let _ = writeln!(dot, "  {input:?} -> {:?};", node.id);
            }
        }
        dot.push_str("}\n");
        dot
    }
}
