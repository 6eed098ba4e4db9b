//! What the tier should run, compiled from the config (by
//! `snapshot::tier`): plain values, compared across reloads to see what
//! changed.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::balance;
use crate::health::Member;

/// PROXY protocol version sent to a group's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyVersion {
    V1,
    V2,
}

/// One listener: a VIP:port in a region in front of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerPlan {
    pub name: String,
    pub region: String,
    pub bind: SocketAddr,
    pub group: String,
    pub max_connections: u32,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub connect_attempts: u32,
    pub accept_proxy_from: Vec<IpNet>,
    pub proxy_header_timeout: Duration,
}

/// One backend of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendPlan {
    /// `group/address`: health, balancing state and counters follow it.
    pub id: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub backup: bool,
    pub max_connections: Option<u32>,
}

/// One backend group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    pub name: String,
    pub region: String,
    pub settings: balance::Settings,
    pub backends: Vec<BackendPlan>,
    pub send_proxy: Option<ProxyVersion>,
    pub drain_timeout: Duration,
}

impl GroupPlan {
    /// The balancer's view of the members.
    pub fn members(&self) -> Vec<balance::Member> {
        self.backends
            .iter()
            .map(|b| balance::Member {
                id: b.id.clone(),
                weight: b.weight,
                backup: b.backup,
                max_conns: b.max_connections,
            })
            .collect()
    }
}

/// The whole tier as configured (every region; the node picks its own).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub listeners: Vec<ListenerPlan>,
    pub groups: Vec<GroupPlan>,
    /// The backends as the health service watches them (source `tier`).
    pub members: Vec<Member>,
}

impl Plan {
    pub fn group(&self, name: &str) -> Option<&GroupPlan> {
        self.groups.iter().find(|g| g.name == name)
    }
}
