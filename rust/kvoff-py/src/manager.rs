//! `OffloadingManager` and its value types (DESIGN §1). The work happens in
//! `kvoff_core::OffloadingManager`; this file converts arguments, releases the GIL around long
//! calls and converts results back.

mod keys;
mod values;

use std::sync::{Mutex, MutexGuard, TryLockError};

use kvoff_core::{BlockKeyRef, KvoffError, OffloadingManager};
use pyo3::exceptions::{PyMemoryError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyDict, PyList};

use crate::errors::{invalid_argument_error, new_err, to_py};
use crate::stats::PyStatsAccumulator;
use keys::Hashes;
use values::{key_to_py, keys_to_py, PyLoadStoreSpec, PyOffloadingEvent, PyPrepareStoreOutput};

/// Calls naming at least this many hashes release the GIL while the core works. Releasing it
/// is cheap, but a call that releases it must first copy the caller's list (another thread
/// could change the list meanwhile), and that copy costs about as much per hash as a whole
/// lookup at 10^4 resident blocks. So the cheap calls (lookup, touch, loads, `complete_store`:
/// 10 to 100 ns per hash) keep the GIL below 2048 hashes, at most about 200 µs of work, a
/// small fraction of Python's 5 ms switch interval; `prepare_store` (100 to 400 ns per hash,
/// for which the copy is noise) releases it from 256.
const DETACH_MIN_HASHES: usize = 2048;
const DETACH_MIN_HASHES_STORE: usize = 256;

/// The CPU-tier block manager. Thread-safe: calls from several threads are serialized by an
/// internal lock, which a waiting thread waits for without holding the GIL.
#[pyclass(frozen, module = "kvoff._core", name = "OffloadingManager")]
pub(crate) struct PyOffloadingManager {
    inner: Mutex<Inner>,
}

