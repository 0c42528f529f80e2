//! Pure: which chained jobs run when a run ends.
//!
//! A job may follow a parent job (`after`). Each time a run of the parent ends, the child gets
//! a run: a real one if the parent succeeded (or the child runs `always`), otherwise a
//! `skipped` one whose reason names the parent's failure. A skipped child's own children are
//! skipped in turn, so nothing down a chain ever waits for a run that will not come.

use std::collections::{HashMap, HashSet};

use faro_shared::domain::{JobId, RunStatus};
pub use faro_shared::messages::RunIf;
use faro_shared::messages::RunMessage;
use uuid::Uuid;

use crate::timetable::JobDef;

/// A chained job: what runs, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub def: JobDef,
    pub run_if: RunIf,
}

/// Parent job -> its chained jobs.
#[derive(Debug, Default)]
pub struct Chains {
    children: HashMap<JobId, Vec<Child>>,
    parent_of: HashMap<JobId, JobId>,
}

/// A run to record for a child.
#[derive(Debug, Clone, PartialEq)]
pub struct Triggered {
    pub child: Child,
    pub run_id: Uuid,
    pub parent_run: Uuid,
    /// `None`: it runs; `Some(reason)`: it is recorded as skipped.
    pub skip: Option<String>,
}

impl Triggered {
    /// The run as it is recorded and, unless skipped, published: the child's template with
    /// this run's id, attempt 1.
    pub fn run(&self) -> RunMessage {
        let mut run = self.child.def.template.clone();
        run.run_id = self.run_id;
        run.attempt = 1;
        run
    }
}

/// A run that just ended, as chains see it.
#[derive(Debug, Clone)]
pub struct Ended<'a> {
    pub job: &'a JobId,
    pub run: Uuid,
    pub status: RunStatus,
    pub error: Option<&'a str>,
}

/// Why a chain definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {job} after {parent} would make a cycle: {path}")]
pub struct CycleError {
    pub job: JobId,
    pub parent: JobId,
    pub path: String,
}

impl Chains {
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    pub fn has_children(&self, job: &JobId) -> bool {
        self.children.contains_key(job)
    }

    /// Checks that adding `job after parent` for each pair makes no cycle.
    pub fn check(&self, edges: &[(JobId, JobId)]) -> Result<(), CycleError> {
        let mut parent_of = self.parent_of.clone();
        for (job, parent) in edges {
            parent_of.insert(job.clone(), parent.clone());
        }
        for (job, parent) in edges {
            let mut path = vec![job.to_string()];
            let mut seen = HashSet::new();
            let mut at = Some(parent);
            while let Some(current) = at {
                path.push(current.to_string());
                if current == job || !seen.insert(current.clone()) {
                    return Err(CycleError {
                        job: job.clone(),
                        parent: parent.clone(),
                        path: path.join(" after "),
                    });
                }
                at = parent_of.get(current);
            }
        }
        Ok(())
    }

    /// Adds or replaces a chained job (call [`Chains::check`] first).
    pub fn define(&mut self, parent: JobId, child: Child) {
        let id = child.def.id().clone();
        self.remove(&id);
        self.parent_of.insert(id, parent.clone());
        self.children.entry(parent).or_default().push(child);
    }

    /// Removes a job from any chain it follows.
    pub fn remove(&mut self, job: &JobId) {
        if let Some(parent) = self.parent_of.remove(job) {
            if let Some(children) = self.children.get_mut(&parent) {
                children.retain(|c| c.def.id() != job);
                if children.is_empty() {
                    self.children.remove(&parent);
                }
            }
        }
    }

