//! The keys record (`keys.bin` in the metadata dir): every key of the six
//! policy hashes, and each rule set's span, as the last attach or apply
//! left them. An apply that trusts it knows what the hashes hold without
//! `BPF_MAP_LOOKUP_BATCH`, which walks every bucket of a hash (~2.5 million
//! over the six, whatever they hold: ~14 ms).
//!
//! When it is trusted: its token equals the one the state file names, it
//! parses whole (magic, sizes, checksum), and it was made of these very
//! maps (their kernel IDs, which a recreated pin changes). Anything else
//! falls back to reading the kernel, which also collects any leftover.
//!
//! Why that is safe:
//! - The token is written into the state only by the commit save of an
//!   apply (`StateDir::save_recorded`); `State::keys_token` is never
//!   serialized by any other save, so every other command that saves the
//!   state (detach, an older `sg`) leaves it without one, and no record is
//!   trusted after it.
//! - An apply deletes the record before its first policy write
//!   (`forget`), and writes the new one only once its removal after the
//!   commit succeeded: a failed or killed apply leaves no record, or the
//!   token its state does not name.
//! - A key the record misses (another writer, a bug) can only be a
//!   leftover under an ID no policy in force uses: policy and class IDs
//!   are never handed out twice (`compile::Ids::alloc` counts up from
//!   `State::next_id`, which only grows; `StateDir::load` raises it to
//!   what `install::reserve_ids` recorded before any entry with those IDs
//!   was written, so a killed apply's IDs stay taken), so the
//!   next fallback read removes it and nothing live ever depends on it.
//!   It costs room, never a verdict. A key the record has and the kernel
//!   lacks is deleted as already gone (`batch::delete` skips ENOENT).

use std::{fs, io::Write as _, path::PathBuf};

use anyhow::{Context as _, Result, bail};
use aya::Pod;
use sg_common::{
    PeerKeyV4, PeerKeyV6, PeerLengthsKey, PeerNetKeyV4, PeerNetKeyV6, RuleSetKey, RuleSpan,
};

use super::{
    Datapath,
    seen::{Prefetched, Seen},
};
use crate::state::StateDir;

const MAGIC: &[u8; 8] = b"SGKEYS01";

/// The hashes the record covers, in file order.
const HASHES: [&str; 6] = sg_common::POLICY_HASHES;

/// What the policy hashes hold after a removal: every key, and the spans
/// of the rule sets.
#[derive(Default)]
pub struct Keys {
    pub(super) hosts_v4: Vec<PeerKeyV4>,
    pub(super) hosts_v6: Vec<PeerKeyV6>,
    pub(super) nets_v4: Vec<PeerNetKeyV4>,
    pub(super) nets_v6: Vec<PeerNetKeyV6>,
    pub(super) lengths: Vec<PeerLengthsKey>,
    pub(super) rule_sets: Vec<(RuleSetKey, RuleSpan)>,
}

fn path(dir: &StateDir) -> PathBuf {
    dir.meta.join("keys.bin")
}

/// A fresh random token (128 bits, hex).
pub fn new_token() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom(2) writes at most `len` bytes into `bytes`.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // No entropy (cannot happen on Linux >= 3.17 past early boot):
        // the clock and pid still make two tokens differ.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = (t ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deletes the record: called before an apply's first policy write, so a
/// failed or killed apply leaves none to trust.
pub fn forget(dir: &StateDir) -> Result<()> {
    match fs::remove_file(path(dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path(dir).display()))
        }
        _ => Ok(()),
    }
}

