//! `JobTracker` (docs/DESIGN.md, "Jobs"): one job is one transfer of one request in one direction. The tracker
//! allocates job ids, remembers what each job moves, records completions into the stats, and
//! says which requests have finished loading or storing.
//!
//! Semantics, shaped after how vLLM's offloading connector worker answers `get_finished()`
//! with `(finished_sending, finished_recving)` request ids:
//! - A request *finishes loading* when its last pending load job completes (success or not; the
//!   caller learns about failures from `complete`). If it later gets new load jobs it can finish
//!   loading again; it is reported once per `take_finished`.
//! - A request *finishes storing* once the engine has marked it finished (`request_finished`)
//!   and it has no pending store job: at the next `take_finished` if nothing is pending
//!   (including a request that never had a store job), otherwise when its last store job
//!   completes. It is reported exactly once. Pending loads do not hold it back.
//!   (vLLM's worker reports a finished request with no store jobs at all nowhere; here it is
//!   reported at once, so that the scheduler may free the blocks of every request it delayed
//!   without having to know whether the worker ever saw a store for it.)
//! - No job may be submitted for a request once it has been marked finished, and marking it
//!   twice is an error; a request is forgotten once it is finished and has nothing pending.
//! - A failed job is done: it releases its request like a successful one.
//!
//! Every error leaves the tracker exactly as it was.

use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::{HashMap, HashSet};

use crate::direction::Direction;
use crate::error::{KvoffError, Result};
use crate::stats::{check_transfer_bytes, duration_ns, StatsAccumulator};

#[derive(Debug, Clone)]
struct Job {
    req_id: Arc<str>,
    direction: Direction,
    blocks: u64,
    bytes: u64,
}

#[derive(Debug, Default)]
struct RequestState {
    /// Pending job ids in submission (= ascending) order.
    jobs: Vec<u64>,
    pending_stores: usize,
    pending_loads: usize,
    /// Marked finished by the engine.
    finished: bool,
}

impl RequestState {
    fn idle_and_finished(&self) -> bool {
        self.finished && self.jobs.is_empty()
    }
}

/// What a completed job was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedJob {
    pub req_id: Arc<str>,
    pub direction: Direction,
    pub blocks: u64,
    pub bytes: u64,
}

/// Requests that finished since the previous `take_finished`, in the order they finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finished {
    pub storing: Vec<Arc<str>>,
    pub loading: Vec<Arc<str>>,
}

#[derive(Default)]
pub struct JobTracker {
    next_job_id: u64,
    jobs: HashMap<u64, Job, RandomState>,
    requests: HashMap<Arc<str>, RequestState, RandomState>,
    finished: Finished,
    /// Requests already in `finished.loading`, so each is reported once per take.
    loading_reported: HashSet<Arc<str>, RandomState>,
    stats: Option<Arc<StatsAccumulator>>,
}

impl JobTracker {
    /// A tracker that records each completed job into `stats` when given one.
    #[must_use]
    pub fn new(stats: Option<Arc<StatsAccumulator>>) -> Self {
        Self {
            stats,
            ..Self::default()
        }
    }

    #[must_use]
    pub fn stats(&self) -> Option<&Arc<StatsAccumulator>> {
        self.stats.as_ref()
    }

    /// Registers a transfer of `blocks` blocks / `bytes` bytes for `req_id` and returns its job id
    /// (ids count up from 0 and are never reused). A size beyond one transfer's bound
    /// (`stats::MAX_TRANSFER_BYTES`) is refused here, not when the job completes.
    pub fn submit(
        &mut self,
        req_id: &str,
        direction: Direction,
        blocks: u64,
        bytes: u64,
    ) -> Result<u64> {
        check_transfer_bytes(bytes)?;
        if !direction.is_gpu() {
            return Err(KvoffError::InvalidArgument(format!(
                "the JobTracker tracks GPU transfers (\"GPU_to_CPU\", \"CPU_to_GPU\"), not {:?}; \
                 record remote-tier transfers with StatsAccumulator.record_transfer",
                direction.as_str()
            )));
        }
        if self.requests.get(req_id).is_some_and(|r| r.finished) {
            return Err(KvoffError::InvalidState(format!(
                "request {req_id:?} is already marked finished; no new jobs may be submitted for it"
            )));
        }
        let job_id = self.next_job_id;
        self.next_job_id += 1;
        let req = self.requests.entry_ref(req_id).or_default();
        req.jobs.push(job_id);
        if direction == Direction::GpuToCpu {
            req.pending_stores += 1;
        } else {
            req.pending_loads += 1;
        }
        let (key, _) = self.requests.get_key_value(req_id).expect("inserted above");
        self.jobs.insert(
            job_id,
            Job {
                req_id: Arc::clone(key),
                direction,
                blocks,
                bytes,
            },
        );
        Ok(job_id)
    }

