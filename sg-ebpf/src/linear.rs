//! TC only: does an skb's linear part already hold every header the
//! parser reads?
//!
//! `bpf_skb_pull_data` makes the bytes it pulls writable. On a cloned
//! skb (every TCP segment a local sender transmits is one, and veth hands
//! it over as it is) that reallocates and copies the skb's head: done per
//! packet, it cost a tenth of a veth's TCP throughput. So the program
//! pulls only when a header it needs lies past the linear bytes; a GSO
//! segment carries all of its headers there.

use sg_common::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

use crate::parse::{
    Bytes, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_AH, IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ROUTING,
};

const ETH_HLEN: usize = 14;
const IPV6_HLEN: usize = 40;

/// True when every header the parser reads of this packet is in `bytes`
/// (the linear part). False means "pull first": VLAN tags, IPv6 extension
/// headers, ICMP errors (their quoted packet is read too) and anything cut
/// short take the pull, as every packet did before.
#[inline(always)]
pub(crate) fn holds_headers(bytes: Bytes, l3_link: bool) -> bool {
    let l3 = if l3_link { 0 } else { ETH_HLEN };
    if !l3_link {
        let Some(eth) = bytes.ptr_at::<[u8; ETH_HLEN]>(0) else {
            return false;
        };
        let eth = unsafe { *eth };
        match u16::from_be_bytes([eth[12], eth[13]]) {
            ETH_P_IP | ETH_P_IPV6 => {}
            // VLAN tags: the parser reads past them; anything else is not
            // IP and is never read further.
            ETH_P_8021Q | ETH_P_8021AD => return false,
            _ => return true,
        }
    }
    let Some(ip) = bytes.ptr_at::<[u8; 20]>(l3) else {
        return false;
    };
    let ip = unsafe { *ip };
    let (proto, l4) = match ip[0] >> 4 {
        4 => {
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
                // A later fragment: no L4 header is read.
                return true;
            }
            (ip[9], l3 + ((ip[0] & 0x0f) as usize) * 4)
        }
        6 => (ip[6], l3 + IPV6_HLEN),
        _ => return false,
    };
    match proto {
        PROTO_TCP => {
            let Some(tcp) = bytes.ptr_at::<[u8; 20]>(l4) else {
                return false;
            };
            let header_len = ((unsafe { *tcp }[12] >> 4) as usize) * 4;
            l4 + header_len <= bytes.data_end - bytes.data
        }
        PROTO_UDP => bytes.ptr_at::<[u8; 8]>(l4).is_some(),
        PROTO_ICMP | PROTO_ICMPV6 => match bytes.ptr_at::<[u8; 8]>(l4) {
            // Echo only: an error quotes a packet the parser reads too.
            Some(icmp) => matches!(unsafe { *icmp }[0], 0 | 8 | 128 | 129),
            None => false,
        },
        // IPv6 extension headers: the walk reads on.
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS
            if ip[0] >> 4 == 6 =>
        {
            false
        }
        _ => true,
    }
}
