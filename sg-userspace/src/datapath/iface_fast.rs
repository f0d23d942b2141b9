//! Writes of `IFACE_FAST`, the by-index copy of `IFACE_POLICY` the
//! datapath reads first (`sg_common::IfaceFast`: idle slot, then flip).

use anyhow::Result;
use aya::maps::{Array, MapData};
use sg_common::{IFACE_FAST_SLOTS, IfaceFast, IfacePolicy, MAP_IFACE_FAST};

use super::Datapath;

impl Datapath {
    fn iface_fast(&mut self) -> Result<Array<&mut MapData, IfaceFast>> {
        self.map(MAP_IFACE_FAST)
    }

    /// Puts `value` (or, with `None`, the hash) in force for `ifindex`.
    /// Interfaces beyond the array are found by hash only.
    pub(super) fn put_fast(&mut self, ifindex: u32, value: Option<&IfacePolicy>) -> Result<()> {
        if ifindex >= IFACE_FAST_SLOTS {
            return Ok(());
        }
        crate::failpoint::write(MAP_IFACE_FAST)?;
        let mut array = self.iface_fast()?;
        let current = array.get(&ifindex, 0)?;
        match value {
            Some(v) => {
                for step in current.writes(*v) {
                    array.set(ifindex, &step, 0)?;
                }
            }
            None => array.set(ifindex, &current.cleared(), 0)?,
        }
        Ok(())
    }
}
