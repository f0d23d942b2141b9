//! What one compile needs (issue 14): a config can hold rules for many
//! interfaces, and an attach of one must not compile, record or write the
//! others'. Groups no attached interface holds keep their members (an
//! `sg:` peer still resolves to them) but lose their rules; NACLs no
//! attached interface names go. Prefix lists stay: they are only read
//! through the rules that name them.

use std::{borrow::Cow, collections::BTreeSet};

use super::Attachment;
use crate::config::{Config, Group};

/// `config` cut down to what `attachments` enforce; borrowed when nothing
/// is cut.
pub(super) fn in_scope<'c>(config: &'c Config, attachments: &[Attachment]) -> Cow<'c, Config> {
    let groups: BTreeSet<&str> = attachments
        .iter()
        .flat_map(|a| a.groups.iter().map(String::as_str))
        .collect();
    let nacls: BTreeSet<&str> = attachments
        .iter()
        .filter_map(|a| config.interfaces.get(&a.iface)?.nacl.as_deref())
        .collect();
    let idle_group = |g: &Group| {
        !groups.contains(g.name.as_str()) && !(g.ingress.is_empty() && g.egress.is_empty())
    };
    let idle_nacl = |name: &str| !nacls.contains(name);
    if !config.groups.values().any(idle_group) && !config.nacls.keys().any(|n| idle_nacl(n)) {
        return Cow::Borrowed(config);
    }
    let mut out = Config {
        groups: Default::default(),
        prefix_lists: config.prefix_lists.clone(),
        interfaces: config.interfaces.clone(),
        conntrack: config.conntrack.clone(),
        events: config.events.clone(),
        nacls: Default::default(),
    };
    for (name, g) in &config.groups {
        let kept = if idle_group(g) {
            Group {
                ingress: Vec::new(),
                egress: Vec::new(),
                ..g.clone()
            }
        } else {
            g.clone()
        };
        out.groups.insert(name.clone(), kept);
    }
    for (name, n) in &config.nacls {
        if !idle_nacl(name) {
            out.nacls.insert(name.clone(), n.clone());
        }
    }
    Cow::Owned(out)
}
