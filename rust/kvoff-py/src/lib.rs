//! The extension module `kvoff._core`: conversions, GIL release and error mapping only.
//! Each Python-facing concept has its own file with a `register` function.

mod direction;
mod errors;
mod jobs;
mod manager;
mod stats;
mod stats_args;
mod stats_plain;
mod stats_view;
mod vllm_manager;

use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "_core")]
fn kvoff_core_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    manager::register(m)?;
    direction::register(m)?;
    stats::register(m)?;
    jobs::register(m)?;
    vllm_manager::register(m)?;
    Ok(())
}
