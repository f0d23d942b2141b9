//! The interface lookup by index (`IFACE_FAST`), in front of the
//! `IFACE_POLICY` hash: every packet starts with it, and an array read
//! costs a fraction of a hash probe.
//!
//! An array value is copied in place, not swapped like a hash element, so
//! a packet could read one being written. Each entry therefore holds two
//! slots and the number of the one in force: userspace writes the idle
//! slot, then flips `active` (one aligned 4-byte store) in a second update
//! that leaves every other byte as it was. A packet reads `active`, then
//! that slot, which no write touches while it is in force.

use crate::IfacePolicy;

/// Interfaces with an ifindex below this are found by index; the others
/// (and any entry not in force here) by the `IFACE_POLICY` hash.
pub const IFACE_FAST_SLOTS: u32 = 4096;

/// `IfaceFast::active`: no slot in force (ask the hash).
pub const IFACE_FAST_NONE: u32 = 0;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceFast {
    /// `IFACE_FAST_NONE`, or 1 + the slot in force.
    pub active: u32,
    pub _pad: u32,
    pub slots: [IfacePolicy; 2],
}

impl IfaceFast {
    /// The policy in force, if any.
    #[inline(always)]
    pub fn current(&self) -> Option<IfacePolicy> {
        match self.active {
            1 => Some(self.slots[0]),
            2 => Some(self.slots[1]),
            _ => None,
        }
    }

    /// The two values to write, in order, to put `value` in force: the
    /// idle slot first, then the flip.
    pub fn writes(&self, value: IfacePolicy) -> [IfaceFast; 2] {
        let idle = if self.active == 1 { 1 } else { 0 };
        let mut filled = *self;
        filled.slots[idle] = value;
        let mut flipped = filled;
        flipped.active = idle as u32 + 1;
        [filled, flipped]
    }

    /// The value that takes the interface out of the array (the slots
    /// stay; nothing reads them).
    pub fn cleared(&self) -> IfaceFast {
        IfaceFast {
            active: IFACE_FAST_NONE,
            ..*self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(id: u32) -> IfacePolicy {
        IfacePolicy {
            ingress_policy: id,
            egress_policy: id + 1,
            flags: 0,
            _pad: 0,
            ingress_nacl: id + 2,
            egress_nacl: id + 3,
        }
    }

    #[test]
    fn a_write_never_touches_the_slot_in_force() {
        let mut e = IfaceFast::default();
        assert_eq!(e.current(), None);
        for id in [10, 20, 30] {
            let before = e;
            let [filled, flipped] = e.writes(policy(id));
            // The first write changes only the idle slot.
            assert_eq!(filled.active, before.active);
            assert_eq!(filled.current(), before.current());
            // The second changes only `active`.
            assert_eq!(flipped.slots, filled.slots);
            assert_eq!(flipped.current(), Some(policy(id)));
            e = flipped;
        }
        assert_eq!(e.cleared().current(), None);
        assert_eq!(core::mem::size_of::<IfaceFast>(), 56);
    }
}
