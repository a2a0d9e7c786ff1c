//! `StatsAccumulator` and `OffloadingConnectorStats` (docs/DESIGN.md, "Stats").

use std::sync::Arc;

use kvoff_core::stats::snapshot::FORMAT_VERSION;
use kvoff_core::stats::{Reduced, RemoteErrorKind, StatsAccumulator, StatsSnapshot};
use kvoff_core::{Direction, KvoffError, ManagerStatsSink};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyTuple, PyType};

use crate::errors::to_py;
use crate::stats_args::{count, direction, flag, seconds, text, type_name, Given};
use crate::stats_plain;
use crate::stats_view::{self, PyDirectionStats};

/// Frozen: every method takes `&self`, so Python threads share one accumulator without
/// the binding's runtime borrow flag, and the same `Arc` can be the manager's stats sink.
#[pyclass(frozen, name = "StatsAccumulator", module = "kvoff._core")]
pub(crate) struct PyStatsAccumulator {
    pub(crate) inner: Arc<StatsAccumulator>,
}

impl PyStatsAccumulator {
    /// The accumulator itself, for Rust owners such as the job tracker.
    pub(crate) fn shared(&self) -> Arc<StatsAccumulator> {
        Arc::clone(&self.inner)
    }

    /// The same accumulator as the block manager's sink.
    pub(crate) fn sink(&self) -> Arc<dyn ManagerStatsSink> {
        self.shared()
    }
}

#[pymethods]
impl PyStatsAccumulator {
    #[new]
    fn new() -> Self {
        Self {
            inner: Arc::new(StatsAccumulator::new()),
        }
    }

    /// Arguments are converted by `stats_args` (an `InvalidArgumentError` naming the argument
    /// for a wrong type, a bool where a number belongs, or an int beyond u64), then the core
    /// checks the one-transfer bounds.
    #[pyo3(
        signature = (direction, num_bytes, seconds, success = Given::Default, num_blocks = Given::Default),
        text_signature = "($self, direction, num_bytes, seconds, success=True, num_blocks=0)"
    )]
    fn record_transfer(
        &self,
        direction: &Bound<'_, PyAny>,
        num_bytes: &Bound<'_, PyAny>,
        seconds: &Bound<'_, PyAny>,
        success: Given<'_>,
        num_blocks: Given<'_>,
    ) -> PyResult<()> {
        let d = self::direction(direction)?;
        let bytes = count("num_bytes", num_bytes)?;
        let secs = self::seconds(seconds)?;
        let ok = match success {
            Given::Value(v) => flag("success", &v)?,
            Given::Default => true,
        };
        let blocks = match num_blocks {
            Given::Value(v) => count("num_blocks", &v)?,
            Given::Default => 0,
        };
        to_py(self.inner.record_transfer(d, bytes, blocks, secs, ok))
    }

    fn record_lookup(
        &self,
        blocks_queried: &Bound<'_, PyAny>,
        blocks_hit: &Bound<'_, PyAny>,
        tokens_queried: &Bound<'_, PyAny>,
        tokens_hit: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        to_py(self.inner.record_lookup(
            count("blocks_queried", blocks_queried)?,
            count("blocks_hit", blocks_hit)?,
            count("tokens_queried", tokens_queried)?,
            count("tokens_hit", tokens_hit)?,
        ))
    }

    fn record_stored(&self, num_blocks: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner.record_stored(count("num_blocks", num_blocks)?);
        Ok(())
    }

    fn record_evicted(&self, num_blocks: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner.record_evicted(count("num_blocks", num_blocks)?);
        Ok(())
    }

    fn record_allocation_failure(&self) {
        self.inner.record_allocation_failure();
    }

    fn set_occupancy(
        &self,
        capacity: &Bound<'_, PyAny>,
        resident: &Bound<'_, PyAny>,
        pinned: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let c = count("capacity", capacity)?;
        let r = count("resident", resident)?;
        let p = count("pinned", pinned)?;
        to_py(self.inner.set_occupancy_checked(c, r, p))
    }

    /// One request's reported hit, split by the tier that served it.
    #[pyo3(
        signature = (cpu_blocks, cpu_tokens, remote_blocks = Given::Default, remote_tokens = Given::Default),
        text_signature = "($self, cpu_blocks, cpu_tokens, remote_blocks=0, remote_tokens=0)"
    )]
    fn record_hits(
        &self,
        cpu_blocks: &Bound<'_, PyAny>,
        cpu_tokens: &Bound<'_, PyAny>,
        remote_blocks: Given<'_>,
        remote_tokens: Given<'_>,
    ) -> PyResult<()> {
        let optional = |name: &str, v: Given<'_>| match v {
            Given::Value(v) => count(name, &v),
            Given::Default => Ok(0),
        };
        let cb = count("cpu_blocks", cpu_blocks)?;
        let ct = count("cpu_tokens", cpu_tokens)?;
        let rb = optional("remote_blocks", remote_blocks)?;
        let rt = optional("remote_tokens", remote_tokens)?;
        self.inner.record_hits(cb, ct, rb, rt);
        Ok(())
    }

    fn record_remote_lookup(
        &self,
        blocks_queried: &Bound<'_, PyAny>,
        blocks_hit: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        to_py(self.inner.record_remote_lookup(
            count("blocks_queried", blocks_queried)?,
            count("blocks_hit", blocks_hit)?,
        ))
    }

    #[pyo3(signature = (kind, n = Given::Default), text_signature = "($self, kind, n=1)")]
    fn record_remote_error(&self, kind: &Bound<'_, PyAny>, n: Given<'_>) -> PyResult<()> {
        let kind: RemoteErrorKind = to_py(text("kind", kind)?.parse())?;
        let n = match n {
            Given::Value(v) => count("n", &v)?,
            Given::Default => 1,
        };
        self.inner.record_remote_error(kind, n);
        Ok(())
    }

    fn record_writes_dropped(&self, n: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner.record_writes_dropped(count("n", n)?);
        Ok(())
    }

    fn set_write_queue(&self, blocks: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner.set_write_queue(count("blocks", blocks)?);
        Ok(())
    }

    fn take(&self) -> PyOffloadingConnectorStats {
        PyOffloadingConnectorStats {
            inner: self.inner.take(),
        }
    }

    fn __repr__(&self) -> String {
        format!("<StatsAccumulator at {:p}>", Arc::as_ptr(&self.inner))
    }

    #[allow(clippy::unused_self)] // a method because pickle calls it on the instance
    fn __reduce__(&self) -> PyResult<()> {
        to_py(Err(KvoffError::InvalidState(
            "a StatsAccumulator is live shared state and cannot be pickled; send take() snapshots"
                .into(),
        )))
    }
}

