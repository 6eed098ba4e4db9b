//! `first_n`: at most N endpoints, in the order the steps before it left.

use super::{Stage, StepKind};
use crate::policy::scratch::{Run, Scratch};
use crate::policy::trace::Note;

#[derive(Debug, Clone)]
pub struct FirstN(pub usize);

impl FirstN {
    pub fn new(n: usize) -> Result<FirstN, String> {
        if n == 0 {
            return Err("first_n must be at least 1".into());
        }
        Ok(FirstN(n))
    }
}

impl StepKind for FirstN {
    const NAME: &'static str = "first_n";
    const STAGE: Stage = Stage::Endpoints;

    fn run(&self, r: &Run<'_>, sc: &mut Scratch, note: Option<&mut Note>) {
        let n = self.0;
        if !sc.explicit {
            sc.flatten(r);
        }
        if let Some(note) = note {
            for &e in sc.out.iter().skip(n) {
                note.drop(r.ep_label(e), format!("beyond the first {n}"));
            }
            note.detail = format!("at most {n} endpoints");
        }
        sc.out.truncate(n);
    }
}
