//! Conversion between Python objects and the core's plain-value tree (`kvoff_core::stats::Value`).
//! No checks here beyond what conversion needs: the core validates the tree and names the key.

use kvoff_core::stats::Value;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// Deeper than any valid stats dict; stops runaway recursion on self-referencing input.
const MAX_DEPTH: usize = 8;

pub(crate) fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    from_py_at(obj, 0)
}

fn from_py_at(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Ok(Value::Other("value nested too deeply".into()));
    }
    // bool is a subclass of int; a count given as True is a mistake, not a 1.
    if obj.is_instance_of::<PyBool>() {
        return Ok(Value::Other("bool".into()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::Int(i128::from(i)));
        }
        if let Ok(i) = obj.extract::<i128>() {
            return Ok(Value::Int(i));
        }
        // Beyond i128: keep the sign and size only (printing 10**5000 would raise in Python).
        let bits = obj
            .call_method0("bit_length")
            .and_then(|b| b.extract::<u64>())
            .unwrap_or(u64::MAX);
        let negative = obj.lt(0).unwrap_or(false);
        return Ok(Value::HugeInt { negative, bits });
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        // A snapshot of the items: iterating the dict itself would panic if a key's __repr__
        // changed its size midway.
        let items = d.items();
        let mut entries = Vec::with_capacity(items.len());
        for item in items.iter() {
            let (k, v) = item.extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>()?;
            entries.push((key_name(&k), from_py_at(&v, depth + 1)?));
        }
        return Ok(Value::Map(entries));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for item in obj.try_iter()? {
            items.push(from_py_at(&item?, depth + 1)?);
        }
        return Ok(Value::List(items));
    }
    Ok(Value::Other(
        obj.get_type()
            .name()
            .map_or_else(|_| "object".to_owned(), |n| n.to_string()),
    ))
}

/// A dict key as the error message shows it. A field name is a `str` of ASCII letters, so a key
/// that is not a valid-UTF-8 `str` can never match one: it becomes its repr (which escapes lone
/// surrogates), or its type if even the repr fails; the core then reports it as unknown.
fn key_name(k: &Bound<'_, PyAny>) -> String {
    if let Ok(Ok(s)) = k.cast::<PyString>().map(|s| s.to_str()) {
        return s.to_owned();
    }
    k.repr().map_or_else(
        |_| {
            let t = k.get_type();
            format!(
                "<{} key>",
                t.name()
                    .map_or_else(|_| "unprintable".to_owned(), |n| n.to_string())
            )
        },
        |r| r.to_string(),
    )
}

pub(crate) fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Int(i) => match u64::try_from(*i) {
            Ok(u) => u.into_pyobject(py)?.into_any(),
            Err(_) => i.into_pyobject(py)?.into_any(),
        },
        // Never produced by `to_value`; shown as its description if a caller builds one.
        Value::HugeInt { negative, bits } => {
            let sign = if *negative { "-" } else { "" };
            PyString::new(py, &format!("<{sign}int of {bits} bits>")).into_any()
        }
        Value::Float(f) => PyFloat::new(py, *f).into_any(),
        Value::List(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Map(entries) => {
            let dict = PyDict::new(py);
            for (k, item) in entries {
                dict.set_item(k, to_py(py, item)?)?;
            }
            dict.into_any()
        }
        Value::Other(name) => PyString::new(py, name).into_any(),
    })
}
