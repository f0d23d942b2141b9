//! Fragments (SPEC 1.11): the first fragment of a datagram is judged on
//! its L4 header like any packet; when it passes, it is remembered in
//! `FRAGMENTS` for `FRAG_TIMEOUT_NS`, and the later fragments of the same
//! datagram (which carry no L4 header) follow it. A later fragment without
//! a live first one is dropped.

use sg_common::{Direction, FRAG_TIMEOUT_NS, FragKey};

use crate::{maps::FRAGMENTS, parse::Packet};

#[inline(always)]
fn fill_key(key: &mut FragKey, pkt: &Packet, ifindex: u32, direction: Direction) {
    key.src = pkt.src;
    key.dst = pkt.dst;
    key.id = pkt.frag_id;
    key.ifindex = ifindex;
    key.proto = pkt.proto;
    key.family = pkt.family;
    key.direction = direction.code();
    key._pad = 0;
}

/// A first fragment that passed lets the rest of its datagram follow.
/// `key` is scratch space.
#[inline(always)]
pub(crate) fn remember_first(
    key: &mut FragKey,
    pkt: &Packet,
    ifindex: u32,
    direction: Direction,
    now: u64,
) {
    if pkt.is_fragment {
        fill_key(key, pkt, ifindex, direction);
        let _ = FRAGMENTS.insert(key, &(now + FRAG_TIMEOUT_NS), 0);
    }
}

/// Did the first fragment of the later fragment `pkt` pass, recently
/// enough? `key` is scratch space.
#[inline(always)]
pub(crate) fn follows_first(
    key: &mut FragKey,
    pkt: &Packet,
    ifindex: u32,
    direction: Direction,
    now: u64,
) -> bool {
    fill_key(key, pkt, ifindex, direction);
    match unsafe { FRAGMENTS.get(key) } {
        Some(expires) => *expires >= now,
        None => false,
    }
}
