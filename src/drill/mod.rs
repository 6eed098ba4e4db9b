//! `geolb drill`: a failover drill against live nodes that reports what
//! moved — per node and client subnet, the time until answers left the
//! target, and, from the nodes' resolver telemetry, which resolvers moved,
//! when, and which re-asked late or not at all.
//!
//! `scenario` reads and validates the TOML; `run` acts through the admin
//! APIs and probes over DNS; `analyse` turns observations into convergence
//! figures (pure); `headroom` judges whether the other regions can take
//! the target's load (pure); `markdown` renders the report, `svg` its
//! timeline as a picture.

pub mod analyse;
pub mod headroom;
pub mod markdown;
pub mod run;
pub mod scenario;
pub mod shadow;
pub mod svg;