/// The record's own checksum (FNV-1a over 64-bit words): catches a
/// damaged file, not an attacker (who could as well write the maps).
fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let (words, rest) = bytes.as_chunks::<8>();
    for w in words {
        h = (h ^ u64::from_le_bytes(*w)).wrapping_mul(0x100_0000_01b3);
    }
    for &b in rest {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn put<T: Pod>(out: &mut Vec<u8>, items: &[T]) {
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    out.extend_from_slice(&(std::mem::size_of::<T>() as u32).to_le_bytes());
    // SAFETY: `T: Pod` is plain data with no padding (sg-common's keys
    // and values spell theirs out): every byte is initialized.
    let raw = unsafe {
        std::slice::from_raw_parts(items.as_ptr().cast::<u8>(), std::mem::size_of_val(items))
    };
    out.extend_from_slice(raw);
}

/// Reads the file back: `None` at the first thing that does not fit.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn items<T: Pod>(&mut self) -> Option<Vec<T>> {
        let n = self.u32()? as usize;
        if self.u32()? as usize != std::mem::size_of::<T>() {
            return None;
        }
        let raw = self.take(n.checked_mul(std::mem::size_of::<T>())?)?;
        let mut out: Vec<T> = Vec::with_capacity(n);
        // SAFETY: `raw` holds `n` values of `T` (plain data: any bytes are
        // a value), copied into room for `n`.
        unsafe {
            std::ptr::copy_nonoverlapping(raw.as_ptr(), out.as_mut_ptr().cast::<u8>(), raw.len());
            out.set_len(n);
        }
        Some(out)
    }
}

fn encode(token: &str, ids: &[u32; 6], keys: &Keys) -> Vec<u8> {
    let spans: Vec<RuleSpan> = keys.rule_sets.iter().map(|(_, s)| *s).collect();
    let sets: Vec<RuleSetKey> = keys.rule_sets.iter().map(|(k, _)| *k).collect();
    let mut out = Vec::with_capacity(
        64 + 8 * keys.hosts_v4.len()
            + 20 * keys.hosts_v6.len()
            + 12 * keys.nets_v4.len()
            + 24 * keys.nets_v6.len()
            + 8 * keys.lengths.len()
            + 16 * sets.len(),
    );
    out.extend_from_slice(MAGIC);
    put(&mut out, token.as_bytes());
    put(&mut out, ids);
    put(&mut out, &keys.hosts_v4);
    put(&mut out, &keys.hosts_v6);
    put(&mut out, &keys.nets_v4);
    put(&mut out, &keys.nets_v6);
    put(&mut out, &keys.lengths);
    put(&mut out, &sets);
    put(&mut out, &spans);
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// The record if it is whole, of `token`, and of the maps `ids`; else why not.
fn decode(bytes: &[u8], token: &str, ids: &[u32; 6]) -> Result<Keys, &'static str> {
    let (body, sum) = bytes
        .split_last_chunk::<8>()
        .ok_or("shorter than its checksum")?;
    if checksum(body) != u64::from_le_bytes(*sum) {
        return Err("checksum mismatch");
    }
    let mut r = Reader(body);
    if r.take(8) != Some(&MAGIC[..]) {
        return Err("not a keys record");
    }
    let bad = "malformed";
    if r.items::<u8>().ok_or(bad)? != token.as_bytes() {
        return Err("another token than the state's");
    }
    if r.items::<u32>().ok_or(bad)? != ids {
        return Err("made of other maps");
    }
    let keys = Keys {
        hosts_v4: r.items().ok_or(bad)?,
        hosts_v6: r.items().ok_or(bad)?,
        nets_v4: r.items().ok_or(bad)?,
        nets_v6: r.items().ok_or(bad)?,
        lengths: r.items().ok_or(bad)?,
        rule_sets: {
            let sets: Vec<RuleSetKey> = r.items().ok_or(bad)?;
            let spans: Vec<RuleSpan> = r.items().ok_or(bad)?;
            if sets.len() != spans.len() {
                return Err(bad);
            }
            sets.into_iter().zip(spans).collect()
        },
    };
    if !r.0.is_empty() {
        return Err(bad);
    }
    Ok(keys)
}

impl Datapath {
    /// The kernel IDs of the hashes the record covers: a pin removed and
    /// made again is another map, with another ID.
    fn record_map_ids(&self) -> Result<[u32; 6]> {
        let mut ids = [0u32; 6];
        for (id, name) in ids.iter_mut().zip(HASHES) {
            *id = match self.ebpf.map(name) {
                Some(aya::maps::Map::HashMap(data)) => data.info()?.id(),
                _ => bail!("map {name} missing or not a hash"),
            };
        }
        Ok(ids)
    }

