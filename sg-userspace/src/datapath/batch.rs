//! Many entries of one map in one syscall (`BPF_MAP_UPDATE_BATCH`, Linux
//! 5.6+; aya has no batch API): a 10,000-rule apply writes ~30,000
//! entries, one syscall each without it. Kernels without batch support
//! get one update per entry.

use std::os::fd::{AsFd as _, AsRawFd as _};

use anyhow::Result;
use aya::{
    Pod,
    maps::{IterableMap, MapData},
};

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// What a batch update did: all written, or the error after `written`.
enum Outcome {
    Done,
    Unsupported,
    Failed(std::io::Error),
}

/// `bpf(cmd, attr)` for a batch command; the kernel sets `attr.count` to
/// the entries it handled, also on error.
///
/// # Safety
/// `attr`'s key, value and batch-position pointers must have room for
/// `attr.count` entries laid out as the map's keys and values (and for the
/// map's batch position), as the command reads or writes them.
unsafe fn bpf_batch(cmd: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: the caller vouches for the pointers in `attr`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The answer of a kernel without batch operations for this map kind
/// (ENOTSUPP, 524, is the kernel's own).
fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | 524)
    )
}

/// Writes `entries` into `map` (a hash or an array: `K` is the key or the
/// index). On error, the entries before the failing one may be written.
pub(super) fn update<M, K, V>(
    map: &mut M,
    entries: &[(K, V)],
    mut one: impl FnMut(&mut M, &K, &V) -> Result<()>,
) -> Result<()>
where
    M: IterableMap<K, V>,
    K: Pod,
    V: Pod,
{
    if entries.is_empty() {
        return Ok(());
    }
    match update_batch(map.map(), entries) {
        Outcome::Done => Ok(()),
        Outcome::Failed(e) => Err(e.into()),
        Outcome::Unsupported => {
            for (k, v) in entries {
                one(map, k, v)?;
            }
            Ok(())
        }
    }
}

fn update_batch<K: Pod, V: Pod>(map: &MapData, entries: &[(K, V)]) -> Outcome {
    let keys: Vec<K> = entries.iter().map(|(k, _)| *k).collect();
    let values: Vec<V> = entries.iter().map(|(_, v)| *v).collect();
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    let mut done = 0;
    while done < keys.len() {
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done..].as_ptr() as u64,
            count: (keys.len() - done) as u32,
            map_fd: fd,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at `count` keys and values laid out as the
        // map's key and value (aya checked their sizes when it opened the
        // map); all outlive the call, which reads them only.
        if let Err(e) = unsafe { bpf_batch(BPF_MAP_UPDATE_BATCH, &mut attr) } {
            if done == 0 && attr.count == 0 && unsupported(&e) {
                return Outcome::Unsupported;
            }
            return Outcome::Failed(e);
        }
        // The kernel reports how many it wrote.
        done += (attr.count as usize).max(1);
    }
    Outcome::Done
}

const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// Deletes `keys` from the hash `map`; a key already gone is no error
/// (see `deleted`). Kernels without batch support get one delete per key.
pub(super) fn delete<M, K, V>(
    map: &mut M,
    keys: &[K],
    mut one: impl FnMut(&mut M, &K) -> Result<()>,
) -> Result<()>
where
    // Any value: only keys are passed (per-CPU hashes too).
    M: IterableMap<K, V>,
    K: Pod,
{
    if keys.is_empty() {
        return Ok(());
    }
    let fd = map.map().fd().as_fd().as_raw_fd() as u32;
    let mut done = 0;
    while done < keys.len() {
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            count: (keys.len() - done) as u32,
            map_fd: fd,
            ..BatchAttr::default()
        };
        // SAFETY: as in `update_batch`; no values are passed.
        let Err(e) = (unsafe { bpf_batch(BPF_MAP_DELETE_BATCH, &mut attr) }) else {
            return Ok(());
        };
        match e.raw_os_error() {
            // The key after the `count` deleted was already gone: skip it.
            Some(libc::ENOENT) => done += attr.count as usize + 1,
            _ if unsupported(&e) && done == 0 && attr.count == 0 => {
                for k in keys {
                    one(map, k)?;
                }
                return Ok(());
            }
            _ => return Err(e.into()),
        }
    }
    Ok(())
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries fetched per `BPF_MAP_LOOKUP_BATCH` call. A hash hands out whole
/// buckets, so this must exceed the longest bucket (ENOSPC otherwise: then
/// the batch is grown).
const LOOKUP_CHUNK: usize = 8192;

/// Every entry of the (non per-CPU) hash `map`, `LOOKUP_CHUNK` per syscall
/// (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6+) instead of two per entry
/// (`get_next_key`, then a lookup): the room checks and removal scans of
/// a 10,000-rule apply walk ~20,000 keys per table. Exact, like the walk:
/// it reads what the kernel holds, leftovers included. Kernels without
/// batch lookups get `walk`.
pub(super) fn entries<M, K, V>(
    map: &M,
    walk: impl FnOnce(&M) -> Result<Vec<(K, V)>>,
) -> Result<Vec<(K, V)>>
where
    M: IterableMap<K, V>,
    K: Pod,
    V: Pod,
{
    let fd = map.map().fd().as_fd().as_raw_fd() as u32;
    let mut out: Vec<(K, V)> = Vec::new();
    let mut chunk = LOOKUP_CHUNK;
    // The batch position: a bucket number for a hash (u32); room for a
    // key too, which is what other map kinds use.
    let width = std::mem::size_of::<K>().max(8);
    let mut in_batch = vec![0u8; width];
    let mut out_batch = vec![0u8; width];
    let mut first = true;
    loop {
        let mut keys: Vec<K> = Vec::with_capacity(chunk);
        let mut values: Vec<V> = Vec::with_capacity(chunk);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { in_batch.as_ptr() as u64 },
            out_batch: out_batch.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd,
            ..BatchAttr::default()
        };
        // SAFETY: `keys` and `values` have room for `count` keys and values
        // laid out as the map's (aya checked their sizes when it opened
        // the map; not per-CPU, so one value per key); the batch positions
        // have room for the map's position. The kernel writes no more.
        let err = unsafe { bpf_batch(BPF_MAP_LOOKUP_BATCH, &mut attr) }.err();
        let errno = err.as_ref().and_then(std::io::Error::raw_os_error);
        match errno {
            None | Some(libc::ENOENT) => {
                let n = (attr.count as usize).min(chunk);
                // SAFETY: the kernel wrote `n` keys and values.
                unsafe {
                    keys.set_len(n);
                    values.set_len(n);
                }
                out.extend(keys.into_iter().zip(values));
                if errno.is_some() {
                    return Ok(out); // ENOENT: the walk is done.
                }
                in_batch.copy_from_slice(&out_batch);
                first = false;
            }
            // A bucket longer than the batch: retry larger.
            Some(libc::ENOSPC) if attr.count == 0 => chunk *= 4,
            _ if err.as_ref().is_some_and(unsupported) && first && out.is_empty() => {
                return walk(map);
            }
            _ => return Err(err.expect("an errno").into()),
        }
    }
}
