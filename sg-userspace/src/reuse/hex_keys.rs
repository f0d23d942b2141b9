//! `Installed`'s maps in the state file: `{"<32 lower-case hex digits>":
//! id}`, sorted by digest. Earlier versions wrote whole SHA-256s (64
//! digits, a `BTreeMap<String, u32>`): their first 128 bits are the digest.
//! Read without a `String` per key.

use std::fmt;

use serde::{
    Deserializer, Serializer,
    de::{self, MapAccess, Visitor},
};

use super::{Digest, DigestIds};

/// Byte -> its two hex digits (10,000s of digests per apply).
const PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
        i += 1;
    }
    t
};

/// Character -> its value as a lower-case hex digit, or 0xff.
const VALUES: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Lower-case hex of `bytes` into `out` (twice as long).
fn encode_into(bytes: &[u8], out: &mut [u8]) {
    for (pair, &b) in out.as_chunks_mut::<2>().0.iter_mut().zip(bytes) {
        *pair = PAIRS[usize::from(b)];
    }
}

/// Lower-case hex of a whole SHA-256.
pub(super) fn encode(sha: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    encode_into(sha, &mut out);
    out
}

/// A digest from 32 lower-case hex digits, or the first 128 bits of 64
/// (a whole SHA-256, as earlier versions recorded it).
fn decode(text: &str) -> Option<Digest> {
    let bytes = text.as_bytes();
    if bytes.len() != 32 && bytes.len() != 64 {
        return None;
    }
    let mut bad = 0;
    for &c in bytes {
        bad |= VALUES[usize::from(c)];
    }
    // Any 0xff (not a digit) sets the high bits.
    if bad >= 16 {
        return None;
    }
    let mut out = [0u8; 16];
    for (b, pair) in out.iter_mut().zip(bytes.as_chunks::<2>().0) {
        *b = VALUES[usize::from(pair[0])] << 4 | VALUES[usize::from(pair[1])];
    }
    Some(out)
}

struct Hex<'a>(&'a Digest);

impl serde::Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = [0u8; 32];
        encode_into(self.0, &mut text);
        // Hex digits are ASCII.
        s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }
}

pub(super) fn serialize<S: Serializer>(map: &DigestIds, s: S) -> Result<S::Ok, S::Error> {
    let mut sorted: Vec<(&Digest, &u32)> = map.iter().collect();
    sorted.sort_unstable_by_key(|(d, _)| *d);
    s.collect_map(sorted.into_iter().map(|(d, id)| (Hex(d), id)))
}

struct Key(Digest);

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a digest of 32 (or 64) lower-case hex digits")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                decode(v)
                    .map(Key)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_str(V)
    }
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DigestIds, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = DigestIds;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of digests to IDs")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DigestIds, A::Error> {
            let mut out = DigestIds::default();
            out.reserve(map.size_hint().unwrap_or(0));
            while let Some((Key(d), id)) = map.next_entry::<Key, u32>()? {
                out.insert(d, id);
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_and_round_trips() {
        let mut sha = [0u8; 32];
        sha[..4].copy_from_slice(&[0x00, 0x0f, 0xa5, 0xff]);
        sha[31] = 0x7e;
        let text = encode(&sha);
        assert!(text.starts_with(b"000fa5ff"));
        let by_format: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(text.as_slice(), by_format.as_bytes());
        let digest: Digest = sha[..16].try_into().unwrap();
        // A whole SHA-256 (earlier versions) and its first 32 digits.
        assert_eq!(decode(&by_format), Some(digest));
        assert_eq!(decode(&by_format[..32]), Some(digest));
        assert_eq!(decode(&by_format.to_uppercase()), None);
        assert_eq!(decode(&by_format[..62]), None);
        // A bad digit past the first 128 bits still makes it corrupt.
        assert_eq!(decode(&format!("{}g", &by_format[..63])), None);
    }
}
