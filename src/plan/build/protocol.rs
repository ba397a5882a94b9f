//! The data sources and the protocol: `data:`, `protocol:` and its split.

use crate::data::LabelKind;
use crate::io::sort::{DEFAULT_SORT_MEMORY, parse_memory};
use crate::registry::defaults;
use crate::spec::PipelineSpec;
use crate::spec::path::YamlPath;
use crate::spec::schema::{
    DataSpec, InitialLabelsSpec, PoolSpec, ReplaySpec, SelectionSpec, SplitSpec,
};

use crate::plan::params::{EventColumns, EventSource, ItemSource};
use crate::plan::{
    DataPlan, InitialLabels, PlanNode, PoolPlan, PoolRounds, ProtocolPlan, ReplayPlan, SelectPlan,
    SelectionProtocolPlan, SplitPlan, SplitRule, WindowPlan,
};

use super::Resolver;

impl Resolver {
    pub(super) fn columns(&mut self, data: Option<&DataSpec>) -> EventColumns {
        let written = data.and_then(|d| d.columns.clone()).unwrap_or_default();
        let default = EventColumns::default();
        EventColumns {
            user: written.user.unwrap_or(default.user),
            item: written.item.unwrap_or(default.item),
            label: written.label.unwrap_or(default.label),
            time: written.time.unwrap_or(default.time),
        }
    }

    /// `data.events`, when written (which protocols need it is theirs to say).
    pub(super) fn written_events<'a>(
        &mut self,
        data: Option<&'a DataSpec>,
        columns: &EventColumns,
        label_kind: LabelKind,
    ) -> Option<WrittenEvents<'a>> {
        let written = data?.events.as_deref()?;
        let source = EventSource {
            path: self.file(&YamlPath::keys(&["data", "events"]), written, "event file"),
            columns: columns.clone(),
            label_kind,
        };
        Some(WrittenEvents { written, source })
    }

    /// The event log a replay or a `random`/`temporal` split reads: missing is an error.
    fn required_events(&mut self, events: Option<&WrittenEvents>) -> Option<Box<EventSource>> {
        if let Some(events) = events {
            return Some(Box::new(events.source.clone()));
        }
        let path = YamlPath::keys(&["data"]);
        if !self.failed_to_type(&path) {
            self.error(
                path,
                "missing `data.events`: the Parquet file of logged events",
                "add e.g. `events: ../data/ml-latest-small/ratings.parquet`",
            );
        }
        None
    }

    /// `data:` apart from the event log.
    pub(super) fn data(&mut self, data: Option<&DataSpec>, label_kind: LabelKind) -> DataPlan {
        let path = YamlPath::keys(&["data"]);
        let items = data.and_then(|d| d.items.as_ref()).map(|items| ItemSource {
            path: self.file(&path.key("items").key("path"), &items.path, "item file"),
            id_column: items.id.clone().unwrap_or_else(|| defaults::ITEM_ID.into()),
            text_template: items
                .text
                .clone()
                .unwrap_or_else(|| defaults::ITEM_TEXT.into()),
        });
        DataPlan { items, label_kind }
    }

    /// Which protocol the pipeline chose (exactly one of `pool`, `replay`, `selection`).
    pub(super) fn written_protocol<'a>(
        &mut self,
        spec: &'a PipelineSpec,
    ) -> Option<WrittenProtocol<'a>> {
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
        match chosen {
            "pool" => protocol.pool.as_ref().map(WrittenProtocol::Pool),
            "replay" => protocol.replay.as_ref().map(WrittenProtocol::Replay),
            _ => protocol.selection.as_ref().map(WrittenProtocol::Selection),
        }
    }

    /// The chosen protocol's split (`None`: a replay, or a split with errors).
    pub(super) fn protocol_split(
        &mut self,
        protocol: &WrittenProtocol,
        events: Option<&WrittenEvents>,
        columns: &EventColumns,
        label_kind: LabelKind,
    ) -> Option<SplitPlan> {
        let split = protocol.split()?;
        self.split(
            split,
            &protocol.path().key("split"),
            events,
            columns,
            label_kind,
        )
    }

    /// The protocol's plan, from its split, the event log and the select node (`select` is
    /// `None` where the select node had errors; a missing one that the protocol needs was
    /// reported by [`Resolver::select`]).
    pub(super) fn protocol(
        &mut self,
        protocol: WrittenProtocol,
        split: Option<SplitPlan>,
        events: Option<&WrittenEvents>,
        select: Option<Option<SelectPlan>>,
    ) -> Option<ProtocolPlan> {
        let path = protocol.path();
        match protocol {
            WrittenProtocol::Pool(pool) => {
                let initial = self.initial(pool.labelled.as_ref(), &path.key("labelled"));
                let count = pool_rounds(pool);
                let rounds = if count == 0 {
                    None
                } else {
                    Some(PoolRounds {
                        count,
                        select: select??,
                    })
                };
                Some(ProtocolPlan::Pool(PoolPlan {
                    split: split?,
                    initial: initial?,
                    rounds,
                }))
            }
            WrittenProtocol::Replay(replay) => {
                let events = self.required_events(events);
                self.replay(replay, &path, events, select)
                    .map(ProtocolPlan::Replay)
            }
            WrittenProtocol::Selection(selection) => {
                Some(ProtocolPlan::Selection(SelectionProtocolPlan {
                    split: split?,
                    rounds: selection.rounds.unwrap_or(defaults::ROUNDS),
                    warmup_epochs: selection.warmup_epochs.unwrap_or(defaults::WARMUP_EPOCHS),
                    select: select??,
                }))
            }
        }
    }

    fn replay(
        &mut self,
        replay: &ReplaySpec,
        path: &YamlPath,
        events: Option<Box<EventSource>>,
        select: Option<Option<SelectPlan>>,
    ) -> Option<ReplayPlan> {
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
        let free_labels = replay.free_labels.unwrap_or(defaults::FREE_LABELS);
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
        let batch_rows = replay.batch_rows.unwrap_or(defaults::BATCH_ROWS);
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
            events: *events?,
            select: select?,
            window,
            warmup_windows: replay.warmup_windows.unwrap_or(defaults::WARMUP_WINDOWS),
            free_labels,
            max_windows: replay.max_windows,
            pool_windows: replay.pool_windows,
            batch_rows,
            sort_memory,
        })
    }

    fn split(
        &mut self,
        split: &SplitSpec,
        path: &YamlPath,
        events: Option<&WrittenEvents>,
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
                let cold_items = random.cold_items.unwrap_or(defaults::COLD_ITEMS);
                if !(0.0..1.0).contains(&cold_items) {
                    self.error(
                        path.key("random").key("cold_items"),
                        format!("cold item fraction {cold_items} is not in [0, 1)"),
                        "use e.g. `cold_items: 0.1` (a tenth of the items are never trained on)",
                    );
                }
                let validation = random.validation.unwrap_or(defaults::VALIDATION_FRACTION);
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
                let rule = SplitRule::Random {
                    test,
                    validation,
                    cold_items,
                };
                Some(SplitPlan::Log {
                    events: self.required_events(events)?,
                    rule,
                })
            }
            "temporal" => {
                let temporal = split.temporal.as_ref()?;
                let leave_last = temporal.leave_last.unwrap_or(defaults::LEAVE_LAST);
                if leave_last == 0 {
                    self.error(
                        path.key("temporal").key("leave_last"),
                        "`leave_last` must be at least 1",
                        "use e.g. `leave_last: 1`",
                    );
                }
                let rule = SplitRule::Temporal {
                    leave_last,
                    validation_last: temporal
                        .validation_last
                        .unwrap_or(defaults::VALIDATION_LAST),
                };
                Some(SplitPlan::Log {
                    events: self.required_events(events)?,
                    rule,
                })
            }
            _ => {
                let files = split.files.as_ref()?;
                if let Some(events) = events {
                    self.error(
                        YamlPath::keys(&["data", "events"]),
                        format!(
                            "`data.events` (`{}`) is not used: the split names its own train and test files",
                            events.written
                        ),
                        "remove `data.events`, or use a `random`/`temporal` split of it",
                    );
                }
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
            return Some(InitialLabels::Fraction(defaults::LABELLED_FRACTION));
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
}

