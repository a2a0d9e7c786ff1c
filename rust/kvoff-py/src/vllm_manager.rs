//! `VllmOffloadingManager`: vLLM 0.33's `OffloadingManager` contract, one Rust call per vLLM
//! call, over `kvoff_core::vllm_tier::VllmTier`. The extension never imports vLLM: the value
//! classes it returns (`LookupResult` members, `CPULoadStoreSpec`, `PrepareStoreOutput`,
//! `OffloadingEvent`, `Medium.CPU`) are handed in by `kvoff.vllm.manager` at construction.
//! A request's record lives in a `VllmRequestState` kept in the request's `ReqContext`, so it
//! goes when the request does, as vLLM's own record does.

use std::collections::VecDeque;

use kvoff_core::vllm_tier::{Key, Lookup, RequestAccess, TierEvent, VllmPolicy, VllmTier};
use kvoff_core::KvoffError;
use numpy::PyArray1;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyList, PyTuple};

use crate::errors::{hash_type_error, new_err, to_py, CoreError};

/// One request's record, stored in its `ReqContext` (`set_state`, keyed by this type).
#[pyclass(module = "kvoff._core", name = "VllmRequestState")]
#[derive(Default)]
pub(crate) struct PyRequestState {
    inner: RequestAccess,
}

#[pyclass(module = "kvoff._core", name = "VllmOffloadingManager")]
pub(crate) struct PyVllmManager {
    tier: VllmTier,
    lookup_results: [Py<PyAny>; 3],
    load_store_spec: Py<PyAny>,
    prepare_store_output: Py<PyAny>,
    offloading_event: Py<PyAny>,
    medium: Py<PyAny>,
    /// The key lists of the "stored" and eviction events the tier holds, oldest first: a stored
    /// event's keys are the objects `complete_store` was given, and an eviction's list is the
    /// `evicted_keys` list `prepare_store` returned, as vLLM's own manager shares them. The
    /// tier never drops or filters these two kinds, so the two queues stay aligned; only a
    /// failed store's removal (`metadata_only`) is built from the tier's keys.
    event_keys: VecDeque<Py<PyList>>,
    /// By chunk id, the caller's key object stored there: evicted keys go back as those
    /// objects, as vLLM's manager returns the keys it holds, not as new `bytes`. An id's
    /// entry is replaced when the id is handed out again; a reset drops them all.
    stored_objects: Vec<Option<Py<PyBytes>>>,
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

fn hash_type_err(py: Python<'_>, msg: String) -> PyErr {
    new_err(py, hash_type_error(py), msg)
}

/// One key as the caller's `bytes` object; anything else is a `HashTypeError`.
fn key_object<'py>(key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    key.cast::<PyBytes>().cloned().map_err(|_| {
        hash_type_err(
            key.py(),
            format!("an OffloadKey must be bytes, got {}", type_name(key)),
        )
    })
}

/// The keys of a call as the caller's `bytes` objects; anything else is refused.
fn key_objects<'py>(keys: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let py = keys.py();
    let items = keys.try_iter().map_err(|_| {
        hash_type_err(
            py,
            format!(
                "keys must be an iterable of OffloadKey bytes, got {}",
                type_name(keys)
            ),
        )
    })?;
    let mut objs = Vec::new();
    for item in items {
        objs.push(key_object(&item?)?);
    }
    Ok(objs)
}

/// `success` as vLLM passes it: a bool.
fn success_flag(success: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
    let Some(flag) = success else {
        return Ok(true);
    };
    flag.cast::<PyBool>()
        .map(PyBoolMethods::is_true)
        .map_err(|_| {
            PyErr::from(CoreError(KvoffError::InvalidArgument(format!(
                "success must be a bool, got {}",
                type_name(flag)
            ))))
        })
}

/// The keys of a call as the tier's keys (each hashed once here), and the caller's objects.
fn keys_of<'py>(keys: &Bound<'py, PyAny>) -> PyResult<(Vec<Key>, Vec<Bound<'py, PyBytes>>)> {
    let objs = key_objects(keys)?;
    let owned = objs.iter().map(|b| Key::from(b.as_bytes())).collect();
    Ok((owned, objs))
}

