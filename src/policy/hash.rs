//! Stable hashes of client subnets, shared by the steps that keep a
//! client in place (`weighted` sticky, `capacity`) and by partial drains
//! (`health::partial_position`).

use std::net::IpAddr;

/// A stable 64-bit mix (splitmix64 finaliser).
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The client's subnet as a hash key, and its prefix length.
pub(crate) fn subnet_key(addr: IpAddr, p4: u8, p6: u8) -> (u64, u8) {
    match addr {
        IpAddr::V4(v4) => {
            let p = p4.min(32);
            let m = if p == 0 {
                0
            } else {
                u32::from(v4) & (u32::MAX << (32 - p as u32))
            };
            (m as u64 ^ 0x4444, p)
        }
        IpAddr::V6(v6) => {
            let p = p6.min(128);
            let m = if p == 0 {
                0
            } else {
                u128::from(v6) & (u128::MAX << (128 - p as u32))
            };
            ((m >> 64) as u64 ^ mix64(m as u64), p)
        }
    }
}
