//! `join_named`: an equijoin of two arrangements under an operator name of our choosing.
//!
//! differential's `join_core` always names its operator "Join"; this one takes the name, so
//! logs and profiles say which join is which.

use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::operators::join::join_traces;
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::{AsCollection, VecCollection};
use timely::container::{CapacityContainerBuilder, PushInto};

use crate::dataflow::records::{Multiplicity, RoundTime};

/// An arrangement of `(K, V)` records at our time and multiplicity types.
pub(crate) type Arrangement<'scope, K, V> =
    Arranged<'scope, TraceAgent<ValSpine<K, V, RoundTime, Multiplicity>>>;

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
        mut logic: L,
    ) -> VecCollection<'scope, RoundTime, D, Multiplicity>
    where
        V2: Ord + Clone + 'static,
        D: differential_dataflow::Data,
        L: FnMut(&K, &V1, &V2) -> D + 'static,
    {
        join_traces::<_, _, _, _, CapacityContainerBuilder<Vec<(D, RoundTime, Multiplicity)>>>(
            self,
            other,
            name,
            move |key, v1, v2, time, r1, r2, output| {
                output.push_into((logic(key, v1, v2), time, r1 * r2));
            },
        )
        .as_collection()
    }
}