    /// The runs that the ends of `ended` trigger, down every chain. `new_id` makes run ids.
    pub fn triggered(
        &self,
        ended: &[Ended<'_>],
        mut new_id: impl FnMut() -> Uuid,
    ) -> Vec<Triggered> {
        let mut out = Vec::new();
        let mut frontier: Vec<(JobId, Uuid, RunStatus, Option<String>)> = ended
            .iter()
            .filter(|e| self.has_children(e.job))
            .map(|e| (e.job.clone(), e.run, e.status, e.error.map(str::to_owned)))
            .collect();
        // Chains are acyclic (checked at definition); the bound is a second guard.
        let mut depth = 0;
        while !frontier.is_empty() && depth < 64 {
            depth += 1;
            let mut next = Vec::new();
            for (job, run, status, error) in frontier {
                for child in self.children.get(&job).into_iter().flatten() {
                    let runs = status == RunStatus::Succeeded || child.run_if == RunIf::Always;
                    let skip = (!runs).then(|| {
                        let why = error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default();
                        format!("skipped: parent job {job} run {run} ended {status}{why}")
                    });
                    let run_id = new_id();
                    if let Some(reason) = &skip {
                        next.push((
                            child.def.id().clone(),
                            run_id,
                            RunStatus::Skipped,
                            Some(reason.clone()),
                        ));
                    }
                    out.push(Triggered {
                        child: child.clone(),
                        run_id,
                        parent_run: run,
                        skip,
                    });
                }
            }
            frontier = next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(name: &str, run_if: RunIf) -> Child {
        Child {
            def: crate::fixtures::def(name, 0),
            run_if,
        }
    }

    fn id(s: &str) -> JobId {
        JobId::parse(s).unwrap()
    }

    fn chain() -> Chains {
        // discovery -> descriptions -> optical; discovery -> report (always)
        let mut c = Chains::default();
        c.define(id("discovery"), child("descriptions", RunIf::Success));
        c.define(id("descriptions"), child("optical", RunIf::Success));
        c.define(id("discovery"), child("report", RunIf::Always));
        c
    }

    #[test]
    fn a_success_triggers_the_next_link_only() {
        let c = chain();
        let run = Uuid::new_v4();
        let t = c.triggered(
            &[Ended {
                job: &id("discovery"),
                run,
                status: RunStatus::Succeeded,
                error: None,
            }],
            Uuid::new_v4,
        );
        let names: Vec<_> = t.iter().map(|t| t.child.def.id().to_string()).collect();
        assert_eq!(names, ["descriptions", "report"]);
        assert!(t.iter().all(|t| t.skip.is_none() && t.parent_run == run));
    }

    #[test]
    fn a_failure_skips_down_the_whole_chain_with_the_reason() {
        let c = chain();
        let run = Uuid::new_v4();
        let t = c.triggered(
            &[Ended {
                job: &id("discovery"),
                run,
                status: RunStatus::Failed,
                error: Some("timeout on olt-3"),
            }],
            Uuid::new_v4,
        );
        let by_name: HashMap<_, _> = t
            .iter()
            .map(|t| (t.child.def.id().to_string(), t))
            .collect();
        assert_eq!(by_name.len(), 3);
        let descriptions = by_name["descriptions"];
        let reason = descriptions.skip.as_deref().unwrap();
        assert!(
            reason.contains("discovery")
                && reason.contains("failed")
                && reason.contains("timeout on olt-3"),
            "{reason}"
        );
        // The next link is skipped because its parent was skipped, and points at that run.
        let optical = by_name["optical"];
        assert!(optical.skip.as_deref().unwrap().contains("skipped"));
        assert_eq!(optical.parent_run, descriptions.run_id);
        // `always` runs regardless.
        assert!(by_name["report"].skip.is_none());
    }

    #[test]
    fn cycles_are_refused() {
        let c = chain();
        let err = c.check(&[(id("discovery"), id("optical"))]).unwrap_err();
        assert!(
            err.path
                .contains("discovery after optical after descriptions after discovery"),
            "{}",
            err.path
        );
        assert!(c.check(&[(id("self"), id("self"))]).is_err());
        assert!(c.check(&[(id("new"), id("optical"))]).is_ok());
        let mut c = c;
        c.remove(&id("descriptions"));
        assert!(c.check(&[(id("discovery"), id("optical"))]).is_ok());
    }

    #[test]
    fn jobs_without_children_trigger_nothing() {
        let c = chain();
        assert!(c
            .triggered(
                &[Ended {
                    job: &id("optical"),
                    run: Uuid::new_v4(),
                    status: RunStatus::Succeeded,
                    error: None
                }],
                Uuid::new_v4,
            )
            .is_empty());
    }
}
