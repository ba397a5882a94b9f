//! `join_named`: an equijoin of two arrangements under an operator name of our choosing,
//! with a join tactic for our totally ordered round times.
//!
//! differential's `join_core` always names its operator "Join"; this one takes the name, so
//! logs and profiles say which join is which. The dataflow plumbing (frontiers,
//! capabilities, trace compaction) is differential's `join_with_tactic`; the work per pair of
//! batches is [`RoundJoin`], which replaces differential's general cursor tactic.
//!
//! Why a tactic of our own: the general tactic loads each key's value histories into
//! buffers, advances and sorts their times, and replays them against each other, because
//! times may be only partially ordered. Our times are round numbers, totally ordered, and
//! every time of the accumulated side at or before the fresh batch's lower bound `meet`
//! produces its output at the fresh update's time. So [`RoundJoin`] sums each accumulated
//! value's multiplicities over those times as it walks the cursor, keeps the (rare) later
//! times apart, and multiplies out with the fresh batch's few updates of the key. This cut
//! the join's share of an update by about half at 10M samples (see
//! `docs/benchmarks.md (scale section)`). The output is the same multiset of `(data, time, diff)`.

use std::cell::RefCell;
use std::rc::Rc;

use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::operators::join::{Fresh, JoinTactic, join_with_tactic};
use differential_dataflow::trace::cursor::{CursorList, cursor_list};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::implementations::Vector;
use differential_dataflow::trace::implementations::ord_neu::OrdValBatch;
use differential_dataflow::trace::{Cursor, Navigable};
use differential_dataflow::{AsCollection, VecCollection};

use crate::dataflow::records::{Multiplicity, RoundTime};

/// An arrangement of `(K, V)` records at our time and multiplicity types.
pub(crate) type Arrangement<'scope, K, V> =
    Arranged<'scope, TraceAgent<ValSpine<K, V, RoundTime, Multiplicity>>>;

/// One batch of such an arrangement.
type Batch<K, V> = Rc<OrdValBatch<Vector<((K, V), RoundTime, Multiplicity)>>>;
/// A cursor over a list of batches.
type Batches<K, V> = CursorList<<Batch<K, V> as Navigable>::Cursor>;

/// Output records per container the join hands downstream.
const OUTPUT_CAPACITY: usize = 4096;

/// Extension trait: join this arrangement with another on their common key.
pub(crate) trait JoinNamed<'scope, K: Ord + Clone + 'static, V1> {
    /// Matches `(key, v1)` here with `(key, v2)` in `other` and emits `logic(key, v1, v2)`
    /// with the product of the multiplicities, in an operator called `name`.
    ///
    /// ```text
    /// pool_by_item.join_named(items_by_item, "join: pool with item side", |item, sample, side| ..)
    /// ```
    fn join_named<V2, D, L>(
        self,
        other: Arrangement<'scope, K, V2>,
        name: &str,
        logic: L,
    ) -> VecCollection<'scope, RoundTime, D, Multiplicity>
    where
        V2: Ord + Clone + 'static,
        D: differential_dataflow::Data,
        L: FnMut(&K, &V1, &V2) -> D + 'static;
}

impl<'scope, K, V1> JoinNamed<'scope, K, V1> for Arrangement<'scope, K, V1>
where
    K: Ord + Clone + 'static,
    V1: Ord + Clone + 'static,
{
    fn join_named<V2, D, L>(
        self,
        other: Arrangement<'scope, K, V2>,
        name: &str,
        logic: L,
    ) -> VecCollection<'scope, RoundTime, D, Multiplicity>
    where
        V2: Ord + Clone + 'static,
        D: differential_dataflow::Data,
        L: FnMut(&K, &V1, &V2) -> D + 'static,
    {
        let tactic = RoundJoin {
            logic: Rc::new(RefCell::new(logic)),
        };
        join_with_tactic(self, other, name, tactic).as_collection()
    }
}

/// The join tactic for totally ordered times (see the module documentation).
struct RoundJoin<L> {
    /// Shared by every unit of work in flight.
    logic: Rc<RefCell<L>>,
}

impl<K, V1, V2, D, L>
    JoinTactic<RoundTime, Batch<K, V1>, Batch<K, V2>, Vec<(D, RoundTime, Multiplicity)>>
    for RoundJoin<L>
where
    K: Ord + Clone + 'static,
    V1: Ord + Clone + 'static,
    V2: Ord + Clone + 'static,
    D: 'static,
    L: FnMut(&K, &V1, &V2) -> D + 'static,
{
    fn prep(
        &mut self,
        input0: Vec<Batch<K, V1>>,
        input1: Vec<Batch<K, V2>>,
        fresh: Fresh,
        meet: RoundTime,
    ) -> Box<dyn Iterator<Item = Vec<(D, RoundTime, Multiplicity)>>> {
        let (cursor0, storage0) = cursor_list(input0);
        let (cursor1, storage1) = cursor_list(input1);
        Box::new(RoundJoinWork {
            cursor0,
            storage0,
            cursor1,
            storage1,
            fresh_is_first: matches!(fresh, Fresh::Input0),
            meet,
            logic: Rc::clone(&self.logic),
            done: false,
        })
    }
}

