//! Where an encoding call spends its time, stage by stage (for benchmarks and profiles).

use serde::Serialize;

/// Seconds spent per stage of [`super::TextEncoder::encode_profiled`].
///
/// `tokenize` and `total` are wall-clock time. The model stages of the CPU path are the
/// CPU time of each worker thread (on Unix; wall-clock time elsewhere), summed over
/// threads: with two busy threads they add up to about twice the wall time of the forward
/// passes, and other processes competing for the cores do not inflate them. The GPU path
/// fills in only `tokenize`, `forward` and `total`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StageTimes {
    /// Turning texts into token ids (wall clock).
    pub tokenize: f64,
    /// Embedding lookup and its layer norm.
    pub embeddings: f64,
    /// The fused query/key/value product.
    pub qkv: f64,
    /// Softmax attention.
    pub attention: f64,
    /// The attention output product.
    pub attn_out: f64,
    /// Residual additions and layer norms after attention and feed-forward.
    pub layer_norm: f64,
    /// The feed-forward up-projection product.
    pub ffn_up: f64,
    /// The feed-forward activation (GELU).
    pub activation: f64,
    /// The feed-forward down-projection product.
    pub ffn_down: f64,
    /// Mean pooling and L2 normalisation.
    pub pooling: f64,
    /// The whole model forward where stages are not measured separately (GPU path).
    pub forward: f64,
    /// The whole call (wall clock).
    pub total: f64,
}

impl StageTimes {
    /// Add every stage of `other` to this one.
    pub fn add(&mut self, other: &StageTimes) {
        self.tokenize += other.tokenize;
        self.embeddings += other.embeddings;
        self.qkv += other.qkv;
        self.attention += other.attention;
        self.attn_out += other.attn_out;
        self.layer_norm += other.layer_norm;
        self.ffn_up += other.ffn_up;
        self.activation += other.activation;
        self.ffn_down += other.ffn_down;
        self.pooling += other.pooling;
        self.forward += other.forward;
        self.total += other.total;
    }

    /// The model stages as `(name, seconds)`, in pipeline order.
    pub fn model_stages(&self) -> [(&'static str, f64); 10] {
        [
            ("embeddings", self.embeddings),
            ("qkv", self.qkv),
            ("attention", self.attention),
            ("attn_out", self.attn_out),
            ("layer_norm", self.layer_norm),
            ("ffn_up", self.ffn_up),
            ("activation", self.activation),
            ("ffn_down", self.ffn_down),
            ("pooling", self.pooling),
            ("forward", self.forward),
        ]
    }
}

/// A clock for stage laps: this thread's CPU time in seconds where the platform has one
/// (`CLOCK_THREAD_CPUTIME_ID`), else wall-clock seconds since `origin`.
pub fn thread_seconds(origin: std::time::Instant) -> f64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; the call only writes it.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
        }
    }
    origin.elapsed().as_secs_f64()
}

/// CPU seconds used so far by the whole process (all threads), where the platform says.
pub fn process_cpu_seconds() -> Option<f64> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as in `thread_seconds`.
        if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0 {
            return Some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_clock_advances_with_work_and_adds_up() {
        // Spin until the thread's CPU clock has advanced 20 ms: on a loaded machine that
        // takes longer in wall time, never less (the thread cannot run faster than the
        // wall clock), so the test does not depend on the load.
        let origin = std::time::Instant::now();
        let start = thread_seconds(origin);
        let mut x = 0u64;
        let mut spent = 0.0;
        while spent < 0.02 && origin.elapsed().as_secs() < 30 {
            for _ in 0..10_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            spent = thread_seconds(origin) - start;
        }
        std::hint::black_box(x);
        let wall = origin.elapsed().as_secs_f64();
        assert!(
            spent >= 0.02,
            "the thread clock did not advance: {spent} s in {wall} s"
        );
        assert!(
            spent <= wall + 0.005,
            "thread CPU {spent} s exceeds wall {wall} s"
        );
        let mut a = StageTimes {
            qkv: 1.0,
            ..StageTimes::default()
        };
        a.add(&StageTimes {
            qkv: 0.5,
            total: 2.0,
            ..StageTimes::default()
        });
        assert_eq!((a.qkv, a.total), (1.5, 2.0));
        #[cfg(unix)]
        assert!(process_cpu_seconds().is_some_and(|s| s > 0.0));
    }
}
