//! The engine's topology of a plan: worker threads, and in a cluster the addresses of every
//! process (from `cluster:` or the hostfile) and the fingerprint the processes compare
//! before they start.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::RunError;
use crate::dataflow::{Cluster, EngineSite, Gatherer, Topology};
use crate::io::shares::{AllGather, ReadShare};
use crate::plan::{ClusterHosts, ClusterPlan, Plan};

/// Where `plan`'s engine runs, connected to the other processes of its cluster (if any):
/// what a run makes once, before it loads anything (see [`EngineSite`]).
pub fn engine_site(plan: &Plan) -> Result<EngineSite, RunError> {
    Ok(EngineSite::connect(topology(plan)?)?)
}

/// The share of the input this process reads, in a run on several processes: the others'
/// shares arrive through `site`'s workers (see [`crate::io::shares`]). `None` for one
/// process, which reads everything itself.
pub fn read_share(site: &EngineSite) -> Option<ReadShare> {
    (site.topology().processes() > 1).then(|| Arc::new(site.gatherer()) as ReadShare)
}

impl AllGather for Gatherer {
    fn process(&self) -> usize {
        Gatherer::process(self)
    }

    fn processes(&self) -> usize {
        Gatherer::processes(self)
    }

    fn all_gather(&self, payload: Vec<u8>) -> Result<Vec<Vec<u8>>, String> {
        Gatherer::all_gather(self, payload).map_err(|e| e.to_string())
    }
}

/// Where `plan`'s engine runs.
fn topology(plan: &Plan) -> Result<Topology, RunError> {
    let cluster = &plan.cluster;
    if cluster.processes == 1 {
        return Ok(Topology::threads(plan.workers));
    }
    let addresses = match &cluster.hosts {
        ClusterHosts::Local { port } => (0..cluster.processes)
            .map(|p| format!("127.0.0.1:{}", usize::from(*port) + p))
            .collect(),
        ClusterHosts::File(file) => read_hostfile(file, cluster.processes)?,
    };
    Ok(Topology {
        workers: plan.workers,
        cluster: Some(Cluster {
            process: cluster.process,
            addresses,
            timeout: Duration::from_secs_f64(cluster.timeout_s),
            fingerprint: fingerprint(plan),
        }),
    })
}

/// The first `processes` addresses of a hostfile: one `host:port` per line; blank lines and
/// `#` comments are skipped.
fn read_hostfile(file: &Path, processes: usize) -> Result<Vec<String>, RunError> {
    let problem = |message: String, help: &str| RunError::Experiment {
        field: "cluster.hostfile (or --hostfile)".into(),
        message,
        help: help.into(),
    };
    let text = std::fs::read_to_string(file).map_err(|e| {
        problem(
            format!("cannot read the hostfile {}: {e}", file.display()),
            "give the path of a file with one host:port per line, process 0 first",
        )
    })?;
    let mut addresses = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let valid = line
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(problem(
                format!(
                    "{}:{}: `{line}` is not host:port",
                    file.display(),
                    number + 1
                ),
                "write e.g. `10.0.0.5:2101` or `node-1.example.org:2101`",
            ));
        }
        addresses.push(line.to_owned());
    }
    if addresses.len() < processes {
        return Err(problem(
            format!(
                "the hostfile {} has {} addresses, but the run has {processes} processes",
                file.display(),
                addresses.len()
            ),
            "add one host:port line per process, or run fewer processes",
        ));
    }
    addresses.truncate(processes);
    Ok(addresses)
}

/// What every process of a run must agree on: the plan (apart from where this process writes
/// and which process it is), the checkpoint it resumes from, and recsift's version.
fn fingerprint(plan: &Plan) -> u64 {
    let mut shared = plan.clone();
    shared.cluster = ClusterPlan {
        process: 0,
        ..shared.cluster
    };
    shared.output.dir = Default::default();
    shared.source = Default::default();
    let json = serde_json::to_vec(&shared).expect("a plan serialises");
    let digest = Sha256::new()
        .chain_update(env!("CARGO_PKG_VERSION"))
        .chain_update(json)
        .chain_update(format!("{:?}", plan.cluster.resumed_after))
        .finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostfiles_skip_comments_and_name_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(
            &file,
            "# the cluster\n10.0.0.5:2101\n\nnode-b:2101  # second\nc:1\n",
        )
        .unwrap();
        assert_eq!(
            read_hostfile(&file, 2).unwrap(),
            vec!["10.0.0.5:2101".to_string(), "node-b:2101".to_string()]
        );
        let error = read_hostfile(&file, 4).unwrap_err().to_string();
        assert!(
            error.contains("has 3 addresses, but the run has 4 processes"),
            "{error}"
        );
        std::fs::write(&file, "10.0.0.5:2101\n10.0.0.6\n").unwrap();
        let error = read_hostfile(&file, 2).unwrap_err().to_string();
        assert!(error.contains(":2: `10.0.0.6` is not host:port"), "{error}");
        let missing = dir.path().join("nowhere");
        let error = read_hostfile(&missing, 2).unwrap_err().to_string();
        assert!(
            error.contains(&format!("cannot read the hostfile {}", missing.display())),
            "{error}"
        );
    }
}
