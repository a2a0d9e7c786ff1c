//! Turning a Python argument into borrowed block keys, without copying any bytes.
//!
//! Accepted forms of a `hashes` argument:
//! - a list or tuple (or any iterable) whose items are `bytes` or `int`;
//! - a one-dimensional numpy array of `int64` or `uint64` (the batched form: no Python object
//!   per hash, so conversion costs about a nanosecond per hash).

use kvoff_core::BlockKeyRef;
use numpy::{PyArray1, PyArrayMethods};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyList, PyString, PyTuple};

use crate::errors::{hash_type_error, invalid_argument_error, new_err};

/// A converted `hashes` argument. Holds a strong reference to every hash object, so the
/// borrowed keys stay valid while the GIL is released.
pub(crate) enum Hashes<'py> {
    /// Strong references, so the borrowed bytes outlive a GIL release.
    Objects(Vec<Bound<'py, PyAny>>),
    I64(Vec<i64>),
    U64(Vec<u64>),
}

fn type_error(py: Python<'_>, msg: String) -> PyErr {
    new_err(py, hash_type_error(py), msg)
}

impl<'py> Hashes<'py> {
    pub(crate) fn extract(arg: &Bound<'py, PyAny>) -> PyResult<Self> {
        let py = arg.py();
        if let Ok(list) = arg.cast::<PyList>() {
            return Ok(Hashes::Objects(list.iter().collect()));
        }
        if let Ok(tuple) = arg.cast::<PyTuple>() {
            return Ok(Hashes::Objects(tuple.iter().collect()));
        }
        if let Ok(a) = arg.cast::<PyArray1<i64>>() {
            let values = a.readonly().as_array().to_vec();
            return Ok(Hashes::I64(values));
        }
        if let Ok(a) = arg.cast::<PyArray1<u64>>() {
            let values = a.readonly().as_array().to_vec();
            return Ok(Hashes::U64(values));
        }
        // A lone bytes or str is iterable but is certainly not a list of hashes.
        if arg.is_instance_of::<PyBytes>()
            || arg.is_instance_of::<PyString>()
            || arg.is_instance_of::<PyInt>()
        {
            return Err(type_error(
                py,
                format!(
                    "block hashes must be a sequence of bytes or int hashes, got a single {}",
                    arg.get_type().name()?
                ),
            ));
        }
        let iter = arg.try_iter().map_err(|_| {
            let name = arg
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            type_error(
                py,
                format!(
                    "block hashes must be a sequence of bytes or int hashes, or an int64/uint64 \
                     numpy array, got {name}"
                ),
            )
        })?;
        Ok(Hashes::Objects(iter.collect::<PyResult<Vec<_>>>()?))
    }

    /// Borrowed keys, validated: each hash is bytes or an int that fits in 128 bits.
    pub(crate) fn keys(&self) -> PyResult<Vec<BlockKeyRef<'_>>> {
        match self {
            Hashes::Objects(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| object_key(item, i))
                .collect(),
            Hashes::I64(v) => Ok(v.iter().map(|&x| BlockKeyRef::Int(i128::from(x))).collect()),
            Hashes::U64(v) => Ok(v.iter().map(|&x| BlockKeyRef::Int(i128::from(x))).collect()),
        }
    }

    /// The hashes at `positions`, in the form they came in (a list of the caller's own objects,
    /// or an array of the same dtype).
    pub(crate) fn select(
        &self,
        py: Python<'py>,
        positions: &[usize],
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            Hashes::Objects(items) => {
                PyList::new(py, positions.iter().map(|&i| &items[i]))?.into_any()
            }
            Hashes::I64(v) => {
                PyArray1::from_vec(py, positions.iter().map(|&i| v[i]).collect()).into_any()
            }
            Hashes::U64(v) => {
                PyArray1::from_vec(py, positions.iter().map(|&i| v[i]).collect()).into_any()
            }
        })
    }
}

pub(crate) fn object_key<'a>(
    item: &'a Bound<'_, PyAny>,
    position: usize,
) -> PyResult<BlockKeyRef<'a>> {
    if let Ok(b) = item.cast::<PyBytes>() {
        return Ok(BlockKeyRef::Bytes(b.as_bytes()));
    }
    let py = item.py();
    if item.is_instance_of::<PyInt>() {
        let mut overflow = 0;
        // SAFETY: `item` is a live int object and the GIL is held.
        let v = unsafe { ffi::PyLong_AsLongLongAndOverflow(item.as_ptr(), &raw mut overflow) };
        if overflow == 0 {
            if v == -1 {
                if let Some(err) = PyErr::take(py) {
                    return Err(err);
                }
            }
            return Ok(BlockKeyRef::Int(i128::from(v)));
        }
        return item.extract::<i128>().map(BlockKeyRef::Int).map_err(|_| {
            new_err(
                py,
                invalid_argument_error(py),
                format!(
                    "int block hash {} at position {position} is outside the 128-bit signed \
                     range [-2**127, 2**127 - 1]",
                    repr(item)
                ),
            )
        });
    }
    let name = item
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    Err(type_error(
        py,
        format!(
            "block hash at position {position} must be bytes or int, got {name}: {}",
            repr(item)
        ),
    ))
}

fn repr(item: &Bound<'_, PyAny>) -> String {
    item.repr()
        .map_or_else(|_| "<unprintable>".to_owned(), |r| r.to_string())
}
