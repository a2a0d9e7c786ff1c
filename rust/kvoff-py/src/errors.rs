//! One mapping from core errors to the Python hierarchy in `kvoff/errors.py`.
//!
//! The classes live in Python because each must subclass two built-ins (`KvoffError` and the
//! `KeyError` / `ValueError` / `TypeError` a user would catch), which `create_exception!` cannot
//! express. They are imported once and cached.

use kvoff_core::KvoffError;
use pyo3::exceptions::{PyMemoryError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

fn class(
    py: Python<'_>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<Py<PyType>> {
    cell.get_or_try_init(py, || {
        let module = py.import("kvoff.errors")?;
        Ok(module.getattr(name)?.cast_into::<PyType>()?.unbind())
    })
    .map(|t| t.clone_ref(py))
}

macro_rules! error_class {
    ($fn_name:ident, $py_name:literal) => {
        pub(crate) fn $fn_name(py: Python<'_>) -> PyResult<Py<PyType>> {
            static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
            class(py, &CELL, $py_name)
        }
    };
}

error_class!(unknown_hash_error, "UnknownHashError");
error_class!(unknown_job_error, "UnknownJobError");
error_class!(invalid_state_error, "InvalidStateError");
error_class!(invalid_argument_error, "InvalidArgumentError");
error_class!(hash_type_error, "HashTypeError");

/// Build a Python exception of class `cls` with a single message argument.
pub(crate) fn new_err(py: Python<'_>, cls: PyResult<Py<PyType>>, msg: String) -> PyErr {
    match cls {
        Ok(cls) => PyErr::from_type(cls.into_bound(py), (msg,)),
        Err(import_failure) => {
            let err = PyRuntimeError::new_err(format!("{msg} (and kvoff.errors failed to import)"));
            err.set_cause(py, Some(import_failure));
            err
        }
    }
}

/// Wrapper so `?` works on core results: `core_call().map_err(CoreError)?`.
pub(crate) struct CoreError(pub KvoffError);

impl From<KvoffError> for CoreError {
    fn from(e: KvoffError) -> Self {
        CoreError(e)
    }
}

impl From<CoreError> for PyErr {
    fn from(CoreError(e): CoreError) -> PyErr {
        Python::attach(|py| {
            let msg = e.to_string();
            let cls = match e {
                KvoffError::UnknownHash(_) => unknown_hash_error(py),
                KvoffError::UnknownJob(_) => unknown_job_error(py),
                KvoffError::InvalidState(_) => invalid_state_error(py),
                KvoffError::InvalidArgument(_) => invalid_argument_error(py),
                KvoffError::OutOfMemory(_) => return PyMemoryError::new_err(msg),
            };
            new_err(py, cls, msg)
        })
    }
}

/// Convert a core result into a `PyResult`.
pub(crate) fn to_py<T>(r: kvoff_core::Result<T>) -> PyResult<T> {
    r.map_err(|e| PyErr::from(CoreError(e)))
}