struct Inner {
    core: OffloadingManager,
    /// Per block id: the caller's hash object, when it came as one, so that evictions hand
    /// back the caller's own objects instead of building new ones.
    objects: Vec<Option<Py<PyAny>>>,
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

fn poisoned() -> PyErr {
    PyRuntimeError::new_err("OffloadingManager is unusable: an earlier call panicked inside it")
}

/// Run `f` on the core manager with `keys`, without the GIL when the call is long (and the
/// keys do not borrow the caller's own list). The caller holds the lock throughout, so the
/// per-block objects stay in step with the core.
fn run<T: Send>(
    py: Python<'_>,
    hashes: &Hashes<'_>,
    core: &mut OffloadingManager,
    keys: &[BlockKeyRef<'_>],
    detach_min: usize,
    f: impl FnOnce(&mut OffloadingManager, &[BlockKeyRef<'_>]) -> T + Send,
) -> T {
    if keys.len() >= detach_min && hashes.may_detach() {
        py.detach(|| f(core, keys))
    } else {
        f(core, keys)
    }
}

impl PyOffloadingManager {
    /// The lock, waited for with the GIL released: a thread holding it may be waiting for the
    /// GIL to come back from a long call.
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, Inner>> {
        self.inner.lock_py_attached(py).map_err(|_| poisoned())
    }

    /// Convert `arg` to keys, take the lock and run `f`. Short calls on an exact list of exact
    /// hashes read the caller's list in place, provided the lock is free at once (waiting for
    /// it releases the GIL, which would let another thread change the list under the keys);
    /// everything else takes a private copy first. `f` must not release the GIL on
    /// `Hashes::Shared` (`run` sees to that) nor run Python code while it holds the keys.
    fn with_keys<R>(
        &self,
        py: Python<'_>,
        arg: &Bound<'_, PyAny>,
        detach_min: usize,
        f: impl FnOnce(&mut Inner, &Hashes<'_>, &[BlockKeyRef<'_>]) -> PyResult<R>,
    ) -> PyResult<R> {
        // SAFETY: the keys are dropped before this block ends; until then the GIL is held
        // (try_lock never releases it, and `run` keeps it for shared hashes) and no Python
        // code runs (`f`'s contract).
        if let Some(keys) = unsafe { keys::shared_keys(arg, detach_min) } {
            match self.inner.try_lock() {
                Ok(mut guard) => {
                    let shared = Hashes::Shared(arg.cast::<PyList>()?.clone());
                    return f(&mut guard, &shared, &keys);
                }
                Err(TryLockError::Poisoned(_)) => return Err(poisoned()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let hashes = Hashes::extract(arg)?;
        let keys = hashes.keys()?;
        let mut guard = self.lock(py)?;
        f(&mut guard, &hashes, &keys)
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
        let mut core = to_py(OffloadingManager::new(
            num_blocks,
            block_size,
            policy,
            enable_events,
        ))?;
        if let Some(stats) = stats {
            core.set_sink(Some(stats.sink()));
        }
        let n = core.capacity() as usize;
        let mut objects = Vec::new();
        objects.try_reserve_exact(n).map_err(|_| {
            PyMemoryError::new_err(format!(
                "OffloadingManager(num_blocks={n}): the system refused {} bytes for the \
                 per-block hash objects",
                n * std::mem::size_of::<Option<Py<PyAny>>>()
            ))
        })?;
        objects.resize_with(n, || None);
        Ok(PyOffloadingManager {
            inner: Mutex::new(Inner { core, objects }),
        })
    }

    /// Length of the longest run of present and ready blocks from the first hash.
    fn lookup(&self, py: Python<'_>, block_hashes: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.with_keys(
            py,
            block_hashes,
            DETACH_MIN_HASHES,
            |inner, hashes, keys| {
                Ok(run(
                    py,
                    hashes,
                    &mut inner.core,
                    keys,
                    DETACH_MIN_HASHES,
                    OffloadingManager::lookup,
                ))
            },
        )
    }

    /// Pin the blocks for a load; they stay pinned until `complete_load`.
    fn prepare_load(
        &self,
        py: Python<'_>,
        block_hashes: &Bound<'_, PyAny>,
    ) -> PyResult<PyLoadStoreSpec> {
        let ids = self.with_keys(
            py,
            block_hashes,
            DETACH_MIN_HASHES,
            |inner, hashes, keys| {
                to_py(run(
                    py,
                    hashes,
                    &mut inner.core,
                    keys,
                    DETACH_MIN_HASHES,
                    OffloadingManager::prepare_load,
                ))
            },
        )?;
        Ok(PyLoadStoreSpec::cpu(py, &ids))
    }

    /// Recency update, last hash first, so a prefix's first block ends most recent.
    fn touch(&self, py: Python<'_>, block_hashes: &Bound<'_, PyAny>) -> PyResult<()> {
        self.with_keys(
            py,
            block_hashes,
            DETACH_MIN_HASHES,
            |inner, hashes, keys| {
                to_py(run(
                    py,
                    hashes,
                    &mut inner.core,
                    keys,
                    DETACH_MIN_HASHES,
                    OffloadingManager::touch,
                ))
            },
        )
    }

    /// Unpin blocks pinned by `prepare_load`.
    fn complete_load(&self, py: Python<'_>, block_hashes: &Bound<'_, PyAny>) -> PyResult<()> {
        self.with_keys(
            py,
            block_hashes,
            DETACH_MIN_HASHES,
            |inner, hashes, keys| {
                to_py(run(
                    py,
                    hashes,
                    &mut inner.core,
                    keys,
                    DETACH_MIN_HASHES,
                    OffloadingManager::complete_load,
                ))
            },
        )
    }

    /// Allocate blocks for the hashes not yet present, evicting as needed; `None`, with
    /// nothing evicted, when there is not enough room.
    fn prepare_store(
        &self,
        py: Python<'_>,
        block_hashes: &Bound<'_, PyAny>,
    ) -> PyResult<Option<PyPrepareStoreOutput>> {
        let done = self.with_keys(
            py,
            block_hashes,
            DETACH_MIN_HASHES_STORE,
            |inner, hashes, keys| {
                let plan = to_py(run(
                    py,
                    hashes,
                    &mut inner.core,
                    keys,
                    DETACH_MIN_HASHES_STORE,
                    OffloadingManager::prepare_store,
                ))?;
                let Some(plan) = plan else {
                    return Ok(None);
                };
                // Take the victims' objects before the new blocks (which may reuse their ids)
                // store theirs.
                let evicted = plan
                    .evicted_ids
                    .iter()
                    .zip(plan.evicted.iter())
                    .map(|(&id, key)| match inner.objects[id as usize].take() {
                        Some(object) => Ok(object.into_bound(py)),
                        None => key_to_py(py, key),
                    })
                    .collect::<PyResult<Vec<_>>>()?;
                let stale: Vec<Option<Py<PyAny>>> = plan
                    .to_store
                    .iter()
                    .zip(&plan.block_ids)
                    .map(|(&i, &id)| {
                        std::mem::replace(&mut inner.objects[id as usize], hashes.object(i))
                    })
                    .collect();
                let to_store = hashes.select(py, &plan.to_store)?.unbind();
                Ok(Some((plan.block_ids, to_store, evicted, stale)))
            },
        )?;
        let Some((block_ids, to_store, evicted, stale)) = done else {
            return Ok(None);
        };
        // Objects left by blocks whose store failed are dropped after the lock is released: a
        // decref may run a hash object's `__del__`, which could call back into this manager.
        drop(stale);
        let spec = Py::new(py, PyLoadStoreSpec::cpu(py, &block_ids))?;
        let evicted = PyList::new(py, evicted)?.into_any().unbind();
        Ok(Some(PyPrepareStoreOutput::new(to_store, spec, evicted)))
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
        self.with_keys(
            py,
            block_hashes,
            DETACH_MIN_HASHES,
            |inner, hashes, keys| {
                to_py(run(
                    py,
                    hashes,
                    &mut inner.core,
                    keys,
                    DETACH_MIN_HASHES,
                    |m, k| m.complete_store(k, success),
                ))
            },
        )
    }

    /// Events since the last call (empty unless `enable_events=True`).
    fn take_events(&self, py: Python<'_>) -> PyResult<Vec<PyOffloadingEvent>> {
        let events = self.lock(py)?.core.take_events();
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
        Ok(self.lock(py)?.core.block_id(key).is_some())
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.lock(py)?.core.resident() as usize)
    }

    /// The eviction policy's lists, least recent first: `{"lru": [...]}` or
    /// `{"t1": [...], "t2": [...], "b1": [...], "b2": [...], "target": p}`.
    fn policy_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (lists, state) = self.lock(py)?.core.policy_state();
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
        Ok(self.lock(py)?.core.capacity())
    }

    #[getter]
    fn free(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.core.free())
    }

    #[getter]
    fn resident(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.core.resident())
    }

    #[getter]
    fn pinned(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.core.pinned())
    }

    #[getter]
    fn block_size(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.core.block_size())
    }

    #[getter]
    fn policy(&self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(self.lock(py)?.core.policy().as_str())
    }

    #[getter]
    fn blocks_queried(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.core.counters().blocks_queried)
    }

    #[getter]
    fn blocks_hit(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.core.counters().blocks_hit)
    }

    #[getter]
    fn blocks_stored(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.core.counters().blocks_stored)
    }

    #[getter]
    fn blocks_evicted(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.core.counters().blocks_evicted)
    }

    #[getter]
    fn allocation_failures(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.core.counters().allocation_failures)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let guard = self.lock(py)?;
        let m = &guard.core;
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
        py: Python<'_>,
        block_hash: &Bound<'_, PyAny>,
        f: impl FnOnce(&OffloadingManager, BlockKeyRef<'_>) -> Option<T>,
    ) -> PyResult<T> {
        let key = keys::object_key(block_hash, 0)?;
        let found = f(&self.lock(py)?.core, key);
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
