//! `geolb lab`: the three-region lab on one machine (`deploy/lab/`). The
//! lab file names the geolb config every process reads and the DNS nodes;
//! `plan` turns both into the processes — backends, a tier node and a
//! prober per region, the DNS nodes —, `run` starts them (each role once
//! the one before is ready, every PID in a pid file), stops exactly those
//! (checked against `/proc/PID/cmdline`), reports their state and runs the
//! lab's drill; `backend` is the lab's HTTP backend (`geolb lab backend`).

pub mod backend;
pub mod plan;
pub mod run;
