//! `JobTracker` (docs/DESIGN.md, "Jobs"); the semantics are documented on `kvoff_core::jobs`.

use std::sync::{Mutex, MutexGuard, PoisonError};

use kvoff_core::{JobTracker, KvoffError};
use pyo3::prelude::*;

use crate::errors::to_py;
use crate::stats::PyStatsAccumulator;
use crate::stats_args::{count, direction, flag, seconds, text};

/// Frozen with a mutex inside, so a worker may call it from more than one thread; each call
/// holds the mutex only for a few hash-map operations.
#[pyclass(frozen, name = "JobTracker", module = "kvoff._core")]
pub(crate) struct PyJobTracker {
    inner: Mutex<JobTracker>,
    stats: Option<Py<PyStatsAccumulator>>,
}

impl PyJobTracker {
    fn lock(&self) -> MutexGuard<'_, JobTracker> {
        // Core calls do not panic midway through a change; a poisoned lock still holds a
        // consistent tracker.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[pymethods]
impl PyJobTracker {
    #[new]
    #[pyo3(signature = (stats = None))]
    fn new(stats: Option<Bound<'_, PyStatsAccumulator>>) -> Self {
        let shared = stats.as_ref().map(|s| s.get().shared());
        Self {
            inner: Mutex::new(JobTracker::new(shared)),
            stats: stats.map(Bound::unbind),
        }
    }

    /// The accumulator completed jobs are recorded into, if any.
    #[getter]
    fn stats(&self, py: Python<'_>) -> Option<Py<PyStatsAccumulator>> {
        self.stats.as_ref().map(|s| s.clone_ref(py))
    }

    fn submit(
        &self,
        req_id: &Bound<'_, PyAny>,
        direction: &Bound<'_, PyAny>,
        num_blocks: &Bound<'_, PyAny>,
        num_bytes: &Bound<'_, PyAny>,
    ) -> PyResult<u64> {
        let req = text("req_id", req_id)?;
        let d = self::direction(direction)?;
        let blocks = count("num_blocks", num_blocks)?;
        let bytes = count("num_bytes", num_bytes)?;
        to_py(self.lock().submit(req, d, blocks, bytes))
    }

    /// Completes a job and returns its request id.
    fn complete(
        &self,
        job_id: &Bound<'_, PyAny>,
        success: &Bound<'_, PyAny>,
        seconds: &Bound<'_, PyAny>,
    ) -> PyResult<String> {
        let id = job(job_id)?;
        let ok = flag("success", success)?;
        let secs = self::seconds(seconds)?;
        let done = to_py(self.lock().complete(id, ok, secs))?;
        Ok(done.req_id.as_ref().to_owned())
    }

    fn request_finished(&self, req_id: &Bound<'_, PyAny>) -> PyResult<()> {
        let req = text("req_id", req_id)?;
        to_py(self.lock().request_finished(req))
    }

    /// `(finished_storing, finished_loading)` since the previous call.
    fn take_finished(&self) -> (Vec<String>, Vec<String>) {
        let f = self.lock().take_finished();
        let names = |v: Vec<std::sync::Arc<str>>| v.iter().map(|s| s.as_ref().to_owned()).collect();
        (names(f.storing), names(f.loading))
    }

    fn pending_jobs(&self, req_id: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
        let req = text("req_id", req_id)?;
        Ok(self.lock().pending_jobs(req).to_vec())
    }

    #[getter]
    fn num_pending(&self) -> usize {
        self.lock().num_pending()
    }

    fn __repr__(&self) -> String {
        format!(
            "<JobTracker with {} pending jobs>",
            self.lock().num_pending()
        )
    }
}

/// A job id: a negative one was never handed out (`UnknownJobError`, as for any id never
/// submitted); a non-int is an `InvalidArgumentError`.
fn job(job_id: &Bound<'_, PyAny>) -> PyResult<u64> {
    if let Ok(v) = job_id.extract::<i64>() {
        if v < 0 {
            return to_py(Err(KvoffError::UnknownJob(format!(
                "job {v} was never submitted (ids are >= 0)"
            ))));
        }
    }
    count("job_id", job_id)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyJobTracker>()?;
    Ok(())
}
