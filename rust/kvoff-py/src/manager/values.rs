//! The manager's value types: frozen, comparable, printable and picklable.

use kvoff_core::{BlockKey, BlockKeyRef};
use numpy::npyffi::NPY_ARRAY_WRITEABLE;
use numpy::{PyArray1, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple, PyType};
use pyo3::IntoPyObjectExt;

/// A block key as Python sees it: `bytes` or `int`.
pub(crate) fn key_to_py<'py>(py: Python<'py>, key: BlockKeyRef<'_>) -> PyResult<Bound<'py, PyAny>> {
    match key {
        BlockKeyRef::Bytes(b) => Ok(PyBytes::new(py, b).into_any()),
        BlockKeyRef::Int(v) => match i64::try_from(v) {
            Ok(small) => small.into_bound_py_any(py),
            Err(_) => v.into_bound_py_any(py),
        },
    }
}

pub(crate) fn keys_to_py<'py>(py: Python<'py>, keys: &[BlockKey]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(
        py,
        keys.iter()
            .map(|k| key_to_py(py, k.as_ref()))
            .collect::<PyResult<Vec<_>>>()?,
    )
}

/// Compare two hash sequences element by element (lists, or numpy arrays from the batched form).
fn same_items(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<bool> {
    let list = a.py().get_type::<PyList>();
    list.call1((a,))?.eq(list.call1((b,))?)
}

fn read_only_ids(py: Python<'_>, ids: Vec<i64>) -> Bound<'_, PyArray1<i64>> {
    let array = PyArray1::from_vec(py, ids);
    // SAFETY: the array was just created here and nobody else holds it; clearing WRITEABLE
    // only makes numpy refuse writes, so the spec stays a value.
    unsafe { (*array.as_array_ptr()).flags &= !NPY_ARRAY_WRITEABLE };
    array
}

/// CPU block ids for a load or a store.
#[pyclass(frozen, module = "kvoff._core", name = "LoadStoreSpec")]
pub(crate) struct PyLoadStoreSpec {
    block_ids: Py<PyArray1<i64>>,
    medium: String,
}

impl PyLoadStoreSpec {
    pub(crate) fn cpu(py: Python<'_>, ids: &[u32]) -> Self {
        let ids = ids.iter().map(|&id| i64::from(id)).collect();
        PyLoadStoreSpec {
            block_ids: read_only_ids(py, ids).unbind(),
            medium: "CPU".to_owned(),
        }
    }

    fn ids(&self, py: Python<'_>) -> Vec<i64> {
        self.block_ids.bind(py).readonly().as_array().to_vec()
    }
}

#[pymethods]
impl PyLoadStoreSpec {
    #[new]
    #[pyo3(signature = (block_ids, medium = "CPU"))]
    fn new(py: Python<'_>, block_ids: Vec<i64>, medium: &str) -> Self {
        PyLoadStoreSpec {
            block_ids: read_only_ids(py, block_ids).unbind(),
            medium: medium.to_owned(),
        }
    }

    /// Block ids, a read-only int64 numpy array.
    #[getter]
    fn block_ids(&self, py: Python<'_>) -> Py<PyArray1<i64>> {
        self.block_ids.clone_ref(py)
    }

    #[getter]
    fn medium(&self) -> &str {
        &self.medium
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.block_ids.bind(py).len()
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyLoadStoreSpec>()
            .is_ok_and(|o| self.medium == o.get().medium && self.ids(py) == o.get().ids(py))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "LoadStoreSpec(block_ids={:?}, medium={})",
            self.ids(py),
            py_str(py, &self.medium)?
        ))
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyType>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let me = slf.get();
        let ids = PyList::new(py, me.ids(py))?;
        Ok((
            slf.get_type(),
            PyTuple::new(
                py,
                [ids.into_any(), me.medium.clone().into_bound_py_any(py)?],
            )?,
        ))
    }
}

/// What `prepare_store` decided: the hashes to store, where, and what was evicted for them.
#[pyclass(frozen, module = "kvoff._core", name = "PrepareStoreOutput")]
pub(crate) struct PyPrepareStoreOutput {
    block_hashes_to_store: Py<PyAny>,
    store_spec: Py<PyLoadStoreSpec>,
    block_hashes_evicted: Py<PyAny>,
}

