//! The steering core: regions, pools and endpoints, and the chain of small
//! steps that turns (candidates, client, health) into the endpoints a
//! service answers.
//!
//! This module is pure: it reads no config, opens no socket, spawns no task
//! and knows nothing of the server around it (a test reads its `use` lines
//! to keep it so). The config is compiled into these types by
//! `snapshot::steering`; health reaches it as a [`HealthView`] indexed like
//! the topology's endpoints.
//!
//! Every step is a pure function of its inputs, defined in one file of
//! [`steps`]; when a [`Trace`] is passed it also records why each candidate
//! was kept or dropped, so `explain` runs the very code that answers
//! queries. On the query path no trace is kept and all working memory lives
//! in a reusable [`Scratch`]: deciding allocates nothing.

pub mod hash;
pub mod health;
pub mod run;
pub mod scratch;
pub mod service;
pub mod steps;
pub mod topology;
pub mod trace;

pub use health::{
    AdminState, EndpointHealth, Epoch, HealthView, RegionLoad, Share, ShareWhy, VantageRtt,
};
pub use run::{decide, decide_from, location_order};
pub use scratch::Scratch;
pub use service::{AllDown, Answer, Decision, Service};
pub use steps::capacity::Capacity as CapacityStep;
pub use steps::geo::{GeoMap, GeoMatch};
pub use steps::latency::Latency;
pub use steps::weighted::{mix64, WeightedMode};
pub use steps::{Stage, Step};
pub use topology::{
    fnv1a, Capacity, Client, Endpoint, Family, Group, Pool, Region, Target, Topology,
};
pub use trace::{Dropped, StepTrace, Trace};
