//! Where the engine's workers run: threads of this process, or threads of several processes
//! (timely's cluster mode) that this module connects over TCP.
//!
//! timely's own connection code retries forever and prints to stdout; this one waits at most
//! [`Cluster::timeout`], says which peer it could not reach, and checks with a
//! handshake that every peer runs the same pipeline (a fingerprint the driver computes) with
//! the same number of processes and worker threads. The connected sockets are then handed to
//! timely (`initialize_networking_from_sockets`), which carries the dataflow's exchanges
//! between processes exactly as between threads.
//!
//! Process `i` listens on its own address for the processes after it and connects to the
//! processes before it, like timely's own setup.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::communication::{Config, Hooks};

use super::EngineError;
use super::workers::Workers;

/// The engine's workers: `workers` threads in this process, and, in a cluster, as many in
/// every other process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Worker threads of this process.
    pub workers: usize,
    /// The other processes, when the engine spans several.
    pub cluster: Option<Cluster>,
}

impl Topology {
    /// `workers` threads in this process only.
    pub fn threads(workers: usize) -> Self {
        Self {
            workers,
            cluster: None,
        }
    }

    /// Processes the engine spans.
    pub fn processes(&self) -> usize {
        self.cluster.as_ref().map_or(1, |c| c.addresses.len())
    }

    /// This process's index among them.
    pub fn process(&self) -> usize {
        self.cluster.as_ref().map_or(0, |c| c.process)
    }

    /// Worker threads over all processes.
    pub fn peers(&self) -> usize {
        self.workers * self.processes()
    }
}

/// This process's place in a cluster of processes running one engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// This process's index, `0..addresses.len()`.
    pub process: usize,
    /// Every process's `host:port`, process 0 first.
    pub addresses: Vec<String>,
    /// How long to wait for every peer to connect.
    pub timeout: Duration,
    /// Identifies the pipeline (and recsift version) every process must run.
    pub fingerprint: u64,
}

/// What a connecting process sends first.
const MAGIC: &[u8; 8] = b"recsift\x01";

/// The allocators of this process's workers, with whatever must live as long as they do.
pub(crate) type Communication = (Vec<AllocatorBuilder>, Box<dyn std::any::Any + Send>);

/// Where an engine runs: its topology, and this process's worker threads, started (in a
/// cluster, after connecting to every peer and checking it with the handshake). A run makes
/// its site first, before it loads its data, so that the timeout counts from the
/// processes' start, and so that the processes can share what each read
/// ([`EngineSite::gatherer`]) while they load. The scoring engine then runs on the same
/// workers ([`super::ScoringEngine::start_on`]).
pub struct EngineSite {
    topology: Topology,
    workers: Arc<Mutex<Workers>>,
}

impl std::fmt::Debug for EngineSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSite")
            .field("topology", &self.topology)
            .finish_non_exhaustive()
    }
}

impl EngineSite {
    /// `topology`'s site: in a cluster, after connecting to every peer (within the
    /// cluster's timeout); then its worker threads are started.
    pub fn connect(topology: Topology) -> Result<Self, EngineError> {
        let communication = match &topology.cluster {
            Some(cluster) => {
                let sockets = connect(cluster, topology.workers)?;
                network(&topology, cluster, sockets)?
            }
            None => Config::Process(topology.workers)
                .try_build()
                .map_err(EngineError::Start)?,
        };
        let workers = Workers::start(topology.clone(), communication)?;
        Ok(Self {
            topology,
            workers: Arc::new(Mutex::new(workers)),
        })
    }

    /// Where the engine's workers run.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// A handle that shares payloads between the processes through this site's workers.
    pub fn gatherer(&self) -> Gatherer {
        Gatherer {
            workers: Arc::clone(&self.workers),
            process: self.topology.process(),
            processes: self.topology.processes(),
        }
    }

    /// Shuts the workers down and waits for their threads (in a cluster, until every
    /// process has finished).
    pub fn shut_down(self) -> Result<(), EngineError> {
        self.workers().shut_down()
    }

    /// The worker threads, for one command at a time.
    pub(crate) fn workers(&self) -> MutexGuard<'_, Workers> {
        lock(&self.workers)
    }
}

/// Shares one payload of bytes per process with every process of a site (see
/// [`EngineSite::gatherer`]); cheap to clone.
#[derive(Clone)]
pub struct Gatherer {
    workers: Arc<Mutex<Workers>>,
    process: usize,
    processes: usize,
}

