//! Drop events for `sg watch`: the ring buffer, behind a per-CPU token
//! bucket. Events are a sample; the exact counts are in `counters`.

use sg_common::{
    Direction, DropEvent, EV_F_ICMP, EV_F_PORTS, EVSTAT_RING_FULL, EVSTAT_SUPPRESSED, PROTO_TCP,
    PROTO_UDP, TOKEN_UNITS_PER_EVENT,
};

use crate::{
    counters::AUDITED,
    maps::{CONFIG, EVENT_BUCKET, EVENT_STATS, EVENTS},
    parse::Packet,
};

const _: () = assert!(AUDITED >> 5 == sg_common::EV_F_AUDIT);

#[inline(always)]
fn bump(stat: u32) {
    if let Some(counter) = EVENT_STATS.get_ptr_mut(stat) {
        unsafe { *counter += 1 };
    }
}

/// Takes one token from this CPU's bucket, or counts a suppressed event.
/// The bucket refills at `events_per_sec` and holds one second's worth;
/// a rate of 0 turns events off (counters still count).
#[inline(always)]
fn take_token(now: u64) -> bool {
    let rate = match CONFIG.get(0) {
        Some(cfg) => cfg.events_per_sec as u64,
        None => 0,
    };
    let Some(bucket) = EVENT_BUCKET.get_ptr_mut(0) else {
        return false;
    };
    let bucket = unsafe { &mut *bucket };
    let capacity = rate * TOKEN_UNITS_PER_EVENT;
    // One second refills a bucket completely; capping first keeps the
    // product below 2^64 for any u32 rate.
    let mut elapsed = now.wrapping_sub(bucket.last_ns);
    if elapsed > TOKEN_UNITS_PER_EVENT || now < bucket.last_ns {
        elapsed = TOKEN_UNITS_PER_EVENT;
    }
    let mut tokens = bucket.tokens + elapsed * rate;
    if tokens > capacity {
        tokens = capacity;
    }
    bucket.last_ns = now;
    if tokens < TOKEN_UNITS_PER_EVENT {
        bucket.tokens = tokens;
        return false;
    }
    bucket.tokens = tokens - TOKEN_UNITS_PER_EVENT;
    true
}

/// Writes the drop of `pkt` to the ring buffer for `sg watch`, if the
/// token bucket allows; counts it in `EVENT_STATS` otherwise. `code` is
/// the reason, with `counters::AUDITED` for a would-be drop audit mode let
/// pass (`EV_F_AUDIT`).
#[inline(always)]
pub(crate) fn emit_drop(
    pkt: &Packet,
    ifindex: u32,
    direction: Direction,
    code: u8,
    len: u32,
    now: u64,
    rule: u32,
) {
    if !take_token(now) {
        bump(EVSTAT_SUPPRESSED);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<DropEvent>(0) else {
        bump(EVSTAT_RING_FULL);
        return;
    };
    // AUDITED (0x80) >> 5 is EV_F_AUDIT (4).
    let mut flags = (code & AUDITED) >> 5;
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
        direction: direction.code(),
        reason: code & !AUDITED,
        icmp_type: pkt.icmp_type,
        icmp_code: pkt.icmp_code,
        flags,
        tcp_flags: if pkt.has_l4 && pkt.proto == PROTO_TCP {
            pkt.tcp_flags
        } else {
            0
        },
        rule,
    });
    entry.submit(0);
}
