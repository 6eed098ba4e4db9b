//! The consensus epoch id: a name for a health state that every node
//! deciding from the same observations computes alike, so that two DNS
//! nodes polling the same probers can be compared from outside (status,
//! metrics, NSID, explain).
//!
//! What goes in, per endpoint identity (in identity order): its verdict —
//! the result of the vote and the operator's admin state — and the votes
//! of the remote vantages that counted in it (fresh and configured), in
//! vantage-name order, each as "up" or "down". That is what decides
//! answers, and what two nodes polling the same probers both see.
//!
//! What stays out, because it differs between nodes or moves every round
//! without changing a verdict:
//! - when a vote was received or polled, and whether a node polled first;
//! - this node's own vote: each node has its own (usually under the same
//!   vantage name), so it would part nodes whose verdicts agree; it reaches
//!   the id through the verdict when it tips one;
//! - RTTs and their smoothing (they change with every check; `latency =
//!   { probes = true }` can reorder regions inside one epoch);
//! - override expiry and set times (the same drain set on two nodes a
//!   second apart must not part them; its expiry changes the verdict, and
//!   so the id, when it comes);
//! - the time stamps probers put on their votes (they are the ordering
//!   hint, [`Epoch::since`](crate::policy::Epoch::since), not the state).
//!
//! The hash is SipHash-2-4 under a fixed key, over an explicit byte
//! encoding (big-endian lengths before strings, one byte per flag): the
//! same in every process, on every machine, and across versions until
//! [`FORMAT`] changes.

use std::collections::BTreeMap;
use std::hash::Hasher;

use siphasher::sip::SipHasher24;

use crate::policy::{AdminState, EndpointHealth};

/// Version of the encoding below; a change of what is hashed bumps it.
pub const FORMAT: u8 = 1;

/// The fixed key ("geolb-epoch/v1\0\0"): not a secret, only a constant.
const KEY: (u64, u64) = (0x6765_6f6c_622d_6570, 0x6f63_682f_7631_0000);

/// One endpoint's part of the id.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<'a> {
    pub health: EndpointHealth,
    /// `(vantage, says up)` of each remote vote that counted, any order.
    pub votes: Vec<(&'a str, bool)>,
}

fn admin_code(a: AdminState) -> u8 {
    match a {
        AdminState::None => 0,
        AdminState::Drain => 1,
        AdminState::ForceUp => 2,
        AdminState::ForceDown => 3,
    }
}

fn put_str(h: &mut SipHasher24, s: &str) {
    h.write(&(s.len() as u32).to_be_bytes());
    h.write(s.as_bytes());
}

/// The consensus id of a health state: `entries` by endpoint identity.
pub fn consensus_id(entries: &BTreeMap<&str, Entry<'_>>) -> u64 {
    let mut h = SipHasher24::new_with_keys(KEY.0, KEY.1);
    h.write(&[FORMAT]);
    h.write(&(entries.len() as u32).to_be_bytes());
    let mut votes = Vec::new();
    for (identity, e) in entries {
        put_str(&mut h, identity);
        if e.health.partial > 0 {
            // A partial drain: its own code and share (states without one
            // hash as before, so nodes of earlier versions agree).
            h.write(&[u8::from(e.health.checked_up), 4]);
            h.write(&e.health.partial.to_be_bytes());
        } else {
            h.write(&[u8::from(e.health.checked_up), admin_code(e.health.admin)]);
        }
        votes.clear();
        votes.extend_from_slice(&e.votes);
        votes.sort_unstable();
        votes.dedup_by(|a, b| a.0 == b.0);
        h.write(&(votes.len() as u32).to_be_bytes());
        for (vantage, up) in &votes {
            put_str(&mut h, vantage);
            h.write(&[u8::from(*up)]);
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        checked_up: bool,
        admin: AdminState,
        votes: &[(&'static str, bool)],
    ) -> Entry<'static> {
        Entry {
            health: EndpointHealth {
                checked_up,
                admin,
                capacity_low: false,
                partial: 0,
            },
            votes: votes.to_vec(),
        }
    }

    fn state(list: &[(&'static str, Entry<'static>)]) -> BTreeMap<&'static str, Entry<'static>> {
        list.iter().cloned().collect()
    }

    type List = Vec<(&'static str, Entry<'static>)>;

    fn sample() -> List {
        vec![
            (
                "eu-web/10.1.0.1",
                entry(
                    false,
                    AdminState::None,
                    &[("ams", false), ("fra", false), ("nyc", true)],
                ),
            ),
            (
                "eu-web/10.1.0.2",
                entry(true, AdminState::None, &[("ams", true), ("fra", true)]),
            ),
            ("us-web/10.2.0.1", entry(true, AdminState::Drain, &[])),
        ]
    }

    #[test]
    fn the_id_does_not_depend_on_the_order_endpoints_or_votes_arrive_in() {
        let a = consensus_id(&state(&sample()));
        let mut reversed = sample();
        reversed.reverse();
        for (_, e) in reversed.iter_mut() {
            e.votes.reverse();
        }
        assert_eq!(consensus_id(&state(&reversed)), a);
    }

    #[test]
    fn the_id_changes_with_a_verdict_a_vote_an_override_or_an_endpoint() {
        let base = consensus_id(&state(&sample()));
        let changed = |f: &dyn Fn(&mut List)| {
            let mut s = sample();
            f(&mut s);
            consensus_id(&state(&s))
        };
        let variants = [
            changed(&|s| s[1].1.health.checked_up = false),
            changed(&|s| s[2].1.health.admin = AdminState::None),
            changed(&|s| s[2].1.health.admin = AdminState::ForceDown),
            changed(&|s| s[2].1.health.partial = 5000),
            changed(&|s| s[0].1.votes[2].1 = false),
            changed(&|s| {
                s[1].1.votes.pop();
            }),
            changed(&|s| {
                s.pop();
            }),
            changed(&|s| s[0].0 = "eu-web/10.1.0.9"),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(*v, base, "variant {i}");
        }
        let distinct: std::collections::BTreeSet<u64> = variants.iter().copied().collect();
        assert_eq!(distinct.len(), variants.len());
    }

    #[test]
    fn strings_are_delimited_so_names_cannot_run_into_each_other() {
        let a = state(&[("ab", entry(true, AdminState::None, &[("c", true)]))]);
        let b = state(&[("a", entry(true, AdminState::None, &[("bc", true)]))]);
        assert_ne!(consensus_id(&a), consensus_id(&b));
    }

    /// The encoding and key are part of the product: nodes running
    /// different builds must agree. A change here needs a new `FORMAT`.
    #[test]
    fn the_id_is_the_same_in_every_build() {
        assert_eq!(format!("{:016x}", consensus_id(&state(&sample()))), GOLDEN);
        assert_eq!(
            format!("{:016x}", consensus_id(&BTreeMap::new())),
            GOLDEN_EMPTY
        );
    }
    const GOLDEN: &str = "34da7d196b864154";
    const GOLDEN_EMPTY: &str = "b92973531b9a7062";
}
