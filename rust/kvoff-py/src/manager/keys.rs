//! Turning a Python argument into borrowed block keys, without copying any bytes.
//!
//! Accepted forms of a `hashes` argument:
//! - a list or tuple (or any iterable) whose items are `bytes` or `int`;
//! - a one-dimensional numpy array of `int64` or `uint64` (the batched form: no Python object
//!   per hash, so conversion costs about a nanosecond per hash).

use std::cell::Cell;
use std::ops::Deref;
use std::sync::OnceLock;

use kvoff_core::BlockKeyRef;
use numpy::{PyArray1, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
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
    /// The caller's own exact list, read in place (see `shared_keys`): only for calls that
    /// keep the GIL throughout.
    Shared(Bound<'py, PyList>),
    I64(Vec<i64>),
    U64(Vec<u64>),
}

thread_local! {
    /// The allocation of the last call's key list, kept for the next call on this thread (a
    /// fresh 32 KiB vector per 1024-hash call showed in profiles as malloc and free work).
    static SPARE_KEYS: Cell<Vec<BlockKeyRef<'static>>> = const { Cell::new(Vec::new()) };
}

/// `v`, emptied, as a vector of keys of any lifetime, keeping its allocation: collecting an
/// emptied vector's iterator into a type of the same size reuses the buffer in place.
// `filter` would keep the input lifetime; `filter_map` is what changes it.
#[allow(clippy::unnecessary_filter_map)]
fn recycle<'b>(mut v: Vec<BlockKeyRef<'_>>) -> Vec<BlockKeyRef<'b>> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// A call's converted keys; the buffer goes back to the thread's spare when dropped.
pub(crate) struct Keys<'a>(Vec<BlockKeyRef<'a>>);

impl<'a> Keys<'a> {
    fn with_capacity(n: usize) -> Self {
        let mut v = recycle(SPARE_KEYS.take());
        v.reserve(n);
        Keys(v)
    }

    fn push(&mut self, key: BlockKeyRef<'a>) {
        self.0.push(key);
    }
}

