//! Typed, read-only views of one snapshot's parts, so Python reads a direction's counters by
//! name instead of walking `to_dict()`, and the bucket bounds this build places values in.

use kvoff_core::stats::histogram::{
    DURATION_BOUNDS_SECONDS, SIZE_BOUNDS_BYTES, THROUGHPUT_BOUNDS_BPS,
};
use kvoff_core::stats::DirectionStats;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// One direction of one snapshot (`OffloadingConnectorStats.direction(name)`): a frozen copy.
#[pyclass(
    frozen,
    eq,
    skip_from_py_object,
    name = "DirectionStats",
    module = "kvoff._core"
)]
#[derive(Clone, PartialEq)]
pub(crate) struct PyDirectionStats {
    pub(crate) direction: &'static str,
    pub(crate) inner: DirectionStats,
}

fn tuple<'py>(py: Python<'py>, counts: &[u64]) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, counts)
}

#[pymethods]
impl PyDirectionStats {
    /// The direction's name, e.g. `"GPU_to_CPU"`.
    #[getter]
    fn direction(&self) -> &'static str {
        self.direction
    }
    #[getter]
    fn ops(&self) -> u64 {
        self.inner.ops
    }
    #[getter]
    fn failed_ops(&self) -> u64 {
        self.inner.failed_ops
    }
    #[getter]
    fn blocks(&self) -> u64 {
        self.inner.blocks
    }
    #[getter]
    fn bytes(&self) -> u64 {
        self.inner.bytes
    }
    #[getter]
    fn failed_bytes(&self) -> u64 {
        self.inner.failed_bytes
    }
    #[getter]
    fn time_ns(&self) -> u64 {
        self.inner.time_ns
    }
    #[getter]
    fn size_counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        tuple(py, &self.inner.size_counts)
    }
    #[getter]
    fn duration_counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        tuple(py, &self.inner.duration_counts)
    }
    #[getter]
    fn throughput_counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        tuple(py, &self.inner.throughput_counts)
    }
    #[getter]
    fn throughput_sum(&self) -> u64 {
        self.inner.throughput_sum
    }

    fn __repr__(&self) -> String {
        let d = &self.inner;
        format!(
            "DirectionStats({}: {} ops, {} failed, {} blocks, {} bytes, {} ns)",
            self.direction, d.ops, d.failed_ops, d.blocks, d.bytes, d.time_ns
        )
    }
}

/// The bucket bounds as `{"size_bytes": (...), "duration_seconds": (...),
/// "throughput_bytes_per_second": (...)}`, the same values `to_dict()["buckets"]` carries
/// (sizes as ints, the others as floats). A fresh dict each call.
pub(crate) fn buckets(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("size_bytes", PyTuple::new(py, SIZE_BOUNDS_BYTES)?)?;
    out.set_item(
        "duration_seconds",
        PyTuple::new(py, DURATION_BOUNDS_SECONDS)?,
    )?;
    out.set_item(
        "throughput_bytes_per_second",
        PyTuple::new(py, THROUGHPUT_BOUNDS_BPS.map(|b| b as f64))?,
    )?;
    Ok(out)
}
