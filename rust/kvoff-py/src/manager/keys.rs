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

/// A converted `hashes` argument.
pub(crate) enum Hashes<'py> {
    /// A private list of the caller's hash objects (a shallow copy of the argument). Nobody
    /// else can reach it, so the bytes it keeps alive stay valid while the GIL is released,
    /// whatever other threads do to the caller's list.
    Objects(Bound<'py, PyList>),
    I64(Vec<i64>),
    U64(Vec<u64>),
}

fn type_error(py: Python<'_>, msg: String) -> PyErr {
    new_err(py, hash_type_error(py), msg)
}

impl<'py> Hashes<'py> {
    pub(crate) fn extract(arg: &Bound<'py, PyAny>) -> PyResult<Self> {
        let py = arg.py();
        if let Ok(a) = arg.cast::<PyArray1<i64>>() {
            return Ok(Hashes::I64(a.readonly().as_array().to_vec()));
        }
        if let Ok(a) = arg.cast::<PyArray1<u64>>() {
            return Ok(Hashes::U64(a.readonly().as_array().to_vec()));
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
        if arg.is_instance_of::<PyTuple>()
            || arg.cast::<PyList>().is_ok()
            || arg.hasattr("__iter__")?
        {
            // SAFETY: `arg` is a live object and the GIL is held. PySequence_List returns a
            // new list (a copy for list input: one memcpy and an incref per item).
            let copy =
                unsafe { Bound::from_owned_ptr_or_err(py, ffi::PySequence_List(arg.as_ptr())) }?;
            return Ok(Hashes::Objects(copy.cast_into::<PyList>()?));
        }
        let name = arg
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        Err(type_error(
            py,
            format!(
                "block hashes must be a sequence of bytes or int hashes, or an int64/uint64 \
                 numpy array, got {name}"
            ),
        ))
    }

    /// Borrowed keys, validated: each hash is bytes or an int that fits in 128 bits.
    pub(crate) fn keys(&self) -> PyResult<Vec<BlockKeyRef<'_>>> {
        match self {
            Hashes::Objects(list) => {
                let n = list.len();
                let mut keys = Vec::with_capacity(n);
                for i in 0..n {
                    // SAFETY: `i < len` of a list only we hold; PyList_GetItem returns a
                    // borrowed reference that the list keeps alive as long as `self`.
                    let item = unsafe { ffi::PyList_GetItem(list.as_ptr(), py_index(i)) };
                    keys.push(unsafe { fast_key(item) }.map_or_else(
                        || {
                            // SAFETY: as above; the slow path handles subclasses and errors.
                            let item = unsafe { Borrowed::from_ptr(list.py(), item) };
                            object_key_owned_lifetime(list, item, i)
                        },
                        Ok,
                    )?);
                }
                Ok(keys)
            }
            Hashes::I64(v) => Ok(v.iter().map(|&x| BlockKeyRef::Int(i128::from(x))).collect()),
            Hashes::U64(v) => Ok(v.iter().map(|&x| BlockKeyRef::Int(i128::from(x))).collect()),
        }
    }

    /// The caller's object at `position`, if the hashes came as objects.
    pub(crate) fn object(&self, position: usize) -> Option<Py<PyAny>> {
        match self {
            Hashes::Objects(list) => list.get_item(position).ok().map(Bound::unbind),
            Hashes::I64(_) | Hashes::U64(_) => None,
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
            Hashes::Objects(list) => PyList::new(
                py,
                positions
                    .iter()
                    .map(|&i| list.get_item(i))
                    .collect::<PyResult<Vec<_>>>()?,
            )?
            .into_any(),
            Hashes::I64(v) => {
                PyArray1::from_vec(py, positions.iter().map(|&i| v[i]).collect()).into_any()
            }
            Hashes::U64(v) => {
                PyArray1::from_vec(py, positions.iter().map(|&i| v[i]).collect()).into_any()
            }
        })
    }
}

/// Python lists never exceed `isize::MAX` items, so this is exact.
#[allow(clippy::cast_possible_wrap)]
fn py_index(i: usize) -> ffi::Py_ssize_t {
    i as ffi::Py_ssize_t
}

/// Exact `bytes` and `int` without any Python-level call: a type pointer compare and one C
/// call. `None` for anything else (subclasses, big ints, wrong types), which the slow path
/// sorts out.
///
/// # Safety
/// `item` must be a live object that outlives `'a`, and the GIL must be held.
unsafe fn fast_key<'a>(item: *mut ffi::PyObject) -> Option<BlockKeyRef<'a>> {
    let ty = unsafe { ffi::Py_TYPE(item) };
    if ty == &raw mut ffi::PyBytes_Type {
        let mut data: *mut std::os::raw::c_char = std::ptr::null_mut();
        let mut len: ffi::Py_ssize_t = 0;
        if unsafe { ffi::PyBytes_AsStringAndSize(item, &raw mut data, &raw mut len) } != 0 {
            unsafe { ffi::PyErr_Clear() };
            return None;
        }
        // SAFETY: bytes objects are immutable; the buffer lives as long as the object.
        return Some(BlockKeyRef::Bytes(unsafe {
            std::slice::from_raw_parts(data.cast::<u8>(), len as usize)
        }));
    }
    if ty == &raw mut ffi::PyLong_Type {
        let mut overflow = 0;
        let v = unsafe { ffi::PyLong_AsLongLongAndOverflow(item, &raw mut overflow) };
        if overflow == 0 && !(v == -1 && unsafe { !ffi::PyErr_Occurred().is_null() }) {
            return Some(BlockKeyRef::Int(i128::from(v)));
        }
        unsafe { ffi::PyErr_Clear() };
    }
    None
}

/// The slow path, with the lifetime of the list that keeps `item` alive.
fn object_key_owned_lifetime<'a>(
    _list: &'a Bound<'_, PyList>,
    item: Borrowed<'_, '_, PyAny>,
    position: usize,
) -> PyResult<BlockKeyRef<'a>> {
    let key = object_key(&item, position)?;
    // SAFETY: the key borrows from `item`'s immutable bytes buffer, and `_list` holds a strong
    // reference to `item` for all of `'a`.
    Ok(unsafe { std::mem::transmute::<BlockKeyRef<'_>, BlockKeyRef<'a>>(key) })
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