    /// Completes `job_id`: records it into the stats (if any) and updates which requests
    /// finished. An unknown or already completed job, or a bad duration, changes nothing.
    pub fn complete(&mut self, job_id: u64, success: bool, seconds: f64) -> Result<CompletedJob> {
        if !self.jobs.contains_key(&job_id) {
            return Err(KvoffError::UnknownJob(if job_id < self.next_job_id {
                format!("job {job_id} has already completed")
            } else {
                format!(
                    "job {job_id} was never submitted (next job id is {})",
                    self.next_job_id
                )
            }));
        }
        let ns = duration_ns(seconds)?;
        let job = self.jobs.remove(&job_id).expect("checked above");
        if let Some(stats) = &self.stats {
            stats.record_transfer_ns(job.direction, job.bytes, job.blocks, ns, success);
        }
        let req = self
            .requests
            .get_mut(&job.req_id)
            .expect("a pending job's request is tracked");
        if let Some(pos) = req.jobs.iter().position(|&j| j == job_id) {
            req.jobs.remove(pos);
        }
        // submit() admits only the two GPU directions.
        if job.direction == Direction::GpuToCpu {
            req.pending_stores -= 1;
            if req.pending_stores == 0 && req.finished {
                self.finished.storing.push(Arc::clone(&job.req_id));
            }
        } else {
            req.pending_loads -= 1;
            if req.pending_loads == 0 && self.loading_reported.insert(Arc::clone(&job.req_id)) {
                self.finished.loading.push(Arc::clone(&job.req_id));
            }
        }
        if req.idle_and_finished() {
            self.requests.remove(&job.req_id);
        }
        Ok(CompletedJob {
            req_id: job.req_id,
            direction: job.direction,
            blocks: job.blocks,
            bytes: job.bytes,
        })
    }

    /// The engine finished `req_id`; it finishes storing once its store jobs are done.
    pub fn request_finished(&mut self, req_id: &str) -> Result<()> {
        let Some(req) = self.requests.get_mut(req_id) else {
            self.finished.storing.push(Arc::from(req_id));
            return Ok(());
        };
        if req.finished {
            return Err(KvoffError::InvalidState(format!(
                "request {req_id:?} is already marked finished"
            )));
        }
        req.finished = true;
        if req.pending_stores == 0 {
            let (key, req) = self.requests.get_key_value(req_id).expect("present");
            self.finished.storing.push(Arc::clone(key));
            if req.idle_and_finished() {
                self.requests.remove(req_id);
            }
        }
        Ok(())
    }

    /// Requests that finished storing and loading since the previous call.
    pub fn take_finished(&mut self) -> Finished {
        self.loading_reported.clear();
        std::mem::take(&mut self.finished)
    }

    /// Job ids still pending for `req_id`, ascending (empty for an unknown request).
    #[must_use]
    pub fn pending_jobs(&self, req_id: &str) -> &[u64] {
        self.requests.get(req_id).map_or(&[], |r| r.jobs.as_slice())
    }

