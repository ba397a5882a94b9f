//! The process's resident memory from `/proc/self/status` (Linux), and a way to restart its
//! peak counter so that a phase's peak can be told from what came before.

/// Resident memory now and at its peak, in MiB.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ResidentMemory {
    /// `VmRSS`: resident now.
    pub now_mib: f64,
    /// `VmHWM`: the peak since the process started or since [`reset_peak`].
    pub peak_mib: f64,
}

/// Reads `VmRSS` and `VmHWM`; `None` where `/proc/self/status` does not exist or lacks them.
pub fn resident_memory() -> Option<ResidentMemory> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status(&status)
}

fn parse_status(status: &str) -> Option<ResidentMemory> {
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some(ResidentMemory {
        now_mib: field("VmRSS:")?,
        peak_mib: field("VmHWM:")?,
    })
}

/// Restarts the peak counter at the current resident size (Linux >= 4.0); whether it did.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_mib() {
        let status = "Name:\trecsift\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(
            parse_status(status),
            Some(ResidentMemory {
                now_mib: 100.0,
                peak_mib: 200.0
            })
        );
        assert_eq!(parse_status("VmRSS:\t1 kB\n"), None);
    }
}
