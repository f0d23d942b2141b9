//! The TOML tree of a large file, parsed in chunks on several threads.
//!
//! `toml` parses a document on one thread (~25 ms at 10,000 rules). A
//! file whose tail holds only `[SECTION.NAME]` tables (`[groups.web]`,
//! `[interfaces.eth0]`) can be cut at such headers and the pieces parsed
//! apart, then their tables merged. Cutting never changes meaning:
//! anything doubtful gives up (`None`), and the caller parses the whole
//! file, which also yields the exact error.
//! - Every chunk must parse. A cut inside a multi-line string, array or
//!   inline table leaves the chunk before it unterminated: a syntax error.
//!   So each later chunk starts where the whole-file parser is at a line
//!   of the top level, about to read a table header.
//! - In every chunk after the first, each line that starts (after blanks)
//!   with `[` must be exactly `[SECTION.NAME]`, both bare keys. Every real
//!   table header is such a line, so those chunks hold nothing but
//!   two-level tables, each opened by its own header.
//! - A SECTION already in the tree must have been opened by a header
//!   (`[SECTION]` or `[SECTION.X]`) where it first appears, so more
//!   `[SECTION.NAME]` headers may extend it (an inline or dotted SECTION
//!   could not be extended).
//! - A NAME may appear in one chunk only: in two, it is a duplicate table
//!   or a sub-table, both left to the whole-file parse.
//!
//! Spans must be offsets into the whole file: each later chunk is parsed
//! behind a comment as long as the text before it, so its offsets are the
//! file's own.

use toml::de::{DeTable, DeValue};

/// Files smaller than this are parsed whole: threads would not pay.
pub(super) const MIN_CHUNKED_BYTES: usize = 128 * 1024;

/// Where to cut `source` into at most `parts` chunks: offsets of lines
/// that open a `[SECTION.NAME]` table, after which every table header is
/// such a line; empty when the file cannot be cut.
pub(super) fn cut_points(source: &str, parts: usize) -> Vec<usize> {
    // Candidate cuts, and the last line that rules out cutting before it.
    let mut candidates = Vec::new();
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let body = line.trim_start_matches([' ', '\t']);
        if !body.starts_with('[') {
            continue;
        }
        if body.len() == line.len() && is_section_header(line) {
            candidates.push(start);
        } else {
            // Another header, or a `[` line whose meaning a scan can't tell.
            candidates.clear();
        }
    }
    // The first chunk runs from the file's start; cuts at 0 or 1 would
    // leave no room for the comment that pads a later chunk.
    candidates.retain(|&c| c >= 2);
    let mut cuts: Vec<usize> = Vec::new();
    for i in 1..parts {
        let target = source.len() * i / parts;
        let Some(&best) = candidates.iter().min_by_key(|&&c| c.abs_diff(target)) else {
            break;
        };
        if cuts.last().is_none_or(|&last| best > last) {
            cuts.push(best);
        }
    }
    cuts
}

/// `[SECTION.NAME]`, both bare keys (`A-Za-z0-9_-`), then optional
/// blanks and comment, from the start of `line`.
fn is_section_header(line: &str) -> bool {
    fn bare_key(s: &str) -> usize {
        s.bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
            .count()
    }
    let Some(rest) = line.strip_prefix('[') else {
        return false;
    };
    let section = bare_key(rest);
    let Some(rest) = rest[section..].strip_prefix('.') else {
        return false;
    };
    let name = bare_key(rest);
    let Some(rest) = rest[name..].strip_prefix(']') else {
        return false;
    };
    let rest = rest.trim_start_matches([' ', '\t']);
    section > 0 && name > 0 && (rest.is_empty() || rest.starts_with(['#', '\n', '\r']))
}

/// Each later chunk behind a comment as long as the text before it.
pub(super) fn padded_chunks(source: &str, cuts: &[usize]) -> Vec<String> {
    let ends = cuts.iter().skip(1).copied().chain([source.len()]);
    cuts.iter()
        .zip(ends)
        .map(|(&start, end)| {
            const SPACES: &str = "                                                                ";
            let mut s = String::with_capacity(end);
            s.push('#');
            let mut blanks = start - 2;
            while blanks > 0 {
                let n = blanks.min(SPACES.len());
                s.push_str(&SPACES[..n]);
                blanks -= n;
            }
            s.push('\n');
            s.push_str(&source[start..end]);
            s
        })
        .collect()
}

/// The tree of `source` cut at `cuts` (with `padded` from
/// [`padded_chunks`]), parsed on one thread per chunk; `None` if any check
/// fails.
pub(super) fn parse<'i>(
    source: &'i str,
    cuts: &[usize],
    padded: &'i [String],
) -> Option<DeTable<'i>> {
    let first = &source[..*cuts.first()?];
    let (first, rest) = std::thread::scope(|s| {
        let rest: Vec<_> = padded
            .iter()
            .map(|p| s.spawn(move || DeTable::parse(p).ok().map(|t| t.into_inner())))
            .collect();
        let first = DeTable::parse(first).ok().map(|t| t.into_inner());
        let rest: Option<Vec<DeTable<'i>>> =
            rest.into_iter().map(|h| h.join().ok().flatten()).collect();
        (first, rest)
    });
    let (mut root, rest) = (first?, rest?);
    for chunk in rest {
        for (key, value) in chunk {
            // Every top-level value of a later chunk is a header-made table.
            if !matches!(value.get_ref(), DeValue::Table(_)) {
                return None;
            }
            let Some((old_key, _)) = root.get_key_value(key.get_ref().as_ref()) else {
                root.insert(key, value);
                continue;
            };
            if !opened_by_header(source, old_key.span().start) {
                return None;
            }
            let DeValue::Table(old) = root.get_mut(key.get_ref().as_ref())?.get_mut() else {
                return None;
            };
            let DeValue::Table(new) = value.into_inner() else {
                return None;
            };
            for (name, table) in new {
                if old.contains_key(name.get_ref().as_ref()) {
                    return None;
                }
                old.insert(name, table);
            }
        }
    }
    Some(root)
}

/// True if the key at `offset` is the first key of a table header (`[K]`,
/// `[K.X]`), not a key of a key/value pair (inline or dotted).
fn opened_by_header(source: &str, offset: usize) -> bool {
    let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    source[line_start..offset].trim_matches([' ', '\t']) == "["
}