    /// Number of jobs submitted and not yet completed.
    #[must_use]
    pub fn num_pending(&self) -> usize {
        self.jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORE: Direction = Direction::GpuToCpu;
    const LOAD: Direction = Direction::CpuToGpu;

    fn names(v: &[Arc<str>]) -> Vec<&str> {
        v.iter().map(AsRef::as_ref).collect()
    }

    #[test]
    fn storing_waits_for_finish_and_last_store() {
        let mut t = JobTracker::new(None);
        let a = t.submit("r1", STORE, 2, 200).expect("ok");
        let b = t.submit("r1", STORE, 1, 100).expect("ok");
        assert_eq!((a, b), (0, 1));
        assert_eq!(t.pending_jobs("r1"), &[0, 1]);
        t.complete(a, true, 0.1).expect("ok");
        t.request_finished("r1").expect("ok");
        assert_eq!(t.take_finished(), Finished::default());
        assert_eq!(t.pending_jobs("r1"), &[1]);
        t.complete(b, false, 0.1).expect("ok");
        let f = t.take_finished();
        assert_eq!((names(&f.storing), names(&f.loading)), (vec!["r1"], vec![]));
        assert_eq!(t.num_pending(), 0);
        assert!(t.requests.is_empty());
    }

    #[test]
    fn finished_without_pending_stores_is_reported_at_once() {
        let mut t = JobTracker::new(None);
        t.request_finished("never-stored").expect("ok");
        let s = t.submit("done-stores", STORE, 1, 1).expect("ok");
        t.complete(s, true, 0.0).expect("ok");
        t.request_finished("done-stores").expect("ok");
        let f = t.take_finished();
        assert_eq!(names(&f.storing), vec!["never-stored", "done-stores"]);
        assert!(t.requests.is_empty());
    }

    #[test]
    fn loading_finishes_with_last_load_once_per_take() {
        let mut t = JobTracker::new(None);
        let l1 = t.submit("r", LOAD, 1, 10).expect("ok");
        let l2 = t.submit("r", LOAD, 1, 10).expect("ok");
        t.complete(l1, true, 0.0).expect("ok");
        assert_eq!(t.take_finished(), Finished::default());
        t.complete(l2, true, 0.0).expect("ok");
        let l3 = t.submit("r", LOAD, 1, 10).expect("ok");
        t.complete(l3, true, 0.0).expect("ok");
        assert_eq!(names(&t.take_finished().loading), vec!["r"]);
        assert_eq!(t.take_finished(), Finished::default());
    }

    #[test]
    fn errors_change_nothing() {
        let acc = Arc::new(StatsAccumulator::new());
        let mut t = JobTracker::new(Some(Arc::clone(&acc)));
        let j = t.submit("r", STORE, 3, 300).expect("ok");
        assert!(matches!(
            t.complete(j, true, f64::NAN),
            Err(KvoffError::InvalidArgument(_))
        ));
        assert!(
            matches!(t.complete(j + 1, true, 0.1), Err(KvoffError::UnknownJob(m)) if m.contains("never submitted"))
        );
        assert_eq!(t.num_pending(), 1);
        assert!(acc.take().is_empty());
        t.complete(j, true, 0.5).expect("ok");
        assert!(
            matches!(t.complete(j, true, 0.1), Err(KvoffError::UnknownJob(m)) if m.contains("already completed"))
        );
        let s = acc.take();
        assert_eq!(s.direction(STORE).ops, 1);
        assert_eq!(s.direction(STORE).time_ns, 500_000_000);
        let k = t.submit("r", LOAD, 1, 1).expect("ok");
        t.request_finished("r").expect("ok");
        assert!(matches!(
            t.request_finished("r"),
            Err(KvoffError::InvalidState(_))
        ));
        assert!(matches!(
            t.submit("r", STORE, 1, 1),
            Err(KvoffError::InvalidState(_))
        ));
        assert_eq!(t.pending_jobs("r"), &[k]);
        assert_eq!(t.next_job_id, k + 1);
    }

    #[test]
    fn absurd_sizes_and_durations_are_refused() {
        let acc = Arc::new(StatsAccumulator::new());
        let mut t = JobTracker::new(Some(Arc::clone(&acc)));
        let e = t
            .submit("r", STORE, 1, (1 << 50) + 1)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            e,
            "num_bytes must be at most 2^50 (1 PiB) for one transfer, got 1125899906842625"
        );
        assert_eq!((t.num_pending(), t.next_job_id), (0, 0));
        let j = t.submit("r", STORE, 1, 1 << 50).expect("on the bound");
        assert!(matches!(
            t.complete(j, true, 86_400.5),
            Err(KvoffError::InvalidArgument(m)) if m.contains("at most 86400 seconds")
        ));
        assert_eq!(t.pending_jobs("r"), &[j]);
        assert!(acc.take().is_empty());
    }
}
