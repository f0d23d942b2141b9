//! The configuration file's TOML tree, built straight from `toml_parser`'s
//! events (issue 14): tables are Vecs of entries in file order (what the
//! walk wants: no sort, no BTreeMap per inline table), every key and value
//! carries its byte span.
//!
//! The table semantics (`[a.b]`, dotted keys, implicit tables, `[[x]]`,
//! inline tables and their errors) are a port of `toml::de::DeTable::parse`
//! (toml 0.9), so a file gives the same tree and, when bad, the same first
//! error at the same place: `build` follows toml's `document`,
//! `inline_table`, `array` and `key` parsers step by step.

use std::borrow::Cow;
use std::ops::Range;

use foldhash::{HashMap, HashMapExt};

mod build;

pub(super) use build::parse;

/// A value or key with the byte range of its text in the file (u32
/// offsets: `parse` refuses files of 4 GiB or more).
#[derive(Clone, Debug)]
pub(super) struct Spanned<T> {
    start: u32,
    end: u32,
    value: T,
}

impl<T> Spanned<T> {
    pub(super) fn new(span: Range<usize>, value: T) -> Self {
        Spanned {
            start: span.start as u32,
            end: span.end as u32,
            value,
        }
    }

    pub(super) fn get_ref(&self) -> &T {
        &self.value
    }

    pub(super) fn span(&self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

pub(super) type Key<'i> = Spanned<Cow<'i, str>>;
pub(super) type Val<'i> = Spanned<Value<'i>>;

#[derive(Clone, Debug)]
pub(super) enum Value<'i> {
    String(Cow<'i, str>),
    /// `None`: beyond i128 (TOML allows 64 bits; the walk says "out of
    /// range" when it reads one).
    Integer(Option<i128>),
    /// Read by the differential test only: no config key takes a float.
    Float(#[cfg_attr(not(test), allow(dead_code))] f64),
    Boolean(bool),
    /// Recognised and checked, never read by the walk.
    Datetime,
    Array(Array<'i>),
    Table(Table<'i>),
}

impl Value<'_> {
    /// The name toml's errors give the type.
    fn type_str(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::Boolean(_) => "boolean",
            Value::Datetime => "datetime",
            Value::Array(_) => "array",
            Value::Table(_) => "table",
        }
    }
}

/// An array; `[[x]]` headers make one flagged as an array of tables (the
/// only kind a header or dotted key may extend).
#[derive(Clone, Debug, Default)]
pub(super) struct Array<'i> {
    items: Vec<Val<'i>>,
    of_tables: bool,
}

impl<'i> std::ops::Deref for Array<'i> {
    type Target = [Val<'i>];

    fn deref(&self) -> &[Val<'i>] {
        &self.items
    }
}

/// Tables with more entries than this get a hash index (a group table of
/// thousands of `[groups.NAME]` would make lookups quadratic).
const INDEX_FROM: usize = 16;

/// A table: its entries in file order (by key position: see `build`).
#[derive(Clone, Debug, Default)]
pub(super) struct Table<'i> {
    /// `None`: an entry taken out (an implicit table a header defines,
    /// appended again at its header): a hole, so taking one out never
    /// shifts the others or rebuilds the index (thousands of `[a.b]` then
    /// `[a]` would be quadratic).
    entries: Vec<Option<(Key<'i>, Val<'i>)>>,
    /// Key -> index in `entries`, for large tables only.
    index: Option<Box<HashMap<Cow<'i, str>, usize>>>,
    /// Made by a header's or dotted key's path, not (yet) defined itself.
    implicit: bool,
    /// Made by a dotted key.
    dotted: bool,
    /// Written `{ ... }` (or made by a dotted key inside one): closed.
    inline: bool,
}

impl<'i> Table<'i> {
    pub(super) fn new() -> Self {
        Table::default()
    }

    /// An empty table with room for `n` entries.
    fn with_capacity(n: usize) -> Self {
        Table {
            entries: Vec::with_capacity(n),
            ..Table::default()
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Key<'i>, &Val<'i>)> {
        self.entries.iter().flatten().map(|(k, v)| (k, v))
    }

    /// Appends an entry and returns its index; the caller has checked the
    /// key is new.
    pub(super) fn insert(&mut self, key: Key<'i>, value: Val<'i>) -> usize {
        let at = self.entries.len();
        if let Some(index) = &mut self.index {
            index.insert(key.value.clone(), at);
        }
        self.entries.push(Some((key, value)));
        if self.index.is_none() && self.entries.len() > INDEX_FROM {
            self.build_index();
        }
        at
    }

    fn find(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self
                .entries
                .iter()
                .position(|e| matches!(e, Some((k, _)) if k.value == key)),
        }
    }

    /// The value at `i`, an index [`Self::find`] or [`Self::insert`] gave.
    fn value_mut(&mut self, i: usize) -> &mut Value<'i> {
        let (_, v) = self.entries[i].as_mut().expect("an index find gave");
        &mut v.value
    }

    fn remove(&mut self, i: usize) -> (Key<'i>, Val<'i>) {
        let entry = self.entries[i].take().expect("an index find gave");
        if let Some(index) = &mut self.index {
            index.remove(&entry.0.value);
        }
        entry
    }

    fn build_index(&mut self) {
        let mut index = HashMap::with_capacity(self.entries.len() * 2);
        for (i, entry) in self.entries.iter().enumerate() {
            if let Some((k, _)) = entry {
                index.insert(k.value.clone(), i);
            }
        }
        self.index = Some(Box::new(index));
    }
}
