//! [`SampleTable`]: a value per sample, held over the span of the samples present.

/// A value a [`SampleTable`] holds per sample, one of which means "absent".
pub trait Slot: Copy {
    /// The value of a sample that is not in the table.
    const ABSENT: Self;

    /// Whether this value is [`Slot::ABSENT`].
    fn is_absent(&self) -> bool;
}

/// A value per sample (an event's index), held from the oldest present sample to the newest.
///
/// A dense table from sample 0 grows with the log. A replay's pool loses its oldest samples
/// first (each window leaves the pool horizon in turn), so this table drops its absent front:
/// its memory follows the span of the present samples (at most about twice it), not the
/// number of events seen. Reads and writes are O(1); dropping the front is amortised O(1)
/// per sample.
#[derive(Clone, Debug)]
pub struct SampleTable<T> {
    /// The sample of `values[0]`.
    offset: u32,
    /// The values of samples `offset..offset + values.len()`.
    values: Vec<T>,
    /// `values[..dead]` are absent: the front not dropped yet.
    dead: usize,
}

impl<T: Slot> Default for SampleTable<T> {
    fn default() -> Self {
        Self {
            offset: 0,
            values: Vec::new(),
            dead: 0,
        }
    }
}

impl<T: Slot> SampleTable<T> {
    /// `sample`'s value ([`Slot::ABSENT`] when it has none).
    pub fn get(&self, sample: u32) -> T {
        sample
            .checked_sub(self.offset)
            .and_then(|at| self.values.get(at as usize))
            .copied()
            .unwrap_or(T::ABSENT)
    }

    /// Sets `sample`'s value (to [`Slot::ABSENT`] to remove it) and returns the old one.
    pub fn set(&mut self, sample: u32, value: T) -> T {
        if sample < self.offset {
            if value.is_absent() {
                return T::ABSENT;
            }
            // A sample before the span comes back (rare): the span grows at the front.
            let grow = (self.offset - sample) as usize;
            self.values
                .splice(0..0, std::iter::repeat_n(T::ABSENT, grow));
            self.offset = sample;
            self.dead += grow;
        }
        let at = (sample - self.offset) as usize;
        if at >= self.values.len() {
            if value.is_absent() {
                return T::ABSENT;
            }
            self.values.resize(at + 1, T::ABSENT);
        }
        let old = std::mem::replace(&mut self.values[at], value);
        if !value.is_absent() {
            self.dead = self.dead.min(at);
        } else if at == self.dead {
            self.drop_front();
        }
        old
    }

    /// Present samples with their values, in sample order.
    pub fn present(&self) -> impl Iterator<Item = (u32, T)> + '_ {
        let first = self.offset + self.dead as u32;
        self.values[self.dead..]
            .iter()
            .enumerate()
            .filter(|(_, value)| !value.is_absent())
            .map(move |(at, value)| (first + at as u32, *value))
    }

    /// Moves past the absent front, and frees it once it is as large as the rest.
    fn drop_front(&mut self) {
        while self
            .values
            .get(self.dead)
            .is_some_and(|value| value.is_absent())
        {
            self.dead += 1;
        }
        if self.dead * 2 < self.values.len() {
            return;
        }
        self.values.drain(..self.dead);
        self.offset += self.dead as u32;
        self.dead = 0;
        if self.values.capacity() > 4 * self.values.len().max(1024) {
            self.values.shrink_to(2 * self.values.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Slot for u32 {
        const ABSENT: Self = u32::MAX;

        fn is_absent(&self) -> bool {
            *self == u32::MAX
        }
    }

    /// A dense vector from sample 0, the reference.
    fn reference(values: &[u32]) -> Vec<(u32, u32)> {
        values
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_absent())
            .map(|(s, v)| (s as u32, *v))
            .collect()
    }

    #[test]
    fn a_table_equals_a_dense_vector_under_random_changes() {
        let mut table = SampleTable::<u32>::default();
        let mut dense = vec![u32::MAX; 5_000];
        let mut state = 7u64;
        let mut next = |n: u64| {
            state = crate::seeding::mix64(state);
            state % n
        };
        // A sliding pool: samples enter at the back of a moving window, leave mostly from its
        // front, sometimes anywhere (picks), and sometimes come back (labels revealed).
        for step in 0..40_000u64 {
            let front = step / 10;
            let sample = match next(10) {
                0..=5 => (front + next(200)) as u32,
                6..=8 => front.saturating_sub(next(50)) as u32,
                _ => next(front + 1) as u32,
            };
            let value = if next(3) == 0 {
                u32::MAX
            } else {
                next(1_000) as u32
            };
            assert_eq!(
                table.set(sample, value),
                dense[sample as usize],
                "step {step}"
            );
            dense[sample as usize] = value;
            if step % 997 == 0 {
                assert_eq!(table.present().collect::<Vec<_>>(), reference(&dense));
            }
        }
        for (sample, &value) in dense.iter().enumerate() {
            assert_eq!(table.get(sample as u32), value);
        }
        assert_eq!(table.present().collect::<Vec<_>>(), reference(&dense));
    }

    #[test]
    fn memory_follows_the_span_not_the_samples_seen() {
        let mut table = SampleTable::<u32>::default();
        for sample in 0..1_000_000u32 {
            table.set(sample, sample);
            if sample >= 1_000 {
                table.set(sample - 1_000, u32::MAX);
            }
        }
        assert_eq!(table.values.len() - table.dead, 1_000, "the span held");
        assert!(
            table.values.capacity() <= 8_192,
            "{}",
            table.values.capacity()
        );
        assert_eq!(table.present().count(), 1_000);
        assert_eq!(table.get(999_999), 999_999);
        assert_eq!(table.get(5), u32::MAX);
    }
}
