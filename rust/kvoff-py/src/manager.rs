//! `OffloadingManager` and its value types (DESIGN §1). The work happens in
//! `kvoff_core::OffloadingManager`; this file converts arguments, releases the GIL around long
//! calls and converts results back.

mod keys;
mod values;

use std::sync::{Mutex, MutexGuard};

use kvoff_core::{BlockKeyRef, KvoffError, OffloadingManager};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::to_py;
use crate::stats::PyStatsAccumulator;
use keys::Hashes;
use values::{keys_to_py, PyLoadStoreSpec, PyOffloadingEvent, PyPrepareStoreOutput};

/// Calls naming at least this many hashes release the GIL while the core works; below it, the
/// release and re-acquire would cost more than the work.
const DETACH_MIN_HASHES: usize = 256;

/// The CPU-tier block manager. Thread-safe: calls from several threads are serialized by an
/// internal lock, taken only while the GIL is released for long calls.
#[pyclass(frozen, module = "kvoff._core", name = "OffloadingManager")]
pub(crate) struct PyOffloadingManager {
    inner: Mutex<OffloadingManager>,
}

fn poisoned() -> PyErr {
    PyRuntimeError::new_err("OffloadingManager is unusable: an earlier call panicked inside it")
}

impl PyOffloadingManager {
    fn lock(&self) -> PyResult<MutexGuard<'_, OffloadingManager>> {
        self.inner.lock().map_err(|_| poisoned())
    }

    /// Run `f` on the core manager with `keys`, without the GIL when the call is long.
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        keys: &[BlockKeyRef<'_>],
        f: impl FnOnce(&mut OffloadingManager, &[BlockKeyRef<'_>]) -> T + Send,
    ) -> PyResult<T> {
        let work = || {
            self.inner
                .lock()
                .map(|mut m| f(&mut m, keys))
                .map_err(|_| ())
        };
        let out = if keys.len() >= DETACH_MIN_HASHES {
            py.detach(work)
        } else {
            work()
        };
        out.map_err(|()| poisoned())
    }
}

#[pymethods]
impl PyOffloadingManager {
    #[new]
    #[pyo3(signature = (num_blocks, block_size = 16, policy = "lru", enable_events = false, stats = None))]
    fn new(
        num_blocks: i64,
        block_size: i64,
        policy: &str,
        enable_events: bool,
        stats: Option<PyRef<'_, PyStatsAccumulator>>,
    ) -> PyResult<Self> {
        let mut inner = to_py(OffloadingManager::new(
            num_blocks,
            block_size,
            policy,
            enable_events,
        ))?;
        if let Some(stats) = stats {
            inner.set_sink(Some(stats.sink()));
        }
        Ok(PyOffloadingManager {
            inner: Mutex::new(inner),
        })
    }

    /// Length of the longest run of present and ready blocks from the first hash.
    fn lookup(&self, py: Python<'_>, block_hashes: &Bound<'_, PyAny>) -> PyResult<usize> {
        let hashes = Hashes::extract(block_hashes)?;
        let keys = hashes.keys()?;
        self.run(py, &keys, OffloadingManager::lookup)
    }

    /// Pin the blocks for a load; they stay pinned until `complete_load`.
    fn prepare_load(
        &self,
        py: Python<'_>,
        block_hashes: &Bound<'_, PyAny>,
    ) -> PyResult<PyLoadStoreSpec> {
        let hashes = Hashes::extract(block_hashes)?;
        let keys = hashes.keys()?;
        let ids = to_py(self.run(py, &keys, OffloadingManager::prepare_load)?)?;
        Ok(PyLoadStoreSpec::cpu(py, &ids))
    }

    /// Recency update, last hash first, so a prefix's first block ends most recent.
    fn touch(&self, py: Python<'_>, block_hashes: &Bound<'_, PyAny>) -> PyResult<()> {
        let hashes = Hashes::extract(block_hashes)?;
        let keys = hashes.keys()?;
        to_py(self.run(py, &keys, OffloadingManager::touch)?)
    }

    /// Unpin blocks pinned by `prepare_load`.
    fn complete_load(&self, py: Python<'_>, block_hashes: &Bound<'_, PyAny>) -> PyResult<()> {
        let hashes = Hashes::extract(block_hashes)?;
        let keys = hashes.keys()?;
        to_py(self.run(py, &keys, OffloadingManager::complete_load)?)
    }

    /// Allocate blocks for the hashes not yet present, evicting as needed; `None`, with
    /// nothing evicted, when there is not enough room.
    fn prepare_store(
        &self,
        py: Python<'_>,
        block_hashes: &Bound<'_, PyAny>,
    ) -> PyResult<Option<PyPrepareStoreOutput>> {
        let hashes = Hashes::extract(block_hashes)?;
        let keys = hashes.keys()?;
        let Some(plan) = to_py(self.run(py, &keys, OffloadingManager::prepare_store)?)? else {
            return Ok(None);
        };
        let to_store = hashes.select(py, &plan.to_store)?.unbind();
        let spec = Py::new(py, PyLoadStoreSpec::cpu(py, &plan.block_ids))?;
        let evicted = keys_to_py(py, &plan.evicted)?.into_any().unbind();
        Ok(Some(PyPrepareStoreOutput::new(to_store, spec, evicted)))
    }

    /// Finish stores: on success the blocks become loadable; on failure the blocks not yet
    /// ready are freed (ready ones are left alone).
    #[pyo3(signature = (block_hashes, success = true))]
    fn complete_store(
        &self,
        py: Python<'_>,
        block_hashes: &Bound<'_, PyAny>,
        success: bool,
    ) -> PyResult<()> {
        let hashes = Hashes::extract(block_hashes)?;
        let keys = hashes.keys()?;
        to_py(self.run(py, &keys, |m, k| m.complete_store(k, success))?)
    }

    /// Events since the last call (empty unless `enable_events=True`).
    fn take_events(&self, py: Python<'_>) -> PyResult<Vec<PyOffloadingEvent>> {
        let events = self.lock()?.take_events();
        events
            .iter()
            .map(|e| {
                let hashes = keys_to_py(py, &e.block_hashes)?.into_any().unbind();
                Ok(PyOffloadingEvent::new(
                    hashes,
                    e.block_size,
                    "CPU".to_owned(),
                    e.removed,
                ))
            })
            .collect()
    }

    /// -1 while the block's store is in flight, 0 when evictable, n > 0 with n loads in flight.
    fn block_state(&self, block_hash: &Bound<'_, PyAny>) -> PyResult<i32> {
        self.one(block_hash, OffloadingManager::block_state)
    }

    /// The CPU block id holding `block_hash`.
    fn block_id(&self, block_hash: &Bound<'_, PyAny>) -> PyResult<u32> {
        self.one(block_hash, OffloadingManager::block_id)
    }

    fn __contains__(&self, block_hash: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = keys::object_key(block_hash, 0)?;
        Ok(self.lock()?.block_id(key).is_some())
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.lock()?.resident() as usize)
    }

    /// The eviction policy's lists, least recent first: `{"lru": [...]}` or
    /// `{"t1": [...], "t2": [...], "b1": [...], "b2": [...], "target": p}`.
    fn policy_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (lists, state) = self.lock()?.policy_state();
        let d = PyDict::new(py);
        for (name, keys) in lists.iter().chain(&state.ghosts) {
            d.set_item(name, keys_to_py(py, keys)?)?;
        }
        if let Some(p) = state.target {
            d.set_item("target", p)?;
        }
        Ok(d)
    }

    #[getter]
    fn capacity(&self) -> PyResult<u64> {
        Ok(self.lock()?.capacity())
    }

    #[getter]
    fn free(&self) -> PyResult<u64> {
        Ok(self.lock()?.free())
    }

    #[getter]
    fn resident(&self) -> PyResult<u64> {
        Ok(self.lock()?.resident())
    }

    #[getter]
    fn pinned(&self) -> PyResult<u64> {
        Ok(self.lock()?.pinned())
    }

    #[getter]
    fn block_size(&self) -> PyResult<u64> {
        Ok(self.lock()?.block_size())
    }

    #[getter]
    fn policy(&self) -> PyResult<&'static str> {
        Ok(self.lock()?.policy().as_str())
    }

    #[getter]
    fn blocks_queried(&self) -> PyResult<u64> {
        Ok(self.lock()?.counters().blocks_queried)
    }

    #[getter]
    fn blocks_hit(&self) -> PyResult<u64> {
        Ok(self.lock()?.counters().blocks_hit)
    }

    #[getter]
    fn blocks_stored(&self) -> PyResult<u64> {
        Ok(self.lock()?.counters().blocks_stored)
    }

    #[getter]
    fn blocks_evicted(&self) -> PyResult<u64> {
        Ok(self.lock()?.counters().blocks_evicted)
    }

    #[getter]
    fn allocation_failures(&self) -> PyResult<u64> {
        Ok(self.lock()?.counters().allocation_failures)
    }

    fn __repr__(&self) -> PyResult<String> {
        let m = self.lock()?;
        Ok(format!(
            "OffloadingManager(num_blocks={}, block_size={}, policy='{}', resident={}, pinned={})",
            m.capacity(),
            m.block_size(),
            m.policy().as_str(),
            m.resident(),
            m.pinned()
        ))
    }
}

impl PyOffloadingManager {
    /// Look up a single hash; absent hashes are an `UnknownHashError`.
    fn one<T>(
        &self,
        block_hash: &Bound<'_, PyAny>,
        f: impl FnOnce(&OffloadingManager, BlockKeyRef<'_>) -> Option<T>,
    ) -> PyResult<T> {
        let key = keys::object_key(block_hash, 0)?;
        let found = f(&*self.lock()?, key);
        to_py(found.ok_or_else(|| KvoffError::UnknownHash(key.to_string())))
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyOffloadingManager>()?;
    m.add_class::<PyLoadStoreSpec>()?;
    m.add_class::<PyPrepareStoreOutput>()?;
    m.add_class::<PyOffloadingEvent>()?;
    Ok(())
}