impl<'a> Deref for Keys<'a> {
    type Target = [BlockKeyRef<'a>];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for Keys<'_> {
    fn drop(&mut self) {
        let v = recycle(std::mem::take(&mut self.0));
        // Very large calls do not pin their buffer for the thread's lifetime.
        if v.capacity() <= 1 << 16 {
            SPARE_KEYS.set(v);
        }
    }
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
        let name = type_name(arg);
        Err(type_error(
            py,
            format!(
                "block hashes must be a sequence of bytes or int hashes, or an int64/uint64 \
                 numpy array, got {name}"
            ),
        ))
    }

    /// Whether the core may run on these hashes with the GIL released: not on the caller's
    /// own list, which another thread could change meanwhile.
    pub(crate) fn may_detach(&self) -> bool {
        !matches!(self, Hashes::Shared(_))
    }

    /// Borrowed keys, validated: each hash is bytes or an int that fits in 128 bits.
    pub(crate) fn keys(&self) -> PyResult<Keys<'_>> {
        match self {
            Hashes::Objects(list) | Hashes::Shared(list) => {
                let direct = layout_known(list.py());
                let n = list.len();
                let mut keys = Keys::with_capacity(n);
                for i in 0..n {
                    // SAFETY: `i < len` of a list only we hold (or, when shared, one that no
                    // code can change while these keys live); the item is a borrowed
                    // reference that the list keeps alive as long as `self`.
                    let item = unsafe { list_item(list.as_ptr(), i, direct) };
                    keys.push(unsafe { fast_key(item, direct) }.map_or_else(
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
            Hashes::I64(v) => Ok(Keys(
                v.iter().map(|&x| BlockKeyRef::Int(i128::from(x))).collect(),
            )),
            Hashes::U64(v) => Ok(Keys(
                v.iter().map(|&x| BlockKeyRef::Int(i128::from(x))).collect(),
            )),
        }
    }

    /// The caller's object at `position`, if the hashes came as objects.
    pub(crate) fn object(&self, position: usize) -> Option<Py<PyAny>> {
        match self {
            Hashes::Objects(list) | Hashes::Shared(list) => {
                list.get_item(position).ok().map(Bound::unbind)
            }
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
            // Every hash is new in the usual store: one slice copy (a memcpy and increfs in
            // CPython) instead of an item call per hash.
            Hashes::Objects(list) | Hashes::Shared(list) if positions.len() == list.len() => {
                list.get_slice(0, positions.len()).into_any()
            }
            Hashes::Objects(list) | Hashes::Shared(list) => PyList::new(
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

/// Python lists never exceed `isize::MAX` items, so this is exact.
#[allow(clippy::cast_possible_wrap)]
fn py_index(i: usize) -> ffi::Py_ssize_t {
    i as ffi::Py_ssize_t
}

/// The caller's own exact list as borrowed keys, without copying it, when every item takes the
/// fast path (exact `bytes`, or exact `int` within 64 bits); `None` otherwise, for anything
/// but an exact list, and for lists of `max_len` items or more (the caller then takes
/// `Hashes::extract`, which copies).
///
/// # Safety
/// The keys borrow the list's items, which any Python code could replace and free: the caller
/// must hold the GIL, and run no Python code and never release the GIL, until the keys are
/// dropped. Nothing here runs Python code (type checks and plain reads only).
pub(crate) unsafe fn shared_keys<'a>(
    arg: &'a Bound<'_, PyAny>,
    max_len: usize,
) -> Option<Keys<'a>> {
    let obj = arg.as_ptr();
    // SAFETY: `arg` is live and the GIL is held.
    if unsafe { ffi::Py_TYPE(obj) } != &raw mut ffi::PyList_Type {
        return None;
    }
    let direct = layout_known(arg.py());
    // SAFETY: an exact list; no Python code runs in this loop, so its length and items stay
    // as read.
    let n = unsafe { list_len(obj, direct) };
    if n >= max_len {
        return None;
    }
    let mut keys = Keys::with_capacity(n);
    for i in 0..n {
        keys.push(unsafe { fast_key(list_item(obj, i, direct), direct) }?);
    }
    Some(keys)
}

/// `CPython`'s layouts of exact `bytes` and `list` objects, identical in every GIL build from
/// 3.0 through 3.14: a variable-size header (refcount, type, `ob_size`), then for bytes the
/// cached hash and the data inline, for lists the item array pointer. The limited API hides
/// them behind a C call per access, which costs about as much per hash as the manager's own
/// work; so they are read directly, once `probe_layout` has confirmed them on the running
/// interpreter (a debug or trace-refs build fails the probe and keeps to the API).
const SIZE_OFFSET: usize = 2 * std::mem::size_of::<usize>();
const BYTES_DATA_OFFSET: usize = 4 * std::mem::size_of::<usize>();
const LIST_ITEMS_OFFSET: usize = 3 * std::mem::size_of::<usize>();

static LAYOUT_KNOWN: OnceLock<bool> = OnceLock::new();

fn layout_known(py: Python<'_>) -> bool {
    *LAYOUT_KNOWN.get_or_init(|| probe_layout(py))
}

/// Whether direct reads at the offsets above give what the API gives, on a bytes object and a
/// list built for the purpose.
fn probe_layout(py: Python<'_>) -> bool {
    let data = b"kvoff layout probe";
    let bytes = PyBytes::new(py, data);
    let none = py.None().into_bound(py);
    let Ok(list) = PyList::new(py, [bytes.as_any(), &none]) else {
        return false;
    };
    let (b, l) = (bytes.as_ptr(), list.as_ptr());
    // SAFETY: both objects are live, the GIL is held, and every offset read lies within the
    // fixed header of a variable-size object, which every CPython object of these types has.
    unsafe {
        let api_data = ffi::PyBytes_AsString(b);
        if api_data.is_null() {
            ffi::PyErr_Clear();
            return false;
        }
        api_data.cast::<u8>() == b.cast::<u8>().add(BYTES_DATA_OFFSET)
            && read_size(b) == data.len()
            && read_size(l) == 2
            && list_item(l, 0, true) == b
            && list_item(l, 1, true) == none.as_ptr()
    }
}

/// # Safety
/// `obj` is a live variable-size object with the standard header; the GIL is held.
unsafe fn read_size(obj: *mut ffi::PyObject) -> usize {
    unsafe { obj.byte_add(SIZE_OFFSET).cast::<ffi::Py_ssize_t>().read() as usize }
}

/// # Safety
/// `list` is a live exact list; the GIL is held; `direct` only after a passed probe.
unsafe fn list_len(list: *mut ffi::PyObject, direct: bool) -> usize {
    if direct {
        unsafe { read_size(list) }
    } else {
        unsafe { ffi::PyList_Size(list) as usize }
    }
}

/// A borrowed item of a list.
///
/// # Safety
/// `list` is a live list (exact when `direct`), `i` is below its length, the GIL is held,
/// and `direct` only after a passed probe.
unsafe fn list_item(list: *mut ffi::PyObject, i: usize, direct: bool) -> *mut ffi::PyObject {
    if direct {
        unsafe {
            let items = list
                .byte_add(LIST_ITEMS_OFFSET)
                .cast::<*mut *mut ffi::PyObject>()
                .read();
            items.add(i).read()
        }
    } else {
        unsafe { ffi::PyList_GetItem(list, py_index(i)) }
    }
}

/// Exact `bytes` and `int` without any Python-level call: a type pointer compare, then direct
/// reads (bytes, after a passed probe) or one C call. `None` for anything else (subclasses,
/// big ints, wrong types), which the slow path sorts out.
///
/// # Safety
/// `item` must be a live object that outlives `'a`, the GIL must be held, and `direct` only
/// after a passed probe.
unsafe fn fast_key<'a>(item: *mut ffi::PyObject, direct: bool) -> Option<BlockKeyRef<'a>> {
    let ty = unsafe { ffi::Py_TYPE(item) };
    if ty == &raw mut ffi::PyBytes_Type {
        let (data, len) = if direct {
            let data = unsafe { item.cast::<u8>().add(BYTES_DATA_OFFSET) };
            (data, unsafe { read_size(item) })
        } else {
            let mut data: *mut std::os::raw::c_char = std::ptr::null_mut();
            let mut len: ffi::Py_ssize_t = 0;
            if unsafe { ffi::PyBytes_AsStringAndSize(item, &raw mut data, &raw mut len) } != 0 {
                unsafe { ffi::PyErr_Clear() };
                return None;
            }
            (data.cast::<u8>(), len as usize)
        };
        // SAFETY: bytes objects are immutable; the buffer lives as long as the object.
        return Some(BlockKeyRef::Bytes(unsafe {
            std::slice::from_raw_parts(data, len)
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
    let name = type_name(item);
    Err(type_error(
        py,
        format!(
            "block hash at position {position} must be bytes or int, got {name}: {}",
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