impl Gatherer {
    /// This process's index.
    pub fn process(&self) -> usize {
        self.process
    }

    /// Processes of the site.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// Hands `payload` to every process and returns every process's payload, in process
    /// order (this process's own among them). Every process must call it equally often.
    pub fn all_gather(&self, payload: Vec<u8>) -> Result<Vec<Vec<u8>>, EngineError> {
        lock(&self.workers).gather(payload)
    }
}

/// The workers, for one command at a time (a panic while they were held poisons nothing
/// they guard: every command checks their state again).
fn lock(workers: &Mutex<Workers>) -> MutexGuard<'_, Workers> {
    workers.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The communication of this process's workers over its sockets to every peer.
fn network(
    topology: &Topology,
    cluster: &Cluster,
    sockets: Vec<Option<TcpStream>>,
) -> Result<Communication, EngineError> {
    network_panics::quieten();
    let hooks = Hooks::default();
    let local = ProcessBuilder::new_typed_vector(topology.workers, hooks.refill.clone(), None);
    let (builders, guard) = initialize_networking_from_sockets(
        local,
        sockets,
        cluster.process,
        topology.workers,
        hooks,
    )
    .map_err(|e| EngineError::Start(format!("could not start the network threads: {e}")))?;
    Ok((
        builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
        Box::new(guard),
    ))
}

/// One socket per process (`None` for this one), after the handshake with each.
fn connect(cluster: &Cluster, workers: usize) -> Result<Vec<Option<TcpStream>>, EngineError> {
    let me = cluster.process;
    let deadline = Instant::now() + cluster.timeout;
    let hello = Hello {
        process: me as u64,
        processes: cluster.addresses.len() as u64,
        workers: workers as u64,
        fingerprint: cluster.fingerprint,
    };
    let listener = (me + 1 < cluster.addresses.len())
        .then(|| listen(&cluster.addresses[me]))
        .transpose()?;
    let mut sockets: Vec<Option<TcpStream>> = (0..cluster.addresses.len()).map(|_| None).collect();
    for (peer, address) in cluster.addresses.iter().enumerate().take(me) {
        let mut stream = dial(cluster, peer, address, deadline)?;
        hello
            .write(&mut stream)
            .map_err(|e| lost(cluster, peer, e))?;
        let answer = Hello::read(&mut stream, deadline).map_err(|e| lost(cluster, peer, e))?;
        hello.check(&answer, peer, address)?;
        sockets[peer] = Some(stream);
    }
    if let Some(listener) = listener {
        while sockets[me + 1..].iter().any(Option::is_none) {
            let (mut stream, from) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(unreachable(cluster, &sockets));
                    }
                    thread::sleep(POLL);
                    continue;
                }
                Err(e) => return Err(EngineError::Start(format!("accepting a peer: {e}"))),
            };
            // A stranger (a port scanner, another program) that says nothing is dropped.
            let Ok(theirs) = Hello::read(&mut stream, deadline) else {
                continue;
            };
            let peer = theirs.process as usize;
            let described = from.to_string();
            // Answer first, so that a peer of another run learns why it is refused too.
            hello
                .write(&mut stream)
                .map_err(|e| lost(cluster, peer.min(me), e))?;
            hello.check(&theirs, peer, &described)?;
            if peer <= me || peer >= sockets.len() || sockets[peer].is_some() {
                return Err(EngineError::Start(format!(
                    "process {me} was contacted by {described} claiming to be process {peer}, \
                     which it does not expect; give every process its own --process index"
                )));
            }
            sockets[peer] = Some(stream);
        }
    }
    for stream in sockets.iter().flatten() {
        stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(None))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|e| EngineError::Start(format!("configuring a peer socket: {e}")))?;
    }
    Ok(sockets)
}

/// The error for a worker's panic `message`, if it says that the network failed (timely's
/// network threads panic when a peer's socket closes, and the workers then panic reading
/// from them).
pub(crate) fn network_failure(message: &str) -> Option<EngineError> {
    network_panics::is_network(message).then(|| EngineError::PeerLost {
        message: network_panics::first().unwrap_or_else(|| message.to_owned()),
    })
}

/// Panics that follow from a lost peer: kept off stderr (the engine's error says what
/// happened), the first network thread's message kept for that error.
mod network_panics {
    use std::panic;
    use std::sync::{Mutex, Once, PoisonError};

    static FIRST: Mutex<Option<String>> = Mutex::new(None);