fn key_list<'py>(py: Python<'py>, keys: &[Key]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, keys.iter().map(|k| PyBytes::new(py, k)))
}

/// `ctx.get_state(VllmRequestState)`; a `ctx` without vLLM's `ReqContext` methods is refused.
fn stored_state<'py>(ctx: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = ctx.py();
    let cls = py.get_type::<PyRequestState>();
    let Ok(get_state) = ctx.getattr(intern!(py, "get_state")) else {
        return to_py(Err(KvoffError::InvalidArgument(format!(
            "ctx must be vLLM's ReqContext (with get_state / set_state), got {}",
            type_name(ctx)
        ))));
    };
    get_state.call1((cls,))
}

/// The request's record in `ctx`, made and stored there on first use.
fn state_of<'py>(ctx: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyRequestState>> {
    let py = ctx.py();
    if let Ok(s) = stored_state(ctx)?.cast_into::<PyRequestState>() {
        return Ok(s);
    }
    let s = Bound::new(py, PyRequestState::default())?;
    ctx.call_method1(intern!(py, "set_state"), (&s,))?;
    Ok(s)
}

/// Reads a key's position from `ctx`, by the key's index, through
/// `ctx.get_offload_key_position(key)` (bound once per call, on first use).
fn position_reader<'a, 'py>(
    ctx: &'a Bound<'py, PyAny>,
    objs: &'a [Bound<'py, PyBytes>],
) -> impl FnMut(usize) -> Option<i64> + 'a {
    let mut method: Option<Option<Bound<'py, PyAny>>> = None;
    move |i| {
        let m = method.get_or_insert_with(|| {
            ctx.getattr(intern!(ctx.py(), "get_offload_key_position"))
                .ok()
        });
        m.as_ref()?
            .call1((&objs[i],))
            .ok()?
            .extract::<Option<i64>>()
            .ok()
            .flatten()
    }
}

impl PyVllmManager {
    /// vLLM's `CPULoadStoreSpec` over `ids`. Its constructor only converts the ids it is given
    /// into a new int32 array (`np.array(ids, dtype=np.int32)`, vLLM 0.33's
    /// `BlockIDsLoadStoreSpec.__init__`); the binding's array already is one, so the spec is
    /// made with `__new__` and given that array as its public `block_ids`, without the copy.
    /// `tests/vllm/test_vllm_manager_contract.py` checks the result against the constructor's.
    fn spec<'py>(&self, py: Python<'py>, ids: &[u32]) -> PyResult<Bound<'py, PyAny>> {
        // Chunk ids are below the tier's size, itself a u32 that vLLM's int32 spec must hold.
        #[allow(clippy::cast_possible_wrap)]
        let ids = PyArray1::<i32>::from_iter(py, ids.iter().map(|&i| i as i32));
        let cls = self.load_store_spec.bind(py);
        let spec = cls.call_method1(intern!(py, "__new__"), (cls,))?;
        spec.setattr(intern!(py, "block_ids"), ids)?;
        Ok(spec)
    }

    /// vLLM's `OffloadingEvent` for `e`; `keys`: the caller's objects, when the binding has them.
    fn event<'py>(
        &self,
        py: Python<'py>,
        e: &TierEvent,
        keys: Option<Py<PyList>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let keys = match keys {
            Some(k) => k.into_bound(py),
            None => key_list(py, &e.keys)?,
        };
        let args = (keys, self.medium.bind(py), e.removed);
        let kw = if e.metadata_only {
            let kw = PyDict::new(py);
            kw.set_item(intern!(py, "metadata_only"), true)?;
            Some(kw)
        } else {
            None
        };
        self.offloading_event.bind(py).call(args, kw.as_ref())
    }
}

