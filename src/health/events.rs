//! The health service's recent history: a bounded ring of what changed —
//! operators' overrides set, expired or removed, and each new health epoch
//! with the endpoints it took down or brought up — for the status page's
//! drill timeline (`/v1/health` `events`).
//!
//! It holds the last [`CAPACITY`] events; each names at most
//! [`MAX_NAMES`] endpoints per direction (the rest counted), so a region
//! drain of a thousand endpoints is one bounded event. Every event has a
//! number that increases by one, so a reader polling the ring sees what it
//! missed (a gap in the numbers: more happened than the ring holds).

use std::collections::VecDeque;

use serde::Serialize;

use super::Override;
use crate::policy::{AdminState, EndpointHealth};

/// Events kept.
pub const CAPACITY: usize = 64;
/// Endpoints named per direction in one epoch event.
pub const MAX_NAMES: usize = 16;

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    /// An operator set an override (or replaced one on the same target).
    OverrideSet {
        target: String,
        state: AdminState,
        until: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        only: Option<String>,
    },
    /// An operator removed an override before it expired (undrain, force
    /// none).
    OverrideRemoved {
        target: String,
        state: AdminState,
        until: Option<f64>,
        set_at: f64,
    },
    /// An override reached its expiry and was reverted.
    OverrideExpired {
        target: String,
        state: AdminState,
        until: Option<f64>,
        set_at: f64,
    },
    /// A new health epoch (its consensus id changed): the endpoints and
    /// tier backends it took down and brought up.
    Epoch {
        id: String,
        previous: String,
        down: Vec<String>,
        up: Vec<String>,
        /// Endpoints beyond [`MAX_NAMES`] per direction, not named.
        more_down: usize,
        more_up: usize,
    },
}

/// One entry of the ring.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// 1 for the first event of the process, +1 for each after.
    pub n: u64,
    /// Unix seconds.
    pub at: f64,
    /// The health epoch's local sequence number in force after it (for an
    /// override, the state published with it).
    pub seq: u64,
    #[serde(flatten)]
    pub what: What,
}

/// The ring itself.
#[derive(Debug, Default)]
pub struct Events {
    ring: VecDeque<Event>,
    next: u64,
}

impl Events {
    pub fn push(&mut self, at: f64, seq: u64, what: What) {
        if self.ring.len() == CAPACITY {
            self.ring.pop_front();
        }
        self.next += 1;
        self.ring.push_back(Event {
            n: self.next,
            at,
            seq,
            what,
        });
    }

    /// Oldest first.
    pub fn list(&self) -> Vec<Event> {
        self.ring.iter().cloned().collect()
    }

    /// Sets the sequence number of the events pushed since the last
    /// publication (`seq` 0) to the state now published.
    pub fn stamp(&mut self, seq: u64) {
        for e in self.ring.iter_mut().rev().take_while(|e| e.seq == 0) {
            e.seq = seq;
        }
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

/// An override's event when it is removed or expires.
pub fn ended(o: &Override, expired: bool) -> What {
    let (target, state, until, set_at) = (o.target.clone(), o.state, o.until, o.set_at);
    if expired {
        What::OverrideExpired {
            target,
            state,
            until,
            set_at,
        }
    } else {
        What::OverrideRemoved {
            target,
            state,
            until,
            set_at,
        }
    }
}

/// The epoch event between two states' endpoint verdicts: which went down
/// and which came up (by identity, sorted; an identity missing from a state
/// is up there, as `HealthState::get` has it).
pub fn epoch_change<'a>(
    id: String,
    previous: String,
    before: impl Fn(&str) -> EndpointHealth,
    after: impl Fn(&str) -> EndpointHealth,
    identities: impl Iterator<Item = &'a str>,
) -> What {
    let mut down = Vec::new();
    let mut up = Vec::new();
    for id in identities {
        match (before(id).up(), after(id).up()) {
            (true, false) => down.push(id.to_string()),
            (false, true) => up.push(id.to_string()),
            _ => {}
        }
    }
    down.sort_unstable();
    down.dedup();
    up.sort_unstable();
    up.dedup();
    let more_down = down.len().saturating_sub(MAX_NAMES);
    let more_up = up.len().saturating_sub(MAX_NAMES);
    down.truncate(MAX_NAMES);
    up.truncate(MAX_NAMES);
    What::Epoch {
        id,
        previous,
        down,
        up,
        more_down,
        more_up,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(target: &str) -> What {
        What::OverrideSet {
            target: target.into(),
            state: AdminState::Drain,
            until: Some(10.0),
            only: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_numbers_every_event() {
        let mut r = Events::default();
        for i in 0..(CAPACITY + 10) {
            r.push(i as f64, 0, set(&format!("t{i}")));
        }
        let l = r.list();
        assert_eq!(l.len(), CAPACITY);
        assert_eq!(l[0].n, 11, "the ten oldest are gone");
        assert_eq!(l[CAPACITY - 1].n, (CAPACITY + 10) as u64);
        assert!(l.windows(2).all(|w| w[1].n == w[0].n + 1));
        // Stamping reaches back only over the unstamped ones.
        r.stamp(5);
        r.push(100.0, 0, set("late"));
        r.stamp(6);
        let l = r.list();
        assert_eq!(l[CAPACITY - 1].seq, 6);
        assert_eq!(l[CAPACITY - 2].seq, 5);
        assert!(l.iter().all(|e| e.seq == 5 || e.seq == 6));
    }

    #[test]
    fn an_epoch_event_names_what_went_down_and_up_bounded() {
        let down = EndpointHealth {
            checked_up: false,
            ..Default::default()
        };
        let drained = EndpointHealth {
            admin: AdminState::Drain,
            ..Default::default()
        };
        let ids: Vec<String> = (0..40).map(|i| format!("p/10.0.0.{i:02}")).collect();
        // Before: 0 down. After: 0 up, 1..=30 drained, the rest as before.
        let before = |id: &str| {
            if id == ids[0] {
                down
            } else {
                Default::default()
            }
        };
        let after = |id: &str| {
            let i: usize = id
                .rsplit('.')
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            if (1..=30).contains(&i) {
                drained
            } else {
                Default::default()
            }
        };
        let w = epoch_change(
            "b".into(),
            "a".into(),
            before,
            after,
            ids.iter().map(String::as_str),
        );
        let What::Epoch {
            down,
            up,
            more_down,
            more_up,
            ..
        } = w
        else {
            panic!("not an epoch event");
        };
        assert_eq!(up, ["p/10.0.0.00"]);
        assert_eq!(more_up, 0);
        assert_eq!(down.len(), MAX_NAMES);
        assert_eq!(down[0], "p/10.0.0.01");
        assert_eq!(more_down, 30 - MAX_NAMES);
        let json = serde_json::to_value(Event {
            n: 1,
            at: 0.0,
            seq: 2,
            what: set("eu"),
        })
        .unwrap_or_default();
        assert_eq!(json["kind"], "override_set");
        assert_eq!(json["target"], "eu");
        assert_eq!(json["state"], "drain");
    }
}