    /// Whether a panic message comes from timely's network layer or its aftermath.
    pub(super) fn is_network(message: &str) -> bool {
        message.contains("timely communication error") || message.contains("MergeQueue poisoned")
    }

    /// The first network panic's message and thread, if any.
    pub(super) fn first() -> Option<String> {
        FIRST.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Installs the filtering panic hook (once per process).
    pub(super) fn quieten() {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = panic::take_hook();
            panic::set_hook(Box::new(move |info| {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                if !is_network(&message) {
                    return previous(info);
                }
                let thread = std::thread::current();
                let mut first = FIRST.lock().unwrap_or_else(PoisonError::into_inner);
                if first.is_none() && message.contains("timely communication error") {
                    let name = thread.name().unwrap_or("a network thread");
                    *first = Some(format!("{name}: {message}"));
                }
            }));
        });
    }
}

/// How often connecting and accepting are retried.
const POLL: Duration = Duration::from_millis(50);

fn listen(address: &str) -> Result<TcpListener, EngineError> {
    let listener = TcpListener::bind(address).map_err(|e| EngineError::Listen {
        address: address.to_owned(),
        reason: e.to_string(),
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| EngineError::Start(format!("configuring the listener: {e}")))?;
    Ok(listener)
}

/// Connects to `peer` at `address`, retrying until `deadline` (it may not listen yet).
fn dial(
    cluster: &Cluster,
    peer: usize,
    address: &str,
    deadline: Instant,
) -> Result<TcpStream, EngineError> {
    let mut last_error = String::from("not tried");
    while Instant::now() < deadline {
        match resolve(address) {
            Ok(target) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match TcpStream::connect_timeout(&target, left.max(POLL)) {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last_error = e.to_string(),
                }
            }
            Err(e) => last_error = e,
        }
        thread::sleep(POLL);
    }
    Err(EngineError::PeerUnreachable {
        process: cluster.process,
        peer,
        address: address.to_owned(),
        waited: cluster.timeout,
        reason: last_error,
    })
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))
}

/// The error for the first peer after this process that never connected.
fn unreachable(cluster: &Cluster, sockets: &[Option<TcpStream>]) -> EngineError {
    let peer = (cluster.process + 1..sockets.len())
        .find(|&p| sockets[p].is_none())
        .unwrap_or(cluster.process);
    EngineError::PeerUnreachable {
        process: cluster.process,
        peer,
        address: cluster.addresses[peer].clone(),
        waited: cluster.timeout,
        reason: format!(
            "it did not connect to this process at {}",
            cluster.addresses[cluster.process]
        ),
    }
}

fn lost(cluster: &Cluster, peer: usize, error: std::io::Error) -> EngineError {
    EngineError::PeerUnreachable {
        process: cluster.process,
        peer,
        address: cluster.addresses[peer].clone(),
        waited: cluster.timeout,
        reason: format!("the connection failed during the handshake: {error}"),
    }
}

/// The handshake both sides of a connection send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hello {
    process: u64,
    processes: u64,
    workers: u64,
    fingerprint: u64,
}

impl Hello {
    const LEN: usize = MAGIC.len() + 4 * 8;

