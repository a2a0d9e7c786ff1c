//! `OffloadingManager` and its value types. The work happens in `kvoff_core::OffloadingManager`;
//! this file converts arguments, releases the GIL around long calls and converts results back.

mod keys;
mod values;

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::{Mutex, MutexGuard};

use kvoff_core::manager::MAX_BLOCKS;
use kvoff_core::{BlockKeyRef, KvoffError, OffloadingManager, PolicyKind};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyDict, PyList};

use crate::errors::{invalid_argument_error, new_err, to_py};
use crate::stats::PyStatsAccumulator;
use crate::stats_args::count;
use keys::Hashes;
use values::{key_to_py, keys_to_py, PyLoadStoreSpec, PyOffloadingEvent, PyPrepareStoreOutput};

/// Calls naming at least this many hashes release the GIL while the core works. The keys are
/// the call's own by then, so releasing costs only the hand-over of the GIL (a fraction of a
/// microsecond when no other thread wants it, up to a switch interval when one does): worth it
/// for calls of tens of microseconds and more, not for the short ones (10 to 400 ns a hash).
const DETACH_MIN_HASHES: usize = 1024;

/// The CPU-tier block manager. Thread-safe: calls from several threads are serialized by an
/// internal lock, which a waiting thread waits for without holding the GIL.
#[pyclass(frozen, module = "kvoff._core", name = "OffloadingManager")]
pub(crate) struct PyOffloadingManager {
    core: Mutex<OffloadingManager>,
}

/// `complete_store`'s `success`: a `bool` (or `numpy.bool_`). Anything else is refused, an
/// int above all: `success=0` reads like a status code, whose meaning is the opposite.
struct Success(bool);

impl<'a, 'py> FromPyObject<'a, 'py> for Success {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        obj.extract::<bool>().map(Success).map_err(|_| {
            let py = obj.py();
            new_err(
                py,
                invalid_argument_error(py),
                format!(
                    "complete_store's success must be a bool, got {}: {}",
                    keys::type_name(&obj),
                    keys::repr(&obj)
                ),
            )
        })
    }
}

/// The constructor's arguments as the core takes them, checked in the order given.
fn construction_args(
    num_blocks: i64,
    block_size: i64,
    policy: &str,
) -> kvoff_core::Result<(NonZeroU32, NonZeroU64, PolicyKind)> {
    let capacity = u32::try_from(num_blocks)
        .ok()
        .filter(|&n| n <= MAX_BLOCKS)
        .and_then(NonZeroU32::new)
        .ok_or_else(|| {
            KvoffError::InvalidArgument(format!(
                "num_blocks must be between 1 and {MAX_BLOCKS}, got {num_blocks}"
            ))
        })?;
    let block_size = u64::try_from(block_size)
        .ok()
        .and_then(NonZeroU64::new)
        .ok_or_else(|| {
            KvoffError::InvalidArgument(format!("block_size must be positive, got {block_size}"))
        })?;
    let policy = match policy {
        "lru" => PolicyKind::Lru,
        "arc" => PolicyKind::Arc,
        other => {
            return Err(KvoffError::InvalidArgument(format!(
                "unknown eviction policy {other:?}: expected \"lru\" or \"arc\""
            )))
        }
    };
    Ok((capacity, block_size, policy))
}

fn poisoned() -> PyErr {
    PyRuntimeError::new_err("OffloadingManager is unusable: an earlier call panicked inside it")
}

impl PyOffloadingManager {
    /// The lock, waited for with the GIL released: a thread holding it may be waiting for the
    /// GIL to come back from a long call.
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, OffloadingManager>> {
        self.core.lock_py_attached(py).map_err(|_| poisoned())
    }