/// One unit of join work: a fresh batch against the other input's accumulated batches,
/// played out one output container at a time.
struct RoundJoinWork<
    K: Ord + Clone + 'static,
    V1: Ord + Clone + 'static,
    V2: Ord + Clone + 'static,
    L,
> {
    cursor0: Batches<K, V1>,
    storage0: Vec<Batch<K, V1>>,
    cursor1: Batches<K, V2>,
    storage1: Vec<Batch<K, V2>>,
    /// Whether input 0 holds the fresh batch (else input 1 does).
    fresh_is_first: bool,
    /// A lower bound of the fresh batch's times.
    meet: RoundTime,
    logic: Rc<RefCell<L>>,
    done: bool,
}

/// An accumulated value's updates: the multiplicities at times up to `meet` summed, and
/// later times apart.
struct Accumulated {
    settled: Multiplicity,
    later: Vec<(RoundTime, Multiplicity)>,
}

impl Accumulated {
    fn new() -> Self {
        Self {
            settled: 0,
            later: Vec::new(),
        }
    }

    /// Sums the updates `map_times` presents.
    fn load(
        &mut self,
        meet: RoundTime,
        map_times: impl FnOnce(&mut dyn FnMut(&RoundTime, &Multiplicity)),
    ) {
        self.settled = 0;
        self.later.clear();
        map_times(&mut |&time, &diff| {
            if time <= meet {
                self.settled += diff;
            } else {
                self.later.push((time, diff));
            }
        });
    }

    /// `(time, diff)` of this value joined with a fresh update at `time` with `diff`.
    fn joined(
        &self,
        time: RoundTime,
        diff: Multiplicity,
    ) -> impl Iterator<Item = (RoundTime, Multiplicity)> + '_ {
        let settled = (self.settled != 0).then_some((time, self.settled * diff));
        settled.into_iter().chain(
            self.later
                .iter()
                .map(move |&(later, d)| (later.max(time), d * diff)),
        )
    }
}

impl<K, V1, V2, D, L> Iterator for RoundJoinWork<K, V1, V2, L>
where
    K: Ord + Clone + 'static,
    V1: Ord + Clone + 'static,
    V2: Ord + Clone + 'static,
    L: FnMut(&K, &V1, &V2) -> D,
{
    type Item = Vec<(D, RoundTime, Multiplicity)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (cursor0, storage0) = (&mut self.cursor0, &self.storage0);
        let (cursor1, storage1) = (&mut self.cursor1, &self.storage1);
        let mut logic = self.logic.borrow_mut();
        let meet = self.meet;
        let mut output = Vec::with_capacity(OUTPUT_CAPACITY);
        // The fresh side's updates of the current key, and an accumulated value's.
        let mut fresh0: Vec<(&V1, RoundTime, Multiplicity)> = Vec::new();
        let mut fresh1: Vec<(&V2, RoundTime, Multiplicity)> = Vec::new();
        let mut accumulated = Accumulated::new();
        while output.len() < OUTPUT_CAPACITY {
            let (Some(key0), Some(key1)) = (cursor0.get_key(storage0), cursor1.get_key(storage1))
            else {
                self.done = true;
                break;
            };
            match key0.cmp(key1) {
                std::cmp::Ordering::Less => cursor0.seek_key(storage0, key1),
                std::cmp::Ordering::Greater => cursor1.seek_key(storage1, key0),
                std::cmp::Ordering::Equal => {
                    if self.fresh_is_first {
                        fresh0.clear();
                        while let Some(val) = cursor0.get_val(storage0) {
                            cursor0.map_times(storage0, |&t, &d| fresh0.push((val, t, d)));
                            cursor0.step_val(storage0);
                        }
                        while let Some(val1) = cursor1.get_val(storage1) {
                            accumulated.load(meet, |f| cursor1.map_times(storage1, |t, d| f(t, d)));
                            for &(val0, time, diff) in &fresh0 {
                                for (t, d) in accumulated.joined(time, diff) {
                                    output.push((logic(key0, val0, val1), t, d));
                                }
                            }
                            cursor1.step_val(storage1);
                        }
                    } else {
                        fresh1.clear();
                        while let Some(val) = cursor1.get_val(storage1) {
                            cursor1.map_times(storage1, |&t, &d| fresh1.push((val, t, d)));
                            cursor1.step_val(storage1);
                        }
                        while let Some(val0) = cursor0.get_val(storage0) {
                            accumulated.load(meet, |f| cursor0.map_times(storage0, |t, d| f(t, d)));
                            for &(val1, time, diff) in &fresh1 {
                                for (t, d) in accumulated.joined(time, diff) {
                                    output.push((logic(key0, val0, val1), t, d));
                                }
                            }
                            cursor0.step_val(storage0);
                        }
                    }
                    cursor0.step_key(storage0);
                    cursor1.step_key(storage1);
                }
            }
        }
        (!output.is_empty()).then_some(output)
    }
}