    fn write(&self, stream: &mut TcpStream) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(Self::LEN);
        bytes.extend_from_slice(MAGIC);
        for field in [self.process, self.processes, self.workers, self.fingerprint] {
            bytes.extend_from_slice(&field.to_be_bytes());
        }
        stream.write_all(&bytes)
    }

    fn read(stream: &mut TcpStream, deadline: Instant) -> std::io::Result<Hello> {
        stream.set_nonblocking(false)?;
        let left = deadline.saturating_duration_since(Instant::now());
        stream.set_read_timeout(Some(left.max(POLL)))?;
        let mut bytes = [0u8; Self::LEN];
        stream.read_exact(&mut bytes)?;
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                "not a recsift process",
            ));
        }
        let field = |k: usize| {
            let start = MAGIC.len() + 8 * k;
            u64::from_be_bytes(bytes[start..start + 8].try_into().expect("8 bytes"))
        };
        Ok(Hello {
            process: field(0),
            processes: field(1),
            workers: field(2),
            fingerprint: field(3),
        })
    }

    /// Whether `theirs`, from `peer` at `address`, belongs to the same run as `self` and is
    /// that peer.
    fn check(&self, theirs: &Hello, peer: usize, address: &str) -> Result<(), EngineError> {
        let mismatch = |what: String| EngineError::PeerMismatch {
            peer,
            address: address.to_owned(),
            what,
        };
        if theirs.processes != self.processes {
            return Err(mismatch(format!(
                "it runs as one of {} processes, this one as one of {}",
                theirs.processes, self.processes
            )));
        }
        if theirs.workers != self.workers {
            return Err(mismatch(format!(
                "it has {} worker threads, this process {}; give every process the same \
                 --workers",
                theirs.workers, self.workers
            )));
        }
        if theirs.fingerprint != self.fingerprint {
            return Err(mismatch(
                "it runs another pipeline, another seed or another recsift version, or \
                 resumes from another checkpoint (every process must read the same \
                 checkpoint: give them one results folder on a shared filesystem)"
                    .into(),
            ));
        }
        if theirs.process != peer as u64 {
            return Err(mismatch(format!(
                "the process there says it is process {} of the cluster, not process {peer}; \
                 check the hostfile (or `cluster.port`) and each process's --process",
                theirs.process
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    fn layout(process: usize, ports: &[u16], fingerprint: u64, timeout_ms: u64) -> Cluster {
        Cluster {
            process,
            addresses: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            timeout: Duration::from_millis(timeout_ms),
            fingerprint,
        }
    }

    #[test]
    fn three_processes_connect_to_each_other() {
        let ports = [free_port(), free_port(), free_port()];
        let handles: Vec<_> = (0..3)
            .map(|p| {
                let cluster = layout(p, &ports, 7, 10_000);
                thread::spawn(move || {
                    connect(&cluster, 2).map(|s| s.iter().map(Option::is_some).collect::<Vec<_>>())
                })
            })
            .collect();
        for (p, handle) in handles.into_iter().enumerate() {
            let connected = handle.join().unwrap().unwrap();
            let expected: Vec<bool> = (0..3).map(|q| q != p).collect();
            assert_eq!(connected, expected);
        }
    }

    #[test]
    fn a_missing_peer_is_named_after_the_timeout() {
        let ports = [free_port(), free_port()];
        let started = Instant::now();
        let error = connect(&layout(1, &ports, 7, 300), 1).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let message = error.to_string();
        assert!(
            message.contains(&format!("process 0 at 127.0.0.1:{}", ports[0])),
            "{message}"
        );
        let error = connect(&layout(0, &ports, 7, 300), 1).unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("process 1 at 127.0.0.1:{}", ports[1])),
            "{error}"
        );
    }

    #[test]
    fn a_taken_address_is_named() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let error = connect(&layout(0, &[port, free_port()], 7, 300), 1).unwrap_err();
        assert!(
            error.to_string().starts_with(&format!(
                "cannot listen on 127.0.0.1:{port} for the other processes"
            )),
            "{error}"
        );
    }

    #[test]
    fn a_process_at_the_wrong_address_is_refused() {
        // Process 1 expects process 0 at `ports[0]`; what answers there says it is process 1.
        let impostor = TcpListener::bind("127.0.0.1:0").unwrap();
        let ports = [impostor.local_addr().unwrap().port(), free_port()];
        let answer = thread::spawn(move || {
            let (mut stream, _) = impostor.accept().unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            let theirs = Hello::read(&mut stream, deadline).unwrap();
            Hello {
                process: 1,
                ..theirs
            }
            .write(&mut stream)
            .unwrap();
        });
        let error = connect(&layout(1, &ports, 7, 5_000), 1).unwrap_err();
        answer.join().unwrap();
        assert!(
            error.to_string().contains(&format!(
                "refusing process 0 at 127.0.0.1:{}: the process there says it is process 1",
                ports[0]
            )),
            "{error}"
        );
    }

    #[test]
    fn a_peer_of_another_pipeline_or_shape_is_refused() {
        let ports = [free_port(), free_port()];
        let zero = layout(0, &ports, 7, 5_000);
        let other = layout(1, &ports, 8, 5_000);
        let listener = thread::spawn(move || connect(&zero, 1));
        let error = connect(&other, 1).unwrap_err();
        assert!(error.to_string().contains("another pipeline"), "{error}");
        assert!(listener.join().unwrap().is_err());

        let ports = [free_port(), free_port()];
        let zero = layout(0, &ports, 7, 5_000);
        let one = layout(1, &ports, 7, 5_000);
        let listener = thread::spawn(move || connect(&zero, 2));
        let error = connect(&one, 1).unwrap_err();
        assert!(error.to_string().contains("--workers"), "{error}");
        assert!(listener.join().unwrap().is_err());
    }
}