#[pymethods]
impl PyVllmManager {
    #[new]
    #[pyo3(signature = (num_chunks, policy, enable_events, store_threshold, max_tracker_size,
                        lookup_results, load_store_spec, prepare_store_output, offloading_event,
                        medium))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        num_chunks: i64,
        policy: &str,
        enable_events: bool,
        store_threshold: i64,
        max_tracker_size: i64,
        lookup_results: (Py<PyAny>, Py<PyAny>, Py<PyAny>),
        load_store_spec: Py<PyAny>,
        prepare_store_output: Py<PyAny>,
        offloading_event: Py<PyAny>,
        medium: Py<PyAny>,
    ) -> PyResult<Self> {
        let bad = |m: String| to_py::<Self>(Err(KvoffError::InvalidArgument(m)));
        let Ok(n) = u32::try_from(num_chunks) else {
            return bad(format!(
                "num_chunks must be between 0 and {}, got {num_chunks}",
                u32::MAX
            ));
        };
        let policy = match policy {
            "lru" => VllmPolicy::Lru,
            "arc" => VllmPolicy::Arc,
            other => return bad(format!("policy must be 'lru' or 'arc', got {other:?}")),
        };
        let Ok(threshold) = u32::try_from(store_threshold) else {
            return bad(format!(
                "store_threshold must be >= 0, got {store_threshold}"
            ));
        };
        let tracker = match usize::try_from(max_tracker_size) {
            Ok(t) if t > 0 || threshold < 2 => t,
            _ => {
                return bad(format!(
                    "max_tracker_size must be positive, got {max_tracker_size}"
                ))
            }
        };
        Ok(PyVllmManager {
            tier: VllmTier::new(n, policy, enable_events, threshold, tracker),
            lookup_results: [lookup_results.0, lookup_results.1, lookup_results.2],
            load_store_spec,
            prepare_store_output,
            offloading_event,
            medium,
            event_keys: VecDeque::new(),
            stored_objects: Vec::new(),
        })
    }

    #[getter]
    fn num_chunks(&self) -> u32 {
        self.tier.num_chunks()
    }

    #[getter]
    fn store_threshold(&self) -> u32 {
        self.tier.store_threshold()
    }

    #[getter]
    fn arc_target(&self) -> Option<f64> {
        self.tier.arc_target()
    }

    /// Chunks pinned by loads or stores in flight.
    #[getter]
    fn pinned(&self) -> u32 {
        self.tier.pinned()
    }

    #[getter]
    fn policy(&self) -> &'static str {
        if self.tier.arc_target().is_some() {
            "arc"
        } else {
            "lru"
        }
    }

    /// `(lookups, lookup_hits, stored, evicted, allocation_failures)` since the last call.
    fn take_counters(&mut self) -> (u64, u64, u64, u64, u64) {
        let c = self.tier.take_counters();
        (
            c.lookups,
            c.lookup_hits,
            c.stored,
            c.evicted,
            c.allocation_failures,
        )
    }

    fn __len__(&self) -> usize {
        self.tier.len()
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.tier.contains(&Key::from(key_object(key)?.as_bytes())))
    }

    fn on_new_request(&self, ctx: &Bound<'_, PyAny>) -> PyResult<()> {
        let st = state_of(ctx)?;
        self.tier.on_new_request(&mut st.borrow_mut().inner);
        Ok(())
    }

    /// `MISS` / `HIT` / `HIT_PENDING`, as the `lookup_results` given at construction.
    #[pyo3(signature = (key, ctx=None))]
    fn lookup(
        &mut self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        ctx: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let _ = ctx;
        let i = match self.tier.lookup(&Key::from(key_object(key)?.as_bytes())) {
            Lookup::Miss => 0,
            Lookup::Hit => 1,
            Lookup::HitPending => 2,
        };
        Ok(self.lookup_results[i].clone_ref(py))
    }

    fn prepare_load<'py>(
        &mut self,
        keys: &Bound<'py, PyAny>,
        ctx: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (owned, objs) = keys_of(keys)?;
        let st = state_of(ctx)?;
        let mut pos = position_reader(ctx, &objs);
        let ids = to_py(
            self.tier
                .prepare_load(&owned, &mut st.borrow_mut().inner, &mut pos),
        )?;
        self.spec(keys.py(), &ids)
    }

    #[pyo3(signature = (keys, ctx=None))]
    fn touch(&mut self, keys: &Bound<'_, PyAny>, ctx: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let _ = ctx;
        let (owned, _) = keys_of(keys)?;
        self.tier.touch(&owned);
        Ok(())
    }

    #[pyo3(signature = (keys, ctx=None))]
    fn complete_load(
        &mut self,
        keys: &Bound<'_, PyAny>,
        ctx: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let _ = ctx;
        let (keys, _) = keys_of(keys)?;
        to_py(self.tier.complete_load(&keys))
    }

    /// vLLM's `PrepareStoreOutput`, or `None` when the keys cannot fit (nothing changed).
    fn prepare_store<'py>(
        &mut self,
        keys: &Bound<'py, PyAny>,
        ctx: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = keys.py();
        let (owned, objs) = keys_of(keys)?;
        let st = state_of(ctx)?;
        let mut pos = position_reader(ctx, &objs);
        let out = to_py(
            self.tier
                .prepare_store(&owned, &mut st.borrow_mut().inner, &mut pos),
        )?;
        let Some(out) = out else {
            return Ok(None);
        };
        // The caller's own key objects go back, as vLLM's manager returns them; the fields go
        // positionally, in the dataclass's order (keys_to_store, store_spec, evicted_keys).
        let to_store = PyList::new(py, out.offer_indices.iter().map(|&i| &objs[i]))?;
        let evicted = PyList::new(
            py,
            out.evicted_ids.iter().zip(&out.evicted).map(|(&id, key)| {
                self.stored_objects
                    .get_mut(id as usize)
                    .and_then(Option::take)
                    .map_or_else(|| PyBytes::new(py, key), |obj| obj.into_bound(py))
            }),
        )?;
        for (&i, &id) in out.offer_indices.iter().zip(&out.ids) {
            let id = id as usize;
            if self.stored_objects.len() <= id {
                self.stored_objects.resize_with(id + 1, || None);
            }
            self.stored_objects[id] = Some(objs[i].clone().unbind());
        }
        if !out.evicted.is_empty() && self.tier.events_enabled() {
            self.event_keys.push_back(evicted.clone().unbind());
        }
        let args = (to_store, self.spec(py, &out.ids)?, evicted);
        self.prepare_store_output.bind(py).call1(args).map(Some)
    }

    // `success` is checked here rather than by PyO3, so that a non-bool is a kvoff error; the
    // text signature shows the default vLLM's ABC has.
    #[pyo3(signature = (keys, ctx=None, success=None),
           text_signature = "($self, keys, ctx=None, success=True)")]
    fn complete_store(
        &mut self,
        keys: &Bound<'_, PyAny>,
        ctx: Option<&Bound<'_, PyAny>>,
        success: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let _ = ctx;
        let py = keys.py();
        let success = success_flag(success)?;
        let (keys, objs) = keys_of(keys)?;
        let done = self.tier.complete_store(&keys, success);
        if success && !done.is_empty() && self.tier.events_enabled() {
            let objs = PyList::new(py, done.iter().map(|&i| &objs[i]))?;
            self.event_keys.push_back(objs.unbind());
        }
        Ok(())
    }

    fn on_request_finished(&mut self, ctx: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(st) = stored_state(ctx)?.cast_into::<PyRequestState>() {
            self.tier.on_request_finished(&mut st.borrow_mut().inner);
        }
        Ok(())
    }

    fn reset_cache(&mut self) {
        self.tier.reset_cache();
        self.stored_objects.clear();
    }

    /// The events since the last call, as vLLM's `OffloadingEvent`s.
    fn take_events<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let events = self.tier.take_events();
        let list = PyList::empty(py);
        for e in &events {
            let keys = (!e.metadata_only)
                .then(|| self.event_keys.pop_front())
                .flatten();
            list.append(self.event(py, e, keys)?)?;
        }
        Ok(list)
    }

    /// `(capacity, in_use, write_pending, allocation_sizes, stores_skipped)`: what vLLM's tier
    /// gauges, allocation histogram and skipped-store counter are made of; drains the last two.
    fn take_usage<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let u = self.tier.take_usage();
        PyTuple::new(
            py,
            [
                u.capacity.into_pyobject(py)?.into_any(),
                u.in_use.into_pyobject(py)?.into_any(),
                u.write_pending.into_pyobject(py)?.into_any(),
                PyList::new(py, u.allocation_sizes)?.into_any(),
                u.stores_skipped.into_pyobject(py)?.into_any(),
            ],
        )
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyVllmManager>()?;
    m.add_class::<PyRequestState>()?;
    Ok(())
}
