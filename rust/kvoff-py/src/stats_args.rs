//! Arguments of the stats and job-tracker methods, converted by hand so that every bad one is an
//! `InvalidArgumentError` naming it (`PyO3`'s own conversions raise bare `TypeError` /
//! `OverflowError`), and so that the rules agree with `from_dict`: counts are ints in
//! `0..=2^64-1`, and a `bool` is never a number.

use kvoff_core::{Direction, KvoffError};
use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyString};

use crate::errors::to_py;

fn invalid<T>(msg: String) -> PyResult<T> {
    to_py(Err(KvoffError::InvalidArgument(msg)))
}

/// The name of `obj`'s type, for error messages.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "object".to_owned(), |n| n.to_string())
}

/// A count: an int (or an object with `__index__`, such as a numpy integer) in `0..=2^64-1`.
pub(crate) fn count(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    // bool is an int subclass; a count given as True is a mistake, not a 1 (as in from_dict).
    if obj.is_instance_of::<PyBool>() {
        return invalid(format!("{name} must be an int, got bool"));
    }
    if let Ok(v) = obj.extract::<u64>() {
        return Ok(v);
    }
    // Only errors get here: say which rule the value broke.
    let py = obj.py();
    let Ok(int) = py
        .import("operator")
        .and_then(|m| m.getattr("index"))
        .and_then(|index| index.call1((obj,)))
    else {
        return invalid(format!("{name} must be an int, got {}", type_name(obj)));
    };
    let shown = int
        .str()
        .map_or_else(|_| "an int too long to print".to_owned(), |s| s.to_string());
    if int.lt(0).unwrap_or(false) {
        invalid(format!("{name} must be a non-negative int, got {shown}"))
    } else {
        invalid(format!("{name} must be an int in 0..=2^64-1, got {shown}"))
    }
}

/// A duration in seconds: an int or a float (bounds are checked by the core).
pub(crate) fn seconds(obj: &Bound<'_, PyAny>) -> PyResult<f64> {
    const WHAT: &str = "seconds must be a number of seconds (int or float)";
    if obj.is_instance_of::<PyBool>() {
        return invalid(format!("{WHAT}, got bool"));
    }
    match obj.extract::<f64>() {
        Ok(s) => Ok(s),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
            invalid(format!("{WHAT}, got an int too large for a float"))
        }
        Err(_) => invalid(format!("{WHAT}, got {}", type_name(obj))),
    }
}

pub(crate) fn flag(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    obj.extract::<bool>()
        .or_else(|_| invalid(format!("{name} must be a bool, got {}", type_name(obj))))
}

/// A `str` that Rust can hold: one with a lone surrogate cannot be UTF-8.
pub(crate) fn text<'a>(name: &str, obj: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    let Ok(s) = obj.cast::<PyString>() else {
        return invalid(format!("{name} must be a str, got {}", type_name(obj)));
    };
    s.to_str().or_else(|_| {
        let shown = obj
            .repr()
            .map_or_else(|_| String::new(), |r| format!(", got {r}"));
        invalid(format!(
            "{name} must be a str of valid Unicode (no lone surrogates){shown}"
        ))
    })
}

/// An optional argument taken as given, so that its own conversion (and its error) is ours:
/// `PyO3`'s defaults must be values of the parameter's type, and a `&Bound` has no literal.
pub(crate) enum Given<'py> {
    Value(Bound<'py, PyAny>),
    Default,
}

impl<'a, 'py> FromPyObject<'a, 'py> for Given<'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(Given::Value(obj.to_owned()))
    }
}

pub(crate) fn direction(obj: &Bound<'_, PyAny>) -> PyResult<Direction> {
    to_py(text("direction", obj)?.parse())
}
