//! The steps a chain is made of, one file each. A step's file holds all of
//! it: its name, its [`Stage`] (which fixes where it may stand in a chain
//! and whether compiled geo can precompute it), its parameters with their
//! checks, and the code that runs for a query, for `explain` (with a
//! [`Note`]) and for the compiled-geo order.
//!
//! Adding a step: a file here implementing [`StepKind`], and one line in the
//! `steps!` list below. The config compiler (`snapshot::steering`) builds
//! it from its table in the service config.

use super::scratch::{Run, Scratch};
use super::trace::Note;

pub mod capacity;
pub mod failover;
pub mod first_n;
pub mod geo;
pub mod healthy;
pub mod latency;
pub mod nearest;
pub mod weighted;

/// What kind of decision a step makes. Chains must keep the order
/// `Location`/`Groups` before `Endpoints`: steps that order or choose
/// groups run before the steps that pick endpoints, or they could empty the
/// answer. `Filter` steps may stand anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Drops candidates that cannot take traffic (`healthy`).
    Filter,
    /// Orders or chooses groups by the client's location alone; compiled
    /// geo precomputes these per address range.
    Location,
    /// Chooses or reorders groups by their state (`capacity`, `failover`).
    Groups,
    /// Picks endpoints (`weighted`, `first_n`).
    Endpoints,
}

/// One kind of step.
pub(crate) trait StepKind {
    /// The name a chain lists it by.
    const NAME: &'static str;
    const STAGE: Stage;

    /// Runs the step for a query. Location steps need not implement it:
    /// the default runs [`order`](Self::order) and widens the scope.
    fn run(&self, r: &Run<'_>, sc: &mut Scratch, note: Option<&mut Note>) {
        let scope = self.order(r, sc, note);
        sc.scope = sc.scope.max(scope);
    }

    /// Location steps: reorders or replaces `sc.groups` for the client's
    /// location; returns the prefix of the client address it depended on.
    fn order(&self, _r: &Run<'_>, _sc: &mut Scratch, _note: Option<&mut Note>) -> u8 {
        0
    }

    /// Location steps: whether the decision depends on nothing but the
    /// client's address and what the databases say about it (City record,
    /// AS number), so it can be compiled per address range. Steps that read
    /// data that changes while serving (measured RTTs) say no.
    fn compilable(&self) -> bool {
        true
    }
}

macro_rules! steps {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        /// One step of a chain.
        #[derive(Debug, Clone)]
        pub enum Step {
            $($variant($ty)),*
        }

        impl Step {
            /// Every step's name, in registration order.
            pub const NAMES: &'static [&'static str] = &[$(<$ty as StepKind>::NAME),*];

            pub fn name(&self) -> &'static str {
                match self {
                    $(Step::$variant(_) => <$ty as StepKind>::NAME),*
                }
            }

            pub fn stage(&self) -> Stage {
                match self {
                    $(Step::$variant(_) => <$ty as StepKind>::STAGE),*
                }
            }

            /// The stage of the step called `name`, if there is one.
            pub fn stage_of(name: &str) -> Option<Stage> {
                $(if name == <$ty as StepKind>::NAME {
                    return Some(<$ty as StepKind>::STAGE);
                })*
                None
            }

            /// See [`StepKind::compilable`].
            pub fn compilable(&self) -> bool {
                match self {
                    $(Step::$variant(s) => s.compilable()),*
                }
            }

            pub(crate) fn run(&self, r: &Run<'_>, sc: &mut Scratch, note: Option<&mut Note>) {
                match self {
                    $(Step::$variant(s) => s.run(r, sc, note)),*
                }
            }
        }
    };
}

steps! {
    Healthy(healthy::Healthy),
    Geo(geo::GeoMap),
    Nearest(nearest::Nearest),
    Latency(latency::Latency),
    Capacity(capacity::Capacity),
    Failover(failover::Failover),
    Weighted(weighted::Weighted),
    FirstN(first_n::FirstN),
}
