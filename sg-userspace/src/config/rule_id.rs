//! Stable rule IDs.

use std::fmt;

use sha2::{Digest, Sha256};

use super::{Direction, Peer, PortMatch, Proto, RULE_ID_HEX_DIGITS};

/// The stable rule ID: `sgr-` and the first 17 hex digits of SHA-256 over a
/// canonical encoding of the group, direction, protocol, ports and the
/// (sorted, deduplicated) peers. Name, description and position are left
/// out, so the ID survives reordering, reloads and description edits.
pub fn rule_id(
    group: &str,
    direction: Direction,
    proto: Proto,
    ports: &PortMatch,
    peers: &[Peer],
) -> String {
    // The fields go straight into the hash, formatted on the stack: the
    // Strings of a plain encoding cost ~10% of a 10,000-rule parse.
    let mut h = Sha256::new();
    // Each field is length-prefixed, so no two encodings collide.
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(b"sg-rule-v1");
    field(group.as_bytes());
    field(direction.as_str().as_bytes());
    let mut buf = StackText::default();
    match proto {
        Proto::All => field(b"all"),
        Proto::Number(n) => field(buf.put(format_args!("{n}"))),
    }
    match *ports {
        PortMatch::All => field(b"all"),
        PortMatch::Range { from, to } => field(buf.put(format_args!("{from}-{to}"))),
        PortMatch::Icmp {
            icmp_type,
            icmp_code,
        } => field(buf.put(format_args!("icmp:{}:{}", Star(icmp_type), Star(icmp_code)))),
    }
    // Peers in the order of their text, without duplicates.
    match peers {
        [one] if buf.try_put(format_args!("{one}")) => field(buf.text()),
        _ => {
            let mut canon: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
            canon.sort();
            canon.dedup();
            for p in &canon {
                field(p.as_bytes());
            }
        }
    }
    let digest = h.finalize();
    let mut hex = String::with_capacity(4 + RULE_ID_HEX_DIGITS);
    hex.push_str("sgr-");
    // By table: a `format!` per byte cost ~5% of a 10,000-rule apply.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in digest.iter() {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 15)]));
        if hex.len() >= 4 + RULE_ID_HEX_DIGITS {
            break;
        }
    }
    hex.truncate(4 + RULE_ID_HEX_DIGITS);
    hex
}

/// An ICMP type or code, `*` when absent.
struct Star(Option<u8>);

impl fmt::Display for Star {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("*"),
        }
    }
}

/// Text formatted into a fixed buffer: long enough for any port range, ICMP
/// field or address; longer text (a long `sg:NAME`) does not fit.
struct StackText {
    buf: [u8; 64],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            buf: [0; 64],
            len: 0,
        }
    }
}

impl StackText {
    /// Formats `args`; false if they do not fit.
    fn try_put(&mut self, args: fmt::Arguments<'_>) -> bool {
        self.len = 0;
        fmt::write(self, args).is_ok()
    }

    /// Formats text that always fits (numbers and separators).
    fn put(&mut self, args: fmt::Arguments<'_>) -> &[u8] {
        let fits = self.try_put(args);
        debug_assert!(fits, "short field overflowed");
        self.text()
    }

    fn text(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