/// One interval's statistics, as plain data of constant size.
#[pyclass(
    eq,
    skip_from_py_object,
    name = "OffloadingConnectorStats",
    module = "kvoff._core"
)]
#[derive(Clone, PartialEq)]
pub(crate) struct PyOffloadingConnectorStats {
    pub(crate) inner: StatsSnapshot,
}

impl PyOffloadingConnectorStats {
    fn from_any(data: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Some(bytes) = bytes_like(data)? {
            return Self::from_encoded(&bytes);
        }
        if data.is_instance_of::<PyDict>() {
            return Self::from_dict(data);
        }
        to_py(Err(KvoffError::InvalidArgument(format!(
            "OffloadingConnectorStats() takes None, a to_dict() dict, or the to_bytes() form \
             (bytes, bytearray or memoryview); got {}",
            type_name(data)
        ))))
    }

    fn from_encoded(bytes: &[u8]) -> PyResult<Self> {
        Ok(Self {
            inner: to_py(StatsSnapshot::from_bytes(bytes))?,
        })
    }
}

/// The bytes of a `bytes`, `bytearray` or `memoryview` (copied: the encoding is 1016 bytes),
/// `None` for anything else. A memoryview of any format or layout gives its raw bytes, as
/// `bytes(view)` would; a released one is an `InvalidArgumentError`.
fn bytes_like(data: &Bound<'_, PyAny>) -> PyResult<Option<Vec<u8>>> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(Some(b.as_bytes().to_vec()));
    }
    if let Ok(b) = data.cast::<PyByteArray>() {
        return Ok(Some(b.to_vec()));
    }
    if data.is_instance_of::<PyMemoryView>() {
        return match data
            .call_method0("tobytes")
            .and_then(|b| b.cast_into::<PyBytes>().map_err(PyErr::from))
        {
            Ok(b) => Ok(Some(b.as_bytes().to_vec())),
            Err(e) => to_py(Err(KvoffError::InvalidArgument(format!(
                "stats bytes: cannot read the memoryview: {e}"
            )))),
        };
    }
    Ok(None)
}

#[pymethods]
impl PyOffloadingConnectorStats {
    /// Empty, or from a `to_dict()` dict or the `to_bytes()` form (what pickle uses) as bytes,
    /// bytearray or memoryview.
    #[new]
    #[pyo3(signature = (data = None))]
    fn new(data: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        match data {
            None => Ok(Self {
                inner: StatsSnapshot::default(),
            }),
            Some(d) => Self::from_any(d),
        }
    }

