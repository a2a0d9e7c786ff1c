use thiserror::Error;

/// Every failure the core reports. Each message names the value at fault; the binding crate
/// maps each variant once onto the `kvoff.KvoffError` hierarchy:
///
/// | variant | Python class | also a |
/// |---|---|---|
/// | `UnknownHash` | `UnknownHashError` | `KeyError` |
/// | `UnknownJob` | `UnknownJobError` | `KeyError` |
/// | `InvalidState` | `InvalidStateError` | `ValueError` |
/// | `InvalidArgument` | `InvalidArgumentError` | `ValueError` |
/// | `OutOfMemory` | `MemoryError` (the built-in) | |
///
/// (`HashTypeError`, a `TypeError`, is raised by the binding during argument conversion.)
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KvoffError {
    /// A block hash that the manager does not hold.
    #[error("unknown block hash {0}")]
    UnknownHash(String),
    /// A job id that was never submitted, or has already completed.
    #[error("{0}")]
    UnknownJob(String),
    /// The call is well-formed but the state does not allow it: a load of a block that is not
    /// ready, a completion with nothing in flight, a double completion.
    #[error("{0}")]
    InvalidState(String),
    /// A malformed argument: duplicates within one call, sizes out of range, unknown names,
    /// mismatched lengths, a stats dict of the wrong shape.
    #[error("{0}")]
    InvalidArgument(String),
    /// Memory the call needs and cannot have: a structure larger than the machine's physical
    /// memory, or an allocation the system refused. Nothing was changed.
    #[error("{0}")]
    OutOfMemory(String),
}

pub type Result<T, E = KvoffError> = std::result::Result<T, E>;
