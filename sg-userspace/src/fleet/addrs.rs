//! This host's addresses, from rtnetlink: listed, and followed through the
//! kernel's IPv4/IPv6 address multicast groups so that an address added
//! or removed reaches the membership within a second (SPEC 8.2).

use std::net::IpAddr;

use anyhow::{Context as _, Result};
use futures::{StreamExt as _, TryStreamExt as _, channel::mpsc::UnboundedReceiver};
use netlink_packet_core::NetlinkMessage;
use netlink_packet_route::{
    RouteNetlinkMessage,
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope},
};
use netlink_sys::AsyncSocket as _;
use rtnetlink::{
    Handle,
    constants::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR},
};

type Messages = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, netlink_sys::SocketAddr)>;

/// An rtnetlink connection subscribed to address changes.
pub struct AddrWatch {
    handle: Handle,
    messages: Messages,
}

impl AddrWatch {
    /// Opens the socket (in the current network namespace) and subscribes.
    /// Call inside a tokio runtime.
    pub fn open() -> Result<AddrWatch> {
        let (mut conn, handle, messages) =
            rtnetlink::new_connection().context("cannot open an rtnetlink socket")?;
        let groups = netlink_sys::SocketAddr::new(0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR);
        conn.socket_mut()
            .socket_mut()
            .bind(&groups)
            .context("cannot subscribe to address changes")?;
        tokio::spawn(conn);
        Ok(AddrWatch { handle, messages })
    }

    /// The global addresses of interface `index`: no link-local, loopback or
    /// host scope, no tentative (DAD not done) or DAD-failed address.
    pub async fn global_addresses(&self, index: u32) -> Result<Vec<IpAddr>> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = stream.try_next().await? {
            if msg.header.index != index {
                continue;
            }
            if let Some(addr) = usable(&msg) {
                out.push(addr);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Waits for the next address change of any interface. `false` when the
    /// socket is gone.
    pub async fn changed(&mut self) -> bool {
        loop {
            match self.messages.next().await {
                None => return false,
                Some((msg, _)) => {
                    if matches!(
                        msg.payload,
                        netlink_packet_core::NetlinkPayload::InnerMessage(
                            RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_)
                        )
                    ) {
                        return true;
                    }
                }
            }
        }
    }
}

/// The address of `msg` if it is a usable member address.
fn usable(msg: &AddressMessage) -> Option<IpAddr> {
    if msg.header.scope != AddressScope::Universe {
        return None;
    }
    let bad_header = AddressHeaderFlags::Tentative | AddressHeaderFlags::Dadfailed;
    if msg.header.flags.intersects(bad_header) {
        return None;
    }
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Flags(f)
                if f.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed) =>
            {
                return None;
            }
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    // IPv4 names the interface's own address IFA_LOCAL (IFA_ADDRESS is the
    // peer on point-to-point links); IPv6 has only IFA_ADDRESS.
    let addr = local.or(address)?;
    let bad = addr.is_loopback()
        || addr.is_unspecified()
        || addr.is_multicast()
        || crate::ifaces::is_link_local(addr);
    (!bad).then_some(addr)
}
