//! `Direction`: the transfer direction names, defined once in the core
//! (`kvoff_core::Direction`) and handed to Python as string constants, so no Python module
//! spells them itself.

use kvoff_core::Direction;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// A namespace of `str` constants (not instantiable): the values are plain strings because
/// they travel as dict keys, Prometheus label values and vLLM's `transfer_type`.
#[pyclass(frozen, name = "Direction", module = "kvoff._core")]
pub(crate) struct PyDirection;

fn names<'py>(py: Python<'py>, ds: &[Direction]) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, ds.iter().map(|d| d.as_str()))
}

#[pymethods]
impl PyDirection {
    #[classattr]
    #[pyo3(name = "GPU_TO_CPU")]
    fn gpu_to_cpu() -> &'static str {
        Direction::GpuToCpu.as_str()
    }

    #[classattr]
    #[pyo3(name = "CPU_TO_GPU")]
    fn cpu_to_gpu() -> &'static str {
        Direction::CpuToGpu.as_str()
    }

    #[classattr]
    #[pyo3(name = "CPU_TO_REMOTE")]
    fn cpu_to_remote() -> &'static str {
        Direction::CpuToRemote.as_str()
    }

    #[classattr]
    #[pyo3(name = "REMOTE_TO_CPU")]
    fn remote_to_cpu() -> &'static str {
        Direction::RemoteToCpu.as_str()
    }

    /// The GPU link's directions (transfers, the `JobTracker`, vLLM's `transfer_type`).
    #[classattr]
    #[pyo3(name = "GPU")]
    fn gpu(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
        names(py, &Direction::GPU)
    }

    /// The remote tier's directions.
    #[classattr]
    #[pyo3(name = "REMOTE")]
    fn remote(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
        names(py, &Direction::REMOTE)
    }

    /// Every direction, in the order snapshots list them.
    #[classattr]
    #[pyo3(name = "ALL")]
    fn all(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
        names(py, &Direction::ALL)
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyDirection>()
}
