//! The record of a decision, for `explain`: what each step kept, what it
//! dropped and why. Only filled when asked for; the query path passes none.

use serde::Serialize;

/// A candidate dropped by a step, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Dropped {
    pub candidate: String,
    pub why: String,
}

/// What one step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepTrace {
    pub step: String,
    pub detail: String,
    pub kept: Vec<String>,
    pub dropped: Vec<Dropped>,
}

/// The record of a decision, for `explain`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Trace {
    pub steps: Vec<StepTrace>,
    pub notes: Vec<String>,
}

/// What a step says about itself while it runs with a trace.
#[derive(Debug, Default)]
pub struct Note {
    pub detail: String,
    pub dropped: Vec<Dropped>,
}

impl Note {
    pub fn drop(&mut self, candidate: String, why: impl Into<String>) {
        self.dropped.push(Dropped {
            candidate,
            why: why.into(),
        });
    }
}
