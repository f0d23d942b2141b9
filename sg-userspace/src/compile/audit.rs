//! Audit mode (SPEC 10.2): which interfaces carry `IFACE_F_AUDIT`. The
//! flag lives in the interface's `IFACE_POLICY` entry beside its policies,
//! so `sg apply` switches between audit and enforce with the same single
//! update that switches the policies.

use std::collections::BTreeMap;

use sg_common::IFACE_F_AUDIT;

use super::{Attachment, IfaceBinding};
use crate::config::{Config, Mode};

/// Sets `IFACE_F_AUDIT` on every attached interface in audit mode
/// ([`Config::iface_mode`]).
pub(super) fn mark(
    config: &Config,
    attachments: &[Attachment],
    ifaces: &mut BTreeMap<String, IfaceBinding>,
) {
    for a in attachments {
        if config.iface_mode(&a.iface, &a.groups) == Mode::Audit
            && let Some(b) = ifaces.get_mut(&a.iface)
        {
            b.flags |= IFACE_F_AUDIT;
        }
    }
}