    /// Every call that names hashes: convert them, take the lock, and run `f` on the core,
    /// without the GIL from `DETACH_MIN_HASHES` hashes on. The converted hashes come back too,
    /// for results given in the caller's form.
    fn call<'py, T: Send>(
        &self,
        py: Python<'py>,
        block_hashes: &Bound<'py, PyAny>,
        f: impl FnOnce(&mut OffloadingManager, &[BlockKeyRef<'_>]) -> kvoff_core::Result<T> + Send,
    ) -> PyResult<(T, Hashes<'py>)> {
        let hashes = Hashes::extract(block_hashes)?;
        let keys = hashes.keys()?;
        let mut core = self.lock(py)?;
        let core = &mut *core;
        let out = if keys.len() >= DETACH_MIN_HASHES {
            py.detach(|| f(core, &keys))
        } else {
            f(core, &keys)
        };
        drop(keys);
        Ok((to_py(out)?, hashes))
    }
}

#[pymethods]
impl PyOffloadingManager {
    #[new]
    #[pyo3(signature = (num_blocks, block_size = 16, policy = "lru", enable_events = false, stats = None, usable_blocks = None))]
    fn new(
        num_blocks: i64,
        block_size: i64,
        policy: &str,
        enable_events: bool,
        stats: Option<PyRef<'_, PyStatsAccumulator>>,
        usable_blocks: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let usable = usable_blocks
            .map(|obj| count("usable_blocks", obj))
            .transpose()?;
        let mut core = to_py(construction_args(num_blocks, block_size, policy).and_then(
            |(capacity, block_size, policy)| {
                let core = OffloadingManager::new(capacity, block_size, policy, enable_events)?;
                match usable {
                    // Beyond u32 is beyond any capacity: the core says so in its words.
                    Some(n) => core.with_usable(u32::try_from(n).unwrap_or(u32::MAX)),
                    None => Ok(core),
                }
            },
        ))?;
        if let Some(stats) = stats {
            core.set_sink(Some(stats.sink()));
        }
        Ok(PyOffloadingManager {
            core: Mutex::new(core),
        })
    }

    /// Length of the longest run of present and ready blocks from the first hash.
    fn lookup(&self, py: Python<'_>, block_hashes: &Bound<'_, PyAny>) -> PyResult<usize> {
        Ok(self.call(py, block_hashes, |m, k| Ok(m.lookup(k)))?.0)
    }

    /// Pin the blocks for a load; they stay pinned until `complete_load`.
    fn prepare_load(
        &self,
        py: Python<'_>,
        block_hashes: &Bound<'_, PyAny>,
    ) -> PyResult<PyLoadStoreSpec> {
        let (ids, _) = self.call(py, block_hashes, OffloadingManager::prepare_load)?;
        Ok(PyLoadStoreSpec::cpu(py, &ids))
    }

    /// Recency update, last hash first, so a prefix's first block ends most recent.
    fn touch(&self, py: Python<'_>, block_hashes: &Bound<'_, PyAny>) -> PyResult<()> {
        self.call(py, block_hashes, OffloadingManager::touch)?;
        Ok(())
    }

    /// Unpin blocks pinned by `prepare_load`.
    fn complete_load(&self, py: Python<'_>, block_hashes: &Bound<'_, PyAny>) -> PyResult<()> {
        self.call(py, block_hashes, OffloadingManager::complete_load)?;
        Ok(())
    }

    /// Allocate blocks for the hashes not yet present, evicting as needed; `None`, with
    /// nothing evicted, when there is not enough room.
    fn prepare_store(
        &self,
        py: Python<'_>,
        block_hashes: &Bound<'_, PyAny>,
    ) -> PyResult<Option<PyPrepareStoreOutput>> {
        let (plan, hashes) = self.call(py, block_hashes, OffloadingManager::prepare_store)?;
        let Some(plan) = plan else {
            return Ok(None);
        };
        let to_store = hashes.select(py, &plan.to_store)?.unbind();
        let spec = Py::new(py, PyLoadStoreSpec::cpu(py, &plan.block_ids))?;
        let evicted = PyList::new(
            py,
            plan.evicted
                .iter()
                .map(|key| key_to_py(py, key))
                .collect::<PyResult<Vec<_>>>()?,
        )?;
        Ok(Some(PyPrepareStoreOutput::new(
            to_store,
            spec,
            evicted.into_any().unbind(),
        )))
    }

