//! `JobSet` and [`JobOwner`]: an importer's jobs, keyed by what they are for, and the one
//! route from the loop to them.
//!
//! Two kinds of events concern a job: curl finished its transfer (reported by the glue
//! with the transfer's token) and the job's worker woke the loop (its eventfd). Both are
//! routed the same way: from the token to the job's key in the owner's set, to the job,
//! and, if the job just completed, to [`JobOwner::on_job_done`]. The C code compares job
//! pointers (`if (j == i->images_job)`); here the set maps tokens to keys the importer
//! chooses (an enum such as `JobKind::Tags`, or a layer index).
//!
//! `curl_glue` lies below this module and knows only its own [`CurlHost`]; every
//! `JobOwner` is one, by the blanket impl here, so an owner implements `JobOwner` alone.

use super::ImportJob;
use crate::curl_glue::{CurlGlue, CurlHost};
use crate::event::EventLoop;
use crate::util::error::Result;

/// The loop's data when it runs jobs (every importer): the one routing trait. It lends
/// out its glue and job set, and hears which job completed.
pub trait JobOwner: Sized + 'static {
    type Key: Copy + Eq;
    /// The glue and the jobs, borrowed together.
    fn glue_and_jobs(&mut self) -> (&mut CurlGlue, &mut JobSet<Self::Key>);
    /// The job under `key` has just completed (done or failed). Not called for jobs the
    /// owner cancelled.
    fn on_job_done(&mut self, lp: &mut EventLoop<Self>, key: Self::Key);
}

impl<T: JobOwner> CurlHost for T {
    fn glue(&mut self) -> &mut CurlGlue {
        self.glue_and_jobs().0
    }

    fn on_transfer_done(
        &mut self,
        lp: &mut EventLoop<Self>,
        token: usize,
        result: std::result::Result<(), curl::Error>,
    ) {
        let (glue, jobs) = self.glue_and_jobs();
        if let Some(key) = jobs.on_curl_done(lp, glue, token, result) {
            self.on_job_done(lp, key);
        }
    }
}

/// The worker of the job with this token woke the loop (the callback of the io source
/// [`ImportJob::begin`] adds).
pub(super) fn on_worker_wake<D: JobOwner>(lp: &mut EventLoop<D>, owner: &mut D, token: usize) {
    let (glue, jobs) = owner.glue_and_jobs();
    if let Some(key) = jobs.on_wake(lp, glue, token) {
        owner.on_job_done(lp, key);
    }
}

/// Jobs by key. Keys are unique; inserting a key again replaces (and drops) the old job.
pub struct JobSet<K> {
    jobs: Vec<(K, ImportJob)>,
}

impl<K> Default for JobSet<K> {
    fn default() -> Self {
        JobSet { jobs: Vec::new() }
    }
}

impl<K: Copy + Eq> JobSet<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `job` under `key` and begin it.
    pub fn begin<D: JobOwner>(
        &mut self,
        lp: &mut EventLoop<D>,
        glue: &mut CurlGlue,
        key: K,
        mut job: ImportJob,
    ) -> Result<()> {
        self.remove(key);
        job.begin(lp, glue)?;
        self.jobs.push((key, job));
        Ok(())
    }

    pub fn get(&self, key: K) -> Option<&ImportJob> {
        self.jobs.iter().find(|(k, _)| *k == key).map(|(_, j)| j)
    }

    pub fn get_mut(&mut self, key: K) -> Option<&mut ImportJob> {
        self.jobs
            .iter_mut()
            .find(|(k, _)| *k == key)
            .map(|(_, j)| j)
    }

    /// Remove and return the job under `key` (dropping it stops and joins its worker).
    pub fn remove(&mut self, key: K) -> Option<ImportJob> {
        let i = self.jobs.iter().position(|(k, _)| *k == key)?;
        Some(self.jobs.remove(i).1)
    }

    pub fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.jobs.iter().map(|(k, _)| *k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (K, &ImportJob)> + '_ {
        self.jobs.iter().map(|(k, j)| (*k, j))
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Bytes the jobs received (as served), and the bytes they will have received: a
    /// complete job's count, a running one's `Content-Length`; `None` while a running
    /// job's length is unknown. For the extended progress fields.
    pub fn bytes(&self) -> (u64, Option<u64>) {
        let mut done = 0u64;
        let mut total = Some(0u64);
        for (_, job) in &self.jobs {
            let written = job.written_compressed();
            done = done.saturating_add(written);
            let expected = if job.is_complete() {
                Some(written)
            } else {
                job.content_length().map(|l| l.max(written))
            };
            total = total.zip(expected).map(|(t, e)| t.saturating_add(e));
        }
        (done, total)
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    fn key_of(&self, token: usize) -> Option<K> {
        self.jobs
            .iter()
            .find(|(_, j)| j.token() == Some(token))
            .map(|(k, _)| *k)
    }

    /// Route a curl completion. Returns the key of the job if it just became complete.
    fn on_curl_done<D: JobOwner>(
        &mut self,
        lp: &mut EventLoop<D>,
        glue: &mut CurlGlue,
        token: usize,
        result: std::result::Result<(), curl::Error>,
    ) -> Option<K> {
        let key = self.key_of(token)?;
        let job = self.get_mut(key)?;
        job.on_curl_done(lp, glue, result).then_some(key)
    }

    /// Route a worker wake-up. Returns the key of the job if it just became complete.
    fn on_wake<D: JobOwner>(
        &mut self,
        lp: &mut EventLoop<D>,
        glue: &mut CurlGlue,
        token: usize,
    ) -> Option<K> {
        let key = self.key_of(token)?;
        let job = self.get_mut(key)?;
        job.on_wake(lp, glue).then_some(key)
    }

    /// Cancel every job that is still running (e.g. one job failed and the pull is over).
    pub fn cancel_all<D: JobOwner>(&mut self, lp: &mut EventLoop<D>, glue: &mut CurlGlue) {
        for (_, job) in self.jobs.iter_mut() {
            if !job.is_complete() {
                job.cancel(lp, glue);
            }
        }
    }
}
