//! `JobTracker` (DESIGN §2); the semantics are documented on `kvoff_core::jobs`.

use std::sync::{Mutex, MutexGuard, PoisonError};

use kvoff_core::{JobTracker, KvoffError};
use pyo3::prelude::*;

use crate::errors::to_py;
use crate::stats::{count, direction, PyStatsAccumulator};

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
        req_id: &str,
        direction: &str,
        num_blocks: i64,
        num_bytes: i64,
    ) -> PyResult<u64> {
        let d = self::direction(direction)?;
        let blocks = count("num_blocks", num_blocks)?;
        let bytes = count("num_bytes", num_bytes)?;
        to_py(self.lock().submit(req_id, d, blocks, bytes))
    }

    /// Completes a job and returns its request id.
    fn complete(&self, job_id: i64, success: bool, seconds: f64) -> PyResult<String> {
        let id = to_py(u64::try_from(job_id).map_err(|_| {
            KvoffError::UnknownJob(format!("job {job_id} was never submitted (ids are >= 0)"))
        }))?;
        let done = to_py(self.lock().complete(id, success, seconds))?;
        Ok(done.req_id.as_ref().to_owned())
    }

    fn request_finished(&self, req_id: &str) -> PyResult<()> {
        to_py(self.lock().request_finished(req_id))
    }

    /// `(finished_storing, finished_loading)` since the previous call.
    fn take_finished(&self) -> (Vec<String>, Vec<String>) {
        let f = self.lock().take_finished();
        let names = |v: Vec<std::sync::Arc<str>>| v.iter().map(|s| s.as_ref().to_owned()).collect();
        (names(f.storing), names(f.loading))
    }

    fn pending_jobs(&self, req_id: &str) -> Vec<u64> {
        self.lock().pending_jobs(req_id).to_vec()
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

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyJobTracker>()?;
    Ok(())
}
