use std::fmt;
use std::str::FromStr;

use crate::error::KvoffError;

/// Which way a transfer moves bytes. The string forms are the `transfer_type` values that
/// vLLM's offloading stats and `vllm:kv_offload_*` metrics use.
///
/// ```
/// use kvoff_core::Direction;
///
/// assert_eq!("GPU_to_CPU".parse::<Direction>().ok(), Some(Direction::GpuToCpu));
/// assert_eq!(Direction::CpuToGpu.to_string(), "CPU_to_GPU");
/// assert!("sideways".parse::<Direction>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A store: GPU KV blocks copied into the CPU tier.
    GpuToCpu,
    /// A load: CPU-tier blocks copied back into GPU KV blocks.
    CpuToGpu,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::GpuToCpu, Direction::CpuToGpu];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::GpuToCpu => "GPU_to_CPU",
            Direction::CpuToGpu => "CPU_to_GPU",
        }
    }

    /// Dense index for per-direction arrays.
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Direction::GpuToCpu => 0,
            Direction::CpuToGpu => 1,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Direction {
    type Err = KvoffError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "GPU_to_CPU" | "store" => Ok(Direction::GpuToCpu),
            "CPU_to_GPU" | "load" => Ok(Direction::CpuToGpu),
            other => Err(KvoffError::InvalidArgument(format!(
                "unknown transfer direction {other:?}: expected \"GPU_to_CPU\" (store) or \"CPU_to_GPU\" (load)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_strings() {
        for d in Direction::ALL {
            assert_eq!(d.as_str().parse::<Direction>().ok(), Some(d));
        }
        assert_eq!("store".parse::<Direction>().ok(), Some(Direction::GpuToCpu));
        assert_eq!("load".parse::<Direction>().ok(), Some(Direction::CpuToGpu));
        let err = "sideways".parse::<Direction>().err().map(|e| e.to_string());
        assert!(err.is_some_and(|m| m.contains("\"sideways\"")));
    }
}