    #[staticmethod]
    fn from_dict(data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let value = stats_plain::from_py(data)?;
        Ok(Self {
            inner: to_py(StatsSnapshot::from_value(&value))?,
        })
    }

    /// The `to_bytes()` form, from `bytes`, `bytearray` or `memoryview`.
    #[staticmethod]
    fn from_bytes(data: &Bound<'_, PyAny>) -> PyResult<Self> {
        match bytes_like(data)? {
            Some(bytes) => Self::from_encoded(&bytes),
            None => to_py(Err(KvoffError::InvalidArgument(format!(
                "stats bytes: expected bytes, bytearray or memoryview, got {}",
                type_name(data)
            )))),
        }
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        stats_plain::to_py(py, &self.inner.to_value())
    }

    /// The `to_dict()` view (a fresh dict: changing it does not change the stats).
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.to_dict(py)
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.to_bytes())
    }

    fn reduce<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (k, v) in self.inner.reduce() {
            match v {
                Reduced::Int(i) => out.set_item(k, i)?,
                Reduced::Float(f) => out.set_item(k, f)?,
            }
        }
        Ok(out)
    }

    /// Adds `other` into this snapshot and returns this snapshot.
    fn aggregate<'py>(
        slf: Bound<'py, Self>,
        other: &Bound<'py, Self>,
    ) -> PyResult<Bound<'py, Self>> {
        // Copy first: `other` may be `slf` itself, which cannot be borrowed twice.
        let theirs = other.borrow().inner.clone();
        to_py(slf.borrow_mut().inner.aggregate(&theirs))?;
        Ok(slf)
    }

    /// Adds the interval `other` into this snapshot, read as cumulative totals, and returns
    /// this snapshot: counters add (saturating at 2^64 - 1, never failing), gauges take
    /// `other`'s values.
    fn accumulate<'py>(slf: Bound<'py, Self>, other: &Bound<'py, Self>) -> Bound<'py, Self> {
        // Copy first: `other` may be `slf` itself, which cannot be borrowed twice.
        let theirs = other.borrow().inner.clone();
        slf.borrow_mut().inner.accumulate(&theirs);
        slf
    }

    /// One direction's counters as a frozen `DirectionStats`.
    fn direction(&self, name: &Bound<'_, PyAny>) -> PyResult<PyDirectionStats> {
        let d = self::direction(name)?;
        Ok(PyDirectionStats {
            direction: d.as_str(),
            inner: self.inner.direction(d).clone(),
        })
    }

    /// The histogram bucket bounds this build uses (what `to_dict()["buckets"]` carries).
    #[staticmethod]
    fn buckets(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        stats_view::buckets(py)
    }

    /// The format version `to_dict()` and `to_bytes()` write (version 1 is read too).
    #[classattr]
    const VERSION: u32 = FORMAT_VERSION;

    /// The remote tier's error kinds, in the order `to_dict()["remote"]["errors"]` lists them.
    #[classattr]
    #[pyo3(name = "REMOTE_ERROR_KINDS")]
    fn remote_error_kinds(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
        PyTuple::new(py, RemoteErrorKind::ALL_NAMES)
    }

    /// The tiers a hit is attributed to (`to_dict()["hits"]` keys).
    #[classattr]
    #[pyo3(name = "TIERS")]
    fn tiers(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
        PyTuple::new(py, ["cpu", "remote"])
    }

    fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    fn reset(&mut self) {
        self.inner.reset();
    }

    /// A copy of this snapshot; this one is reset.
    fn clone_and_reset(&mut self) -> Self {
        Self {
            inner: std::mem::take(&mut self.inner),
        }
    }

    fn __copy__(&self) -> Self {
        self.clone()
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> Self {
        self.clone()
    }

    /// Pickles as the fixed-length bytes form, so the pickle has the same size whatever the
    /// counts are.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> (Bound<'py, PyType>, (Bound<'py, PyBytes>,)) {
        (slf.get_type(), (slf.borrow().to_bytes(slf.py()),))
    }

    fn __repr__(&self) -> String {
        let s = &self.inner;
        let g = s.direction(Direction::GpuToCpu);
        let c = s.direction(Direction::CpuToGpu);
        format!(
            "OffloadingConnectorStats(GPU_to_CPU: {} ops {} bytes, CPU_to_GPU: {} ops {} bytes, \
             hits {}/{} blocks)",
            g.ops, g.bytes, c.ops, c.bytes, s.lookups.blocks_hit, s.lookups.blocks_queried
        )
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyStatsAccumulator>()?;
    m.add_class::<PyOffloadingConnectorStats>()?;
    m.add_class::<PyDirectionStats>()?;
    Ok(())
}