    /// Finish stores: on success the blocks become loadable; on failure the blocks not yet
    /// ready are freed (ready ones are left alone).
    #[pyo3(signature = (block_hashes, success = Success(true)))]
    #[pyo3(text_signature = "($self, block_hashes, success=True)")]
    fn complete_store(
        &self,
        py: Python<'_>,
        block_hashes: &Bound<'_, PyAny>,
        success: Success,
    ) -> PyResult<()> {
        let Success(success) = success;
        self.call(py, block_hashes, |m, k| m.complete_store(k, success))?;
        Ok(())
    }

    /// Raise the usable limit: block ids `0..usable_blocks` may be handed out from now on.
    fn set_usable_blocks(&self, py: Python<'_>, usable_blocks: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = count("usable_blocks", usable_blocks)?;
        to_py(self.lock(py)?.set_usable(n))
    }

    /// Events since the last call (empty unless `enable_events=True`).
    fn take_events(&self, py: Python<'_>) -> PyResult<Vec<PyOffloadingEvent>> {
        let events = self.lock(py)?.take_events();
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
    fn block_state(&self, py: Python<'_>, block_hash: &Bound<'_, PyAny>) -> PyResult<i32> {
        self.one(py, block_hash, OffloadingManager::block_state)
    }

    /// The CPU block id holding `block_hash`.
    fn block_id(&self, py: Python<'_>, block_hash: &Bound<'_, PyAny>) -> PyResult<u32> {
        self.one(py, block_hash, OffloadingManager::block_id)
    }

    fn __contains__(&self, py: Python<'_>, block_hash: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = keys::object_key(block_hash, 0)?;
        Ok(self.lock(py)?.block_id(key).is_some())
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.lock(py)?.resident() as usize)
    }

    /// The eviction policy's lists, least recent first: `{"lru": [...]}` or
    /// `{"t1": [...], "t2": [...], "b1": [...], "b2": [...], "target": p}`.
    fn policy_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (lists, state) = self.lock(py)?.policy_state();
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
    fn capacity(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.capacity())
    }

    #[getter]
    fn usable_blocks(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.usable())
    }

    #[getter]
    fn free(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.free())
    }

    #[getter]
    fn resident(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.resident())
    }

    #[getter]
    fn pinned(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.pinned())
    }

    #[getter]
    fn block_size(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.block_size())
    }

    #[getter]
    fn policy(&self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(self.lock(py)?.policy().as_str())
    }

    #[getter]
    fn blocks_queried(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.counters().blocks_queried)
    }

    #[getter]
    fn blocks_hit(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.counters().blocks_hit)
    }

    #[getter]
    fn blocks_stored(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.counters().blocks_stored)
    }

    #[getter]
    fn blocks_evicted(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.counters().blocks_evicted)
    }

    #[getter]
    fn allocation_failures(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.counters().allocation_failures)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let guard = self.lock(py)?;
        let m = &*guard;
        let usable = if m.usable() == m.capacity() {
            String::new()
        } else {
            format!(", usable_blocks={}", m.usable())
        };
        Ok(format!(
            "OffloadingManager(num_blocks={}{usable}, block_size={}, policy='{}', resident={}, \
             pinned={})",
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
        py: Python<'_>,
        block_hash: &Bound<'_, PyAny>,
        f: impl FnOnce(&OffloadingManager, BlockKeyRef<'_>) -> Option<T>,
    ) -> PyResult<T> {
        let key = keys::object_key(block_hash, 0)?;
        let found = f(&*self.lock(py)?, key);
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
