//! `mode = "enforce" | "audit"` on groups and interfaces (SPEC 10.2).

use super::*;

#[test]
fn modes_default_to_enforce_and_parse_on_groups_and_interfaces() {
    let c = cfg(r#"
[groups.a]
[groups.b]
mode = "audit"
[groups.c]
mode = "enforce"

[interfaces.eth0]
groups = ["a"]
[interfaces.eth1]
groups = ["a"]
mode = "audit"
[interfaces.eth2]
groups = ["a", "b"]
[interfaces.eth3]
groups = ["c"]
mode = "enforce"
"#);
    assert_eq!(c.groups["a"].mode, Mode::Enforce);
    assert_eq!(c.groups["b"].mode, Mode::Audit);
    assert_eq!(c.groups["c"].mode, Mode::Enforce);
    assert_eq!(c.interfaces["eth0"].mode, Mode::Enforce);
    assert_eq!(c.interfaces["eth1"].mode, Mode::Audit);
    let mode = |iface: &str| c.iface_mode(iface, &c.interfaces[iface].groups);
    assert_eq!(mode("eth0"), Mode::Enforce);
    assert_eq!(mode("eth1"), Mode::Audit, "the interface's own mode");
    assert_eq!(mode("eth2"), Mode::Audit, "one group in audit audits it");
    assert_eq!(mode("eth3"), Mode::Enforce);
}

#[test]
fn a_bad_mode_is_an_error_where_it_is_written() {
    fails(
        "[groups.a]\nmode = \"dry-run\"\n",
        2,
        8,
        "unknown mode `dry-run` for group `a`: expected \"enforce\" or \"audit\"",
    );
    fails(
        "[groups.a]\n[interfaces.eth0]\ngroups = [\"a\"]\nmode = \"AUDIT\"\n",
        4,
        8,
        "unknown mode `AUDIT` for interface `eth0`",
    );
    fails("[groups.a]\nmode = true\n", 2, 8, "expected a string");
}
