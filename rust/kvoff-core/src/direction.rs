use std::fmt;
use std::str::FromStr;

use crate::error::KvoffError;

/// Which way a transfer moves bytes. The string forms of the GPU link's two directions are the
/// `transfer_type` values that vLLM's offloading stats and `vllm:kv_offload_*` metrics use; the
/// remote tier's two are named the same way.
///
/// ```
/// use kvoff_core::Direction;
///
/// assert_eq!("GPU_to_CPU".parse::<Direction>().ok(), Some(Direction::GpuToCpu));
/// assert_eq!(Direction::CpuToGpu.to_string(), "CPU_to_GPU");
/// assert_eq!(Direction::RemoteToCpu.to_string(), "REMOTE_to_CPU");
/// assert!("sideways".parse::<Direction>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A store: GPU KV blocks copied into the CPU tier.
    GpuToCpu,
    /// A load: CPU-tier blocks copied back into GPU KV blocks.
    CpuToGpu,
    /// A write-behind: CPU-tier blocks written to the remote tier.
    CpuToRemote,
    /// A fetch: remote-tier blocks read into CPU-tier blocks.
    RemoteToCpu,
}

impl Direction {
    /// Every direction, in the order snapshots list them.
    pub const ALL: [Direction; 4] = [
        Direction::GpuToCpu,
        Direction::CpuToGpu,
        Direction::CpuToRemote,
        Direction::RemoteToCpu,
    ];
    /// The GPU link's directions: what `CpuGpuTransfer` and the `JobTracker` move, and the
    /// `vllm:kv_offload_*` series' `transfer_type`s.
    pub const GPU: [Direction; 2] = [Direction::GpuToCpu, Direction::CpuToGpu];
    /// The remote tier's directions.
    pub const REMOTE: [Direction; 2] = [Direction::CpuToRemote, Direction::RemoteToCpu];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::GpuToCpu => "GPU_to_CPU",
            Direction::CpuToGpu => "CPU_to_GPU",
            Direction::CpuToRemote => "CPU_to_REMOTE",
            Direction::RemoteToCpu => "REMOTE_to_CPU",
        }
    }

    /// Dense index for per-direction arrays (its position in [`Direction::ALL`]).
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Direction::GpuToCpu => 0,
            Direction::CpuToGpu => 1,
            Direction::CpuToRemote => 2,
            Direction::RemoteToCpu => 3,
        }
    }

    /// True for the GPU link's two directions.
    #[must_use]
    pub const fn is_gpu(self) -> bool {
        matches!(self, Direction::GpuToCpu | Direction::CpuToGpu)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Direction {
    type Err = KvoffError;

    /// Exactly the names `as_str` gives; nothing else (the old `"store"` / `"load"` aliases
    /// are refused with a hint, so one spelling of each direction exists everywhere).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(d) = Direction::ALL.into_iter().find(|d| d.as_str() == s) {
            return Ok(d);
        }
        let expected = Direction::ALL
            .map(|d| format!("{:?}", d.as_str()))
            .join(", ");
        let hint = match s {
            "store" => " (the alias \"store\" is no longer accepted: write \"GPU_to_CPU\")",
            "load" => " (the alias \"load\" is no longer accepted: write \"CPU_to_GPU\")",
            _ => "",
        };
        Err(KvoffError::InvalidArgument(format!(
            "unknown transfer direction {s:?}: expected one of {expected}{hint}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_strings() {
        for (i, d) in Direction::ALL.into_iter().enumerate() {
            assert_eq!(d.as_str().parse::<Direction>().ok(), Some(d));
            assert_eq!(d.index(), i);
        }
        assert!(Direction::GPU.iter().all(|d| d.is_gpu()));
        assert!(!Direction::REMOTE.iter().any(|d| d.is_gpu()));
        let err = |s: &str| s.parse::<Direction>().err().map(|e| e.to_string());
        assert_eq!(
            err("sideways").as_deref(),
            Some(
                "unknown transfer direction \"sideways\": expected one of \"GPU_to_CPU\", \"CPU_to_GPU\", \
                 \"CPU_to_REMOTE\", \"REMOTE_to_CPU\""
            )
        );
        assert_eq!(
            err("store").as_deref(),
            Some(
                "unknown transfer direction \"store\": expected one of \"GPU_to_CPU\", \"CPU_to_GPU\", \
                 \"CPU_to_REMOTE\", \"REMOTE_to_CPU\" (the alias \"store\" is no longer accepted: write \"GPU_to_CPU\")"
            )
        );
        assert!(err("load").is_some_and(|m| m.contains("write \"CPU_to_GPU\"")));
        assert!(err("gpu_to_cpu").is_some(), "names are case-sensitive");
    }
}
