//! `IpProtocol`, `FromPort` and `ToPort` as AWS writes them, to and from
//! sg's `Proto` and `PortMatch`.

use crate::config::{ICMP, ICMPV6, PortMatch, Proto, TCP, UDP};

/// `-1`, `tcp`, `udp`, `icmp`, `icmpv6` (any case) or a number 0-255.
pub(super) fn proto_from_aws(p: &str) -> Result<Proto, String> {
    Ok(match p.to_ascii_lowercase().as_str() {
        "-1" | "all" => Proto::All,
        "tcp" => TCP,
        "udp" => UDP,
        "icmp" => ICMP,
        "icmpv6" => ICMPV6,
        n => match n.parse::<u8>() {
            Ok(n) => Proto::Number(n),
            Err(_) => {
                return Err(format!(
                    "unsupported IpProtocol `{p}`: expected -1, tcp, udp, icmp, icmpv6 or a \
                     number 0-255"
                ));
            }
        },
    })
}

/// Ports (tcp, udp) or ICMP type and code (`FromPort` is the type, `ToPort`
/// the code; -1 means all). Other protocols have none.
pub(super) fn ports_from_aws(
    proto: Proto,
    from: Option<i64>,
    to: Option<i64>,
) -> Result<PortMatch, String> {
    if proto.has_ports() {
        let (from, to) = match (from, to) {
            (None | Some(-1), None | Some(-1)) => return Ok(PortMatch::All),
            (Some(f), Some(t)) => (f, t),
            (Some(f), None) => (f, f),
            (None, Some(t)) => (t, t),
        };
        let port = |n: i64, what: &str| {
            u16::try_from(n).map_err(|_| format!("{what} {n} is out of range 0-65535"))
        };
        let (from, to) = (port(from, "FromPort")?, port(to, "ToPort")?);
        if from > to {
            return Err(format!("FromPort {from} is above ToPort {to}"));
        }
        if from == 0 && to == u16::MAX {
            return Ok(PortMatch::All);
        }
        return Ok(PortMatch::Range { from, to });
    }
    if proto.is_icmp() {
        let num = |n: Option<i64>, what: &str| -> Result<Option<u8>, String> {
            match n {
                None | Some(-1) => Ok(None),
                Some(n) => u8::try_from(n)
                    .map(Some)
                    .map_err(|_| format!("ICMP {what} {n} is out of range 0-255 (or -1)")),
            }
        };
        let icmp_type = num(from, "type (FromPort)")?;
        let icmp_code = num(to, "code (ToPort)")?;
        if icmp_type.is_none() && icmp_code.is_some() {
            return Err(
                "an ICMP code (ToPort) without a type (FromPort -1) is not supported".into(),
            );
        }
        return Ok(PortMatch::Icmp {
            icmp_type,
            icmp_code,
        });
    }
    Ok(PortMatch::All)
}

/// The AWS `IpProtocol`, `FromPort` and `ToPort` of an sg rule.
pub(super) fn to_aws(proto: Proto, ports: &PortMatch) -> (String, Option<i64>, Option<i64>) {
    let name = match proto {
        Proto::All => "-1".to_string(),
        p if p.has_ports() || p.is_icmp() => p.to_string(),
        Proto::Number(n) => n.to_string(),
    };
    let (from, to) = match (proto, *ports) {
        (Proto::All, _) => (None, None),
        (p, PortMatch::All) if p.has_ports() => (Some(0), Some(65535)),
        (_, PortMatch::Range { from, to }) => (Some(i64::from(from)), Some(i64::from(to))),
        (
            _,
            PortMatch::Icmp {
                icmp_type,
                icmp_code,
            },
        ) => (
            Some(icmp_type.map_or(-1, i64::from)),
            Some(icmp_code.map_or(-1, i64::from)),
        ),
        _ => (None, None),
    };
    (name, from, to)
}