    /// Saves `keys` (what the hashes hold now) as the record of `token`:
    /// temp file and rename, no fsync (the maps do not outlive a reboot
    /// either, and a torn file fails its checksum).
    pub fn save_record(&self, dir: &StateDir, token: &str, keys: &Keys) -> Result<()> {
        let bytes = encode(token, &self.record_map_ids()?, keys);
        fs::create_dir_all(&dir.meta)?;
        let tmp = dir.meta.join("keys.bin.tmp");
        fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes))
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, path(dir)).with_context(|| format!("cannot rename {}", tmp.display()))
    }

    /// Takes the record of `token` as what the next room check reads, if
    /// it is trusted (see the module's comment). `false`: nothing was
    /// taken, the room check reads the kernel.
    pub fn use_record(&mut self, dir: &StateDir, token: Option<&str>) -> bool {
        let why_not = (|| -> Result<Keys, String> {
            let token = token.ok_or("the state names no record")?;
            let bytes = fs::read(path(dir)).map_err(|e| format!("cannot read it: {e}"))?;
            let ids = self.record_map_ids().map_err(|e| format!("{e:#}"))?;
            Ok(decode(&bytes, token, &ids)?)
        })();
        match why_not {
            Ok(keys) => {
                tracing::debug!(target: "sg::keys", "the keys record is trusted");
                self.prefetched = Some(Prefetched {
                    seen: Seen {
                        hosts_v4: Some(keys.hosts_v4),
                        hosts_v6: Some(keys.hosts_v6),
                        nets_v4: Some(keys.nets_v4),
                        nets_v6: Some(keys.nets_v6),
                        lengths: Some(keys.lengths),
                        ..Seen::default()
                    },
                    rule_sets: keys.rule_sets,
                });
                true
            }
            Err(why) => {
                tracing::debug!(target: "sg::keys", "the keys record is not used: {why}");
                false
            }
        }
    }

    /// [`Datapath::read_room`] from the record of `token` when it is
    /// trusted, else from the kernel.
    pub fn read_room_recorded(&mut self, dir: &StateDir, token: Option<&str>) -> Result<()> {
        if self.use_record(dir, token) {
            return Ok(());
        }
        self.read_room()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Keys {
        Keys {
            hosts_v4: vec![PeerKeyV4 {
                policy: 7u32.to_be_bytes(),
                addr: [198, 18, 0, 1],
            }],
            lengths: vec![PeerLengthsKey {
                policy: 7,
                family: 4,
                _pad: [0; 3],
            }],
            rule_sets: vec![(
                RuleSetKey {
                    class: 9,
                    proto: 6,
                    any: 0,
                    _pad: [0; 2],
                },
                RuleSpan { first: 3, len: 2 },
            )],
            ..Keys::default()
        }
    }

    #[test]
    fn a_record_reads_back_only_whole_and_of_its_token_and_maps() {
        let ids = [1, 2, 3, 4, 5, 6];
        let bytes = encode("abc", &ids, &sample());
        let back = decode(&bytes, "abc", &ids).expect("reads back");
        assert_eq!(back.hosts_v4, sample().hosts_v4);
        assert_eq!(back.lengths, sample().lengths);
        assert_eq!(back.rule_sets, sample().rule_sets);
        assert!(back.hosts_v6.is_empty() && back.nets_v4.is_empty());
        assert_eq!(
            decode(&bytes, "abd", &ids).err(),
            Some("another token than the state's")
        );
        assert_eq!(
            decode(&bytes, "abc", &[1, 2, 3, 4, 5, 7]).err(),
            Some("made of other maps")
        );
        for cut in [0, 1, 8, 20, bytes.len() - 9, bytes.len() - 1] {
            assert!(decode(&bytes[..cut], "abc", &ids).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert_eq!(
            decode(&flipped, "abc", &ids).err(),
            Some("checksum mismatch")
        );
    }

    #[test]
    fn tokens_differ() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
