//! Turning a Python `hashes` argument into block keys the core can use without the GIL.
//!
//! Accepted forms:
//! - any iterable (list, tuple, generator, 1-D object array) whose items are `bytes` or `int`;
//! - the batched form, a one-dimensional native-endian `int64` or `uint64` numpy array (no
//!   Python object per hash).
//!
//! Items are held by strong references for the whole call, and byte keys borrow the bytes
//! objects' buffers: `bytes` is immutable and cannot be freed while referenced, so the keys
//! stay valid with the GIL released, whatever other threads do to the caller's list.

use kvoff_core::BlockKeyRef;
use numpy::{PyArray1, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyList, PyString};

use crate::errors::{hash_type_error, invalid_argument_error, new_err};

/// A converted `hashes` argument: owned by this call, whatever the caller does meanwhile.
pub(crate) enum Hashes<'py> {
    /// The caller's items, in order (strong references).
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
        if let Ok(a) = arg.cast::<PyArray1<i64>>() {
            return Ok(Hashes::I64(a.readonly().as_array().to_vec()));
        }
        if let Ok(a) = arg.cast::<PyArray1<u64>>() {
            return Ok(Hashes::U64(a.readonly().as_array().to_vec()));
        }
        if let Ok(a) = arg.cast::<PyUntypedArray>() {
            check_array_form(a)?;
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
                    type_name(arg)
                ),
            ));
        }
        let items = match arg.try_iter() {
            Ok(iter) => iter,
            Err(e) if e.is_instance_of::<PyTypeError>(py) => {
                return Err(type_error(
                    py,
                    format!(
                        "block hashes must be a sequence of bytes or int hashes, or an \
                         int64/uint64 numpy array, got {}",
                        type_name(arg)
                    ),
                ));
            }
            Err(e) => return Err(e),
        };
        let mut objects = Vec::with_capacity(arg.len().unwrap_or(0));
        for item in items {
            objects.push(item?);
        }
        Ok(Hashes::Objects(objects))
    }

    /// The keys, validated: each hash is bytes or an int that fits in 128 bits.
    pub(crate) fn keys(&self) -> PyResult<Vec<BlockKeyRef<'_>>> {
        match self {
            Hashes::Objects(items) => {
                let mut keys = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    keys.push(match exact_key(item) {
                        Some(key) => key,
                        None => object_key(item, i)?,
                    });
                }
                Ok(keys)
            }
            Hashes::I64(v) => Ok(v.iter().map(|&x| BlockKeyRef::Int(i128::from(x))).collect()),
            Hashes::U64(v) => Ok(v.iter().map(|&x| BlockKeyRef::Int(i128::from(x))).collect()),
        }
    }

    /// The hashes at `positions`, in the form they came in (a new list of the caller's own
    /// objects, or an array of the same dtype).
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

/// Refuse a numpy array that is not the batched form, saying what that form is; only a 1-D
/// array of Python objects goes on, to be read item by item like a list.
fn check_array_form(array: &Bound<'_, PyUntypedArray>) -> PyResult<()> {
    let py = array.py();
    let dtype = array.dtype();
    let (ndim, kind) = (array.ndim(), dtype.kind());
    if ndim == 1 && kind == b'O' {
        return Ok(());
    }
    let name: String = dtype.getattr("name")?.extract()?;
    let order = match dtype.byteorder() {
        b'>' => "big-endian ",
        b'<' => "little-endian ",
        _ => "",
    };
    let hint = if ndim != 1 {
        "; pass a list of hashes, or a 1-D array"
    } else if kind == b'i' {
        "; convert it with .astype(numpy.int64)"
    } else if kind == b'u' {
        "; convert it with .astype(numpy.uint64)"
    } else {
        ""
    };
    Err(type_error(
        py,
        format!(
            "block hashes as a numpy array must be 1-D int64 or uint64 in native byte order, \
             got a {ndim}-D array of {order}{name}{hint}"
        ),
    ))
}

/// The common case, exact `bytes` or an `int` within 64 bits, inlined into the loop: a type
/// pointer compare and one or two C calls. Through `object_key` alone (subclass checks, a
/// `PyResult` handed back per key) a hash took about 100 instructions more, as many as the
/// core's whole lookup of it (counted with callgrind). `None` sends the item to `object_key`.
#[allow(clippy::inline_always)]
#[inline(always)]
fn exact_key<'a>(item: &'a Bound<'_, PyAny>) -> Option<BlockKeyRef<'a>> {
    if let Ok(b) = item.cast_exact::<PyBytes>() {
        return Some(BlockKeyRef::Bytes(b.as_bytes()));
    }
    let int = item.cast_exact::<PyInt>().ok()?;
    int.extract::<i64>()
        .ok()
        .map(|v| BlockKeyRef::Int(i128::from(v)))
}

/// One hash object as a key: `bytes` (or a subclass) borrows its buffer; an `int` (or a
/// subclass, `bool` included) must fit in 128 signed bits.
pub(crate) fn object_key<'a>(
    item: &'a Bound<'_, PyAny>,
    position: usize,
) -> PyResult<BlockKeyRef<'a>> {
    if let Ok(b) = item.cast::<PyBytes>() {
        return Ok(BlockKeyRef::Bytes(b.as_bytes()));
    }
    let py = item.py();
    if item.is_instance_of::<PyInt>() {
        // Nearly every int hash fits in 64 bits, which converts in one C call; wider ones
        // take the slower 128-bit conversion.
        if let Ok(v) = item.extract::<i64>() {
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
    Err(type_error(
        py,
        format!(
            "block hash at position {position} must be bytes or int, got {}: {}",
            type_name(item),
            repr(item)
        ),
    ))
}

pub(crate) fn repr(item: &Bound<'_, PyAny>) -> String {
    item.repr()
        .map_or_else(|_| "<unprintable>".to_owned(), |r| r.to_string())
}

/// The name of `obj`'s type, for error messages (empty if even that fails).
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}
