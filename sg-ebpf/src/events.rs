//! Drop accounting: an exact per-CPU counter for every drop, and an event
//! in the ring buffer for `sg watch`.

use aya_ebpf::bindings::BPF_NOEXIST;
use sg_common::{DropEvent, DropKey, EV_F_ICMP, EV_F_PORTS, PROTO_TCP, PROTO_UDP, Reason};

use crate::{
    maps::{DROPS, EVENTS},
    parse::Packet,
};

#[inline(always)]
fn count(ifindex: u32, direction: u8, reason: Reason) {
    let key = DropKey {
        ifindex,
        direction,
        reason: reason as u8,
        _pad: 0,
    };
    match DROPS.get_ptr_mut(&key) {
        // Per-CPU value: no other CPU writes it.
        Some(counter) => unsafe { *counter += 1 },
        None => {
            // Lost race with another packet of this CPU is impossible; a
            // failure here (map full) only loses the counter, not the drop.
            let _ = DROPS.insert(&key, &1, BPF_NOEXIST as u64);
        }
    }
}

#[inline(always)]
pub fn record_drop(pkt: &Packet, ifindex: u32, direction: u8, reason: Reason, len: u32, now: u64) {
    count(ifindex, direction, reason);
    let Some(mut entry) = EVENTS.reserve::<DropEvent>(0) else {
        return;
    };
    let mut flags = 0;
    if pkt.has_l4 && (pkt.proto == PROTO_TCP || pkt.proto == PROTO_UDP) {
        flags |= EV_F_PORTS;
    }
    if pkt.has_l4 && pkt.is_icmp() {
        flags |= EV_F_ICMP;
    }
    entry.write(DropEvent {
        ts_ns: now,
        ifindex,
        len,
        src: pkt.src,
        dst: pkt.dst,
        src_port: pkt.src_port,
        dst_port: pkt.dst_port,
        family: pkt.family,
        proto: pkt.proto,
        direction,
        reason: reason as u8,
        icmp_type: pkt.icmp_type,
        icmp_code: pkt.icmp_code,
        flags,
        _pad: [0; 5],
    });
    entry.submit(0);
}