#[pymethods]
impl PyPrepareStoreOutput {
    #[new]
    pub(crate) fn new(
        block_hashes_to_store: Py<PyAny>,
        store_spec: Py<PyLoadStoreSpec>,
        block_hashes_evicted: Py<PyAny>,
    ) -> Self {
        PyPrepareStoreOutput {
            block_hashes_to_store,
            store_spec,
            block_hashes_evicted,
        }
    }

    #[getter]
    fn block_hashes_to_store(&self, py: Python<'_>) -> Py<PyAny> {
        self.block_hashes_to_store.clone_ref(py)
    }

    #[getter]
    fn store_spec(&self, py: Python<'_>) -> Py<PyLoadStoreSpec> {
        self.store_spec.clone_ref(py)
    }

    #[getter]
    fn block_hashes_evicted(&self, py: Python<'_>) -> Py<PyAny> {
        self.block_hashes_evicted.clone_ref(py)
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(other) = other.cast::<PyPrepareStoreOutput>() else {
            return Ok(false);
        };
        let other = other.get();
        Ok(same_items(
            self.block_hashes_to_store.bind(py),
            other.block_hashes_to_store.bind(py),
        )? && same_items(
            self.block_hashes_evicted.bind(py),
            other.block_hashes_evicted.bind(py),
        )? && self.store_spec.bind(py).eq(other.store_spec.bind(py))?)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "PrepareStoreOutput(block_hashes_to_store={}, store_spec={}, block_hashes_evicted={})",
            self.block_hashes_to_store.bind(py).repr()?,
            self.store_spec.bind(py).repr()?,
            self.block_hashes_evicted.bind(py).repr()?,
        ))
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyType>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let me = slf.get();
        let args = PyTuple::new(
            py,
            [
                me.block_hashes_to_store.bind(py).clone(),
                me.store_spec.bind(py).clone().into_any(),
                me.block_hashes_evicted.bind(py).clone(),
            ],
        )?;
        Ok((slf.get_type(), args))
    }
}

/// Blocks that entered the CPU tier (`removed=False`) or left it (`removed=True`).
#[pyclass(frozen, module = "kvoff._core", name = "OffloadingEvent")]
pub(crate) struct PyOffloadingEvent {
    block_hashes: Py<PyAny>,
    block_size: u64,
    medium: String,
    removed: bool,
}

#[pymethods]
impl PyOffloadingEvent {
    #[new]
    pub(crate) fn new(
        block_hashes: Py<PyAny>,
        block_size: u64,
        medium: String,
        removed: bool,
    ) -> Self {
        PyOffloadingEvent {
            block_hashes,
            block_size,
            medium,
            removed,
        }
    }

    #[getter]
    fn block_hashes(&self, py: Python<'_>) -> Py<PyAny> {
        self.block_hashes.clone_ref(py)
    }

    #[getter]
    fn block_size(&self) -> u64 {
        self.block_size
    }

    #[getter]
    fn medium(&self) -> &str {
        &self.medium
    }

    #[getter]
    fn removed(&self) -> bool {
        self.removed
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(other) = other.cast::<PyOffloadingEvent>() else {
            return Ok(false);
        };
        let other = other.get();
        Ok(self.block_size == other.block_size
            && self.medium == other.medium
            && self.removed == other.removed
            && same_items(self.block_hashes.bind(py), other.block_hashes.bind(py))?)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "OffloadingEvent(block_hashes={}, block_size={}, medium={}, removed={})",
            self.block_hashes.bind(py).repr()?,
            self.block_size,
            py_str(py, &self.medium)?,
            if self.removed { "True" } else { "False" },
        ))
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyType>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let me = slf.get();
        let args = PyTuple::new(
            py,
            [
                me.block_hashes.bind(py).clone(),
                me.block_size.into_bound_py_any(py)?,
                me.medium.clone().into_bound_py_any(py)?,
                me.removed.into_bound_py_any(py)?,
            ],
        )?;
        Ok((slf.get_type(), args))
    }
}

fn py_str(py: Python<'_>, s: &str) -> PyResult<String> {
    Ok(pyo3::types::PyString::new(py, s).repr()?.to_string())
}
