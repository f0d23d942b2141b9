//! sg datapath: XDP on ingress, TC on egress. Both share one verdict path.
#![no_std]
#![no_main]

mod bench;
mod conntrack;
mod counters;
mod events;
mod fragments;
mod linear;
mod maps;
mod nacl;
mod parse;
mod policy;
mod related;
mod sweep;
mod tcpwin;
mod verdict;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use sg_common::Direction;

use crate::{parse::Bytes, verdict::Verdict};

/// Bytes the parser may need in the linear part of an skb: Ethernet, two
/// VLAN tags, IPv6 with extension headers, and the L4 header.
const TC_PULL_BYTES: u32 = 256;

#[xdp]
pub(crate) fn sg_ingress(ctx: XdpContext) -> u32 {
    let bytes = Bytes {
        data: ctx.data(),
        data_end: ctx.data_end(),
    };
    let len = bytes.data_end - bytes.data;
    match verdict::judge(bytes, len, ctx.ingress_ifindex() as u32, Direction::Ingress) {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
    }
}

/// A program that does nothing: the yardstick benchmarks divide by.
#[xdp]
pub(crate) fn sg_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[classifier]
pub(crate) fn sg_egress(ctx: TcContext) -> i32 {
    tc_verdict(&ctx, Direction::Egress)
}

/// Ingress on TC instead of XDP (`sg attach --mode tc`): on virtual
/// interfaces such as veth, XDP must copy every GRO/GSO packet into a page
/// of its own, while TC sees the aggregated skb as it is.
#[classifier]
pub(crate) fn sg_ingress_tc(ctx: TcContext) -> i32 {
    tc_verdict(&ctx, Direction::Ingress)
}

#[inline(always)]
fn tc_verdict(ctx: &TcContext, direction: Direction) -> i32 {
    pull_headers(ctx);
    // Read afresh after the pull (volatile: not the values read before
    // it), so the verifier reaches the verdict with one state whichever
    // way the pull went, rather than walking it once per way.
    let skb = ctx.as_ptr() as *const __sk_buff;
    let wire_len = unsafe { core::ptr::read_volatile(&(*skb).len) };
    let ifindex = unsafe { core::ptr::read_volatile(&(*skb).ifindex) };
    let bytes = Bytes {
        data: ctx.data(),
        data_end: ctx.data_end(),
    };
    match verdict::judge(bytes, wire_len as usize, ifindex, direction) {
        // UNSPEC lets any later TC program run too.
        Verdict::Pass => TC_ACT_UNSPEC,
        Verdict::Drop => TC_ACT_SHOT,
    }
}

/// Makes the headers the parser reads linear, if they are not yet.
#[inline(always)]
fn pull_headers(ctx: &TcContext) {
    let wire_len = ctx.len();
    let linear = (ctx.data_end() - ctx.data()) as u32;
    let want = if wire_len < TC_PULL_BYTES {
        wire_len
    } else {
        TC_PULL_BYTES
    };
    let ifindex = unsafe { (*(ctx.as_ptr() as *const __sk_buff)).ifindex };
    if linear < want && !linear_holds_headers(ctx, ifindex) {
        // Headers may sit in paged data; failure leaves the skb as it was,
        // and the parser then sees a truncated packet.
        let _ = ctx.pull_data(want);
    }
}

/// Pulling costs a copy of a cloned skb's head (`linear`): skip it when
/// the linear part holds every header. An interface sg does not enforce
/// is never parsed, so it needs no pull either.
#[inline(always)]
fn linear_holds_headers(ctx: &TcContext, ifindex: u32) -> bool {
    let Some(l3_link) = verdict::is_l3_link(ifindex) else {
        return true;
    };
    let bytes = Bytes {
        data: ctx.data(),
        data_end: ctx.data_end(),
    };
    linear::holds_headers(bytes, l3_link)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