/// Seconds in a duration such as `90s`, `30m`, `12h`, `7d` or `2w`.
pub(crate) fn parse_duration(text: &str) -> Option<i64> {
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

/// `data.events` as written, and the source it resolves to.
pub(super) struct WrittenEvents<'a> {
    written: &'a str,
    source: EventSource,
}

/// The protocol a pipeline chose, as written.
pub(super) enum WrittenProtocol<'a> {
    Pool(&'a PoolSpec),
    Replay(&'a ReplaySpec),
    Selection(&'a SelectionSpec),
}

impl WrittenProtocol<'_> {
    /// `protocol.<name>`.
    fn path(&self) -> YamlPath {
        let name = match self {
            WrittenProtocol::Pool(_) => "pool",
            WrittenProtocol::Replay(_) => "replay",
            WrittenProtocol::Selection(_) => "selection",
        };
        YamlPath::keys(&["protocol", name])
    }

    /// The split, for the protocols that have one.
    fn split(&self) -> Option<&SplitSpec> {
        match self {
            WrittenProtocol::Pool(pool) => Some(&pool.split),
            WrittenProtocol::Selection(selection) => Some(&selection.split),
            WrittenProtocol::Replay(_) => None,
        }
    }

    /// Why the protocol needs a select node, if it does (a replay may run on free labels
    /// alone: selecting is optional there).
    pub(super) fn select_needed(&self) -> Option<String> {
        match self {
            WrittenProtocol::Pool(pool) if pool_rounds(pool) > 0 => Some(format!(
                "the protocol runs {} rounds but no node selects samples",
                pool_rounds(pool)
            )),
            WrittenProtocol::Selection(_) => Some(
                "the selection protocol needs a select node: it decides what each round trains on"
                    .to_string(),
            ),
            _ => None,
        }
    }
}

/// A pool's rounds of selection after round 0.
fn pool_rounds(pool: &PoolSpec) -> u32 {
    pool.rounds.unwrap_or(defaults::ROUNDS)
}

/// The built-in sources, shown first in the graph.
pub(super) fn source_nodes(events: Option<&WrittenEvents>, data: &DataPlan) -> Vec<PlanNode> {
    let mut nodes = Vec::new();
    nodes.push(PlanNode {
        id: "events".into(),
        operator: "source",
        inputs: Vec::new(),
        params: events
            .map(|e| vec![("path".into(), e.source.path.display().to_string(), true)])
            .unwrap_or_default(),
    });
    if let Some(items) = &data.items {
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
