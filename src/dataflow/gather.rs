//! The gather dataflow: in each of its rounds every process hands in one payload of bytes,
//! and the first worker of every process receives all of them. The driver uses it to share
//! what only one process read (its share of an input file) with the others, through the
//! cluster's connections, exactly as the scoring dataflow exchanges records.
//!
//! ```text
//! payload of process p --(copy per process q, to worker q * workers)--> exchange --> collect
//! ```

use std::cell::RefCell;
use std::rc::Rc;

use timely::dataflow::Scope;
use timely::dataflow::operators::core::Exchange;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::vec::input::Handle as InputHandle;
use timely::dataflow::operators::{Inspect, Probe};

use super::graph::Placement;

/// Logical time of the gather rounds (counted apart from the scoring rounds).
pub(crate) type GatherTime = u64;

/// A payload on its way: `(receiving worker, sending process, bytes)`.
type Parcel = (u64, u64, Vec<u8>);

/// A payload received: `(round, sending process, bytes)`.
type Received = (GatherTime, u64, Vec<u8>);

/// What a worker keeps of the gather dataflow to drive it.
pub(crate) struct GatherDataflow {
    input: InputHandle<GatherTime, Parcel>,
    probe: ProbeHandle<GatherTime>,
    /// `(round, sending process, payload)` received and not taken yet (first workers
    /// only); a faster process's payloads of the next round may arrive before this round
    /// is over.
    received: Rc<RefCell<Vec<Received>>>,
    placement: Placement,
}

impl GatherDataflow {
    /// Builds the dataflow in `scope`.
    pub(crate) fn build(scope: Scope<'_, GatherTime>, placement: Placement) -> Self {
        let (input, parcels) = scope.new_input::<Parcel>();
        let received = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&received);
        let (probe, _) = parcels
            .exchange(|(receiver, _, _)| *receiver)
            .inspect_core(move |event| {
                // A round's parcels are sent at the round's time alone.
                if let Ok((stamp, parcels)) = event
                    && let Some(&time) = stamp.least()
                {
                    let mut sink = sink.borrow_mut();
                    sink.extend(
                        parcels
                            .iter()
                            .map(|(_, origin, bytes)| (time, *origin, bytes.clone())),
                    );
                }
            })
            .probe();
        Self {
            input,
            probe,
            received,
            placement,
        }
    }

    /// Sends `payload` (if this worker has one) to the first worker of every process and
    /// closes round `time`.
    pub(crate) fn send(&mut self, time: GatherTime, payload: Option<Vec<u8>>) {
        let Placement {
            process,
            processes,
            workers,
        } = self.placement;
        if let Some(payload) = payload {
            for receiver in 0..processes {
                let first_worker = (receiver * workers) as u64;
                self.input
                    .send((first_worker, process as u64, payload.clone()));
            }
        }
        self.input.advance_to(time + 1);
        self.input.flush();
    }

    /// Whether every payload of round `time` has arrived.
    pub(crate) fn done(&self, time: GatherTime) -> bool {
        !self.probe.less_than(&(time + 1))
    }

    /// The payloads of round `time`, in the order of the processes that sent them.
    pub(crate) fn take(&self, time: GatherTime) -> Vec<Vec<u8>> {
        let mut received = self.received.borrow_mut();
        let (mut round, later): (Vec<_>, Vec<_>) =
            received.drain(..).partition(|(t, _, _)| *t == time);
        *received = later;
        round.sort_by_key(|(_, origin, _)| *origin);
        round.into_iter().map(|(_, _, bytes)| bytes).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::dataflow::{Cluster, EngineSite, Topology};

    /// Every process's payloads, gathered by `processes` processes of `workers` threads (in
    /// threads of this test) from payloads of growing sizes.
    fn gather_on(processes: usize, workers: usize) -> Vec<Vec<Vec<Vec<u8>>>> {
        let addresses: Vec<String> = (0..processes)
            .map(|_| {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.local_addr().unwrap().to_string()
            })
            .collect();
        let handles: Vec<_> = (0..processes)
            .map(|process| {
                let topology = Topology {
                    workers,
                    cluster: (processes > 1).then(|| Cluster {
                        process,
                        addresses: addresses.clone(),
                        timeout: Duration::from_secs(30),
                        fingerprint: 1,
                    }),
                };
                std::thread::spawn(move || {
                    let site = EngineSite::connect(topology).unwrap();
                    let gatherer = site.gatherer();
                    let rounds: Vec<Vec<Vec<u8>>> = [0usize, 1, 1000, 3 << 20]
                        .into_iter()
                        .map(|len| {
                            let payload = (0..len).map(|i| (i + process) as u8).collect();
                            gatherer.all_gather(payload).unwrap()
                        })
                        .collect();
                    site.workers().shut_down().unwrap();
                    rounds
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn every_process_receives_every_payload_in_process_order() {
        for (processes, workers) in [(1, 1), (1, 2), (3, 2)] {
            let gathered = gather_on(processes, workers);
            for (process, rounds) in gathered.iter().enumerate() {
                for (round, payloads) in rounds.iter().enumerate() {
                    let len = [0usize, 1, 1000, 3 << 20][round];
                    let expected: Vec<Vec<u8>> = (0..processes)
                        .map(|p| (0..len).map(|i| (i + p) as u8).collect())
                        .collect();
                    assert!(
                        *payloads == expected,
                        "process {process} of {processes} ({workers} workers), round {round}"
                    );
                }
            }
        }
    }
}
