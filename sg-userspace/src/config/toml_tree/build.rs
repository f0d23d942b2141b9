//! From text to [`Table`]: `toml_parser` lexes and parses into events, then
//! a port of toml 0.9's `de::parser` (document, key, value, array, inline
//! table) builds the tree. toml reports every syntax error (the parse)
//! before any semantic one (the build) and keeps the first: so do we, and
//! the build stops at its first error.

use std::borrow::Cow;
use std::ops::Range;

use toml_parser::decoder::{Encoding, ScalarKind};
use toml_parser::parser::{Event, EventKind, EventReceiver, RecursionGuard, ValidateWhitespace};
use toml_parser::{ErrorSink, Expected, ParseError, Source, Span};

use super::{Array, Key, Table, Val, Value};

/// toml's nesting limit (arrays and inline tables; dotted key length).
const LIMIT: u32 = 80;

/// A bad file: where, and toml's message.
#[derive(Debug)]
pub(in crate::config) struct TreeError {
    pub(in crate::config) span: Range<usize>,
    pub(in crate::config) message: String,
}

impl From<ParseError> for TreeError {
    /// The message and span toml's `de::Error` gives.
    fn from(e: ParseError) -> Self {
        let mut message = e.description().to_string();
        if let Some(expected) = e.expected() {
            message.push_str(", expected ");
            if expected.is_empty() {
                message.push_str("nothing");
            }
            for (i, x) in expected.iter().enumerate() {
                if i != 0 {
                    message.push_str(", ");
                }
                match x {
                    Expected::Literal(l) => message.push_str(&render_literal(l)),
                    Expected::Description(d) => message.push_str(d),
                    _ => message.push_str("etc"),
                }
            }
        }
        let span = e.unexpected().map_or(0..0, |s| s.start()..s.end());
        TreeError { span, message }
    }
}

fn render_literal(literal: &str) -> String {
    match literal {
        "\n" => "newline".to_owned(),
        "`" => "'`'".to_owned(),
        s if s.chars().all(|c| c.is_ascii_control()) => format!("`{}`", s.escape_debug()),
        s => format!("`{s}`"),
    }
}

/// Boxed: the build's values pass through `Result`s by the thousand.
type Result<T> = std::result::Result<T, Box<ParseError>>;

/// Parses a whole file into its root table.
pub(in crate::config) fn parse(src: &str) -> std::result::Result<Table<'_>, TreeError> {
    if u32::try_from(src.len()).is_err() {
        return Err(TreeError {
            span: 0..0,
            message: "the file is larger than 4 GiB".to_string(),
        });
    }
    let source = Source::new(src);
    // `into_vec` guesses 2 tokens per 7 bytes; a config has about 1 in 2
    // (short keys, quoted values, spaces), and a regrow copies megabytes.
    let t = crate::phase::start("toml lex");
    let mut tokens = Vec::with_capacity(src.len() / 2 + 8);
    tokens.extend(source.lex());
    drop(t);
    let t = crate::phase::start("toml parse");
    let mut events = Events(Vec::with_capacity(tokens.len() * 2 / 3 + 8));
    let mut first: Option<ParseError> = None;
    {
        let mut ws = ValidateWhitespace::new(&mut events, source);
        let mut guard = RecursionGuard::new(&mut ws, LIMIT);
        toml_parser::parser::parse_document(&tokens, &mut guard, &mut first);
    }
    drop(tokens);
    drop(t);
    if let Some(e) = first {
        return Err(e.into());
    }
    let mut input = Input {
        events: &events.0,
        at: 0,
    };
    let _t = crate::phase::start("toml build");
    document(&mut input, source).map_err(|e| TreeError::from(*e))
}

/// The events the build reads: whitespace, comments and newlines (checked
/// by `ValidateWhitespace` on the way) never change the tree.
struct Events(Vec<Ev>);

/// An [`Event`] in half its size (offsets fit in u32: checked above).
#[derive(Clone, Copy)]
struct Ev {
    kind: EventKind,
    encoding: Option<Encoding>,
    start: u32,
    end: u32,
}

impl Events {
    fn push(&mut self, kind: EventKind, encoding: Option<Encoding>, span: Span) {
        self.0.push(Ev {
            kind,
            encoding,
            start: span.start() as u32,
            end: span.end() as u32,
        });
    }
}

impl EventReceiver for Events {
    fn std_table_open(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.push(EventKind::StdTableOpen, None, span);
    }
    fn std_table_close(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.push(EventKind::StdTableClose, None, span);
    }
    fn array_table_open(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.push(EventKind::ArrayTableOpen, None, span);
    }
    fn array_table_close(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.push(EventKind::ArrayTableClose, None, span);
    }
    fn inline_table_open(&mut self, span: Span, _: &mut dyn ErrorSink) -> bool {
        self.push(EventKind::InlineTableOpen, None, span);
        true
    }
    fn inline_table_close(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.push(EventKind::InlineTableClose, None, span);
    }
    fn array_open(&mut self, span: Span, _: &mut dyn ErrorSink) -> bool {
        self.push(EventKind::ArrayOpen, None, span);
        true
    }
    fn array_close(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.push(EventKind::ArrayClose, None, span);
    }
    fn simple_key(&mut self, span: Span, encoding: Option<Encoding>, _: &mut dyn ErrorSink) {
        self.push(EventKind::SimpleKey, encoding, span);
    }
    fn key_sep(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.push(EventKind::KeySep, None, span);
    }
    fn key_val_sep(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.push(EventKind::KeyValSep, None, span);
    }
    fn scalar(&mut self, span: Span, encoding: Option<Encoding>, _: &mut dyn ErrorSink) {
        self.push(EventKind::Scalar, encoding, span);
    }
    fn value_sep(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.push(EventKind::ValueSep, None, span);
    }
    fn error(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.push(EventKind::Error, None, span);
    }
}

struct Input<'e> {
    events: &'e [Ev],
    at: usize,
}

impl Input<'_> {
    fn next(&mut self) -> Option<Event> {
        let e = self.events.get(self.at)?;
        self.at += 1;
        let span = Span::new_unchecked(e.start as usize, e.end as usize);
        Some(Event::new_unchecked(e.kind, e.encoding, span))
    }

    fn peek(&self) -> Option<EventKind> {
        self.events.get(self.at).map(|e| e.kind)
    }

    /// How many `sep` events the array or inline table just opened holds
    /// at its own level, plus one: its entry count or one more, so its
    /// Vec is allocated once (a rule's table, a list of 10,000 rules).
    fn count_at_level(&self, sep: EventKind) -> usize {
        let mut depth = 0usize;
        if self.peek() == Some(EventKind::ArrayClose) {
            return 0;
        }
        let mut n = 1;
        for e in &self.events[self.at.min(self.events.len())..] {
            match e.kind {
                EventKind::ArrayOpen | EventKind::InlineTableOpen => depth += 1,
                EventKind::ArrayClose | EventKind::InlineTableClose if depth == 0 => break,
                EventKind::ArrayClose | EventKind::InlineTableClose => depth -= 1,
                k if k == sep && depth == 0 => n += 1,
                EventKind::StdTableOpen | EventKind::ArrayTableOpen => break,
                _ => {}
            }
        }
        n
    }
}

fn range(span: Span) -> Range<usize> {
    span.start()..span.end()
}

fn duplicate_key(key: &Key<'_>) -> Box<ParseError> {
    Box::new(ParseError::new("duplicate key").with_unexpected(key_span(key)))
}

fn key_span(key: &Key<'_>) -> Span {
    Span::new_unchecked(key.start as usize, key.end as usize)
}

fn cannot_extend(what: &str, key: &Key<'_>) -> Box<ParseError> {
    let message = format!("cannot extend value of type {what} with a dotted key");
    Box::new(ParseError::new(message).with_unexpected(key_span(key)))
}

/// Runs a decoder, failing on the first error it reports.
fn decoded<T>(f: impl FnOnce(&mut Option<ParseError>) -> T) -> Result<T> {
    let mut first = None;
    let out = f(&mut first);
    match first {
        Some(e) => Err(Box::new(e)),
        None => Ok(out),
    }
}

// -- document (toml's `de::parser::document`) ---------------------------

struct Header<'i> {
    path: Vec<Key<'i>>,
    key: Option<Key<'i>>,
    span: Range<usize>,
    is_array: bool,
}

#[derive(Default)]
struct State<'i> {
    root: Table<'i>,
    /// The table under the last header, detached until the next header.
    current: Table<'i>,
    header: Option<Header<'i>>,
}

fn document<'i>(input: &mut Input<'_>, source: Source<'i>) -> Result<Table<'i>> {
    let mut state = State::default();
    while let Some(event) = input.next() {
        match event.kind() {
            EventKind::StdTableOpen | EventKind::ArrayTableOpen => {
                state.finish_table()?;
                let header = on_table(event, input, source)?;
                state.start_table(header)?;
            }
            EventKind::SimpleKey => {
                let (path, key) = on_key(event, input, source)?;
                let Some(key) = key else { break };
                if input.next().map(|e| e.kind()) != Some(EventKind::KeyValSep) {
                    break;
                }
                let value = value(input, source)?;
                state.capture_key_value(path, key, value)?;
            }
            _ => {}
        }
    }
    state.finish_table()?;
    Ok(state.root)
}

fn on_table<'i>(open: Event, input: &mut Input<'_>, source: Source<'i>) -> Result<Header<'i>> {
    let mut header = Header {
        path: Vec::new(),
        key: None,
        span: range(open.span()),
        is_array: open.kind() == EventKind::ArrayTableOpen,
    };
    while let Some(event) = input.next() {
        match event.kind() {
            EventKind::StdTableClose | EventKind::ArrayTableClose => {
                header.span.end = event.span().end();
                break;
            }
            EventKind::SimpleKey => {
                let (path, key) = on_key(event, input, source)?;
                header.path = path;
                header.key = key;
            }
            _ => {}
        }
    }
    Ok(header)
}

impl<'i> State<'i> {
    fn capture_key_value(
        &mut self,
        path: Vec<Key<'i>>,
        key: Key<'i>,
        value: Val<'i>,
    ) -> Result<()> {
        let parent = descend_path(&mut self.current, &path, true)?;
        // A dotted key may not add to a table defined by a header, nor a
        // plain key to one made by dotted keys.
        if parent.dotted == path.is_empty() || parent.find(&key.value).is_some() {
            return Err(duplicate_key(&key));
        }
        parent.insert(key, value);
        Ok(())
    }

    fn finish_table(&mut self) -> Result<()> {
        let table = std::mem::take(&mut self.current);
        let Some(header) = self.header.take() else {
            self.root = table;
            return Ok(());
        };
        let Some(key) = header.key else {
            return Ok(());
        };
        let table = Val::new(header.span.clone(), Value::Table(table));
        let parent = descend_path(&mut self.root, &header.path, false)?;
        if header.is_array {
            let i = match parent.find(&key.value) {
                Some(i) => i,
                None => {
                    let array = Array {
                        items: Vec::new(),
                        of_tables: true,
                    };
                    parent.insert(key.clone(), Val::new(header.span, Value::Array(array)))
                }
            };
            match parent.value_mut(i) {
                Value::Array(a) if a.of_tables => a.items.push(table),
                _ => return Err(duplicate_key(&key)),
            }
        } else {
            // `start_table` took out any entry of this name.
            parent.insert(key, table);
        }
        Ok(())
    }

    fn start_table(&mut self, header: Header<'i>) -> Result<()> {
        if !header.is_array {
            // An implicit table (made by `[a.b]` before `[a]`) becomes this
            // one, keeping its children; anything else is a redefinition.
            let parent = descend_path(&mut self.root, &header.path, false)?;
            if let Some(key) = &header.key
                && let Some(i) = parent.find(&key.value)
            {
                let (_, old) = parent.remove(i);
                match old.value {
                    Value::Table(t) if t.implicit && !t.dotted => self.current = t,
                    _ => return Err(duplicate_key(key)),
                }
            }
        }
        self.current.implicit = false;
        self.current.dotted = false;
        self.header = Some(header);
        Ok(())
    }
}

/// The table a header's or a dotted key's path leads to, made implicit
/// where absent (toml's `document::descend_path`).
fn descend_path<'t, 'i>(
    mut table: &'t mut Table<'i>,
    path: &[Key<'i>],
    dotted: bool,
) -> Result<&'t mut Table<'i>> {
    for key in path {
        let i = match table.find(&key.value) {
            Some(i) => i,
            None => {
                let new = Table {
                    implicit: true,
                    dotted,
                    ..Table::default()
                };
                table.insert(key.clone(), Val::new(key.span(), Value::Table(new)))
            }
        };
        table = match table.value_mut(i) {
            Value::Array(a) => {
                if !a.of_tables {
                    return Err(cannot_extend("array", key));
                }
                match a.items.last_mut().map(|v| &mut v.value) {
                    Some(Value::Table(t)) => t,
                    Some(other) => return Err(cannot_extend(other.type_str(), key)),
                    None => return Err(cannot_extend("array", key)),
                }
            }
            Value::Table(t) => {
                if t.inline {
                    return Err(cannot_extend("inline table", key));
                }
                if dotted && !t.implicit {
                    return Err(duplicate_key(key));
                }
                t
            }
            other => return Err(cannot_extend(other.type_str(), key)),
        };
    }
    Ok(table)
}

// -- keys (toml's `de::parser::key`) ------------------------------------

/// A key, simple or dotted: the path before its last part, and that part.
fn on_key<'i>(
    first: Event,
    input: &mut Input<'_>,
    source: Source<'i>,
) -> Result<(Vec<Key<'i>>, Option<Key<'i>>)> {
    let mut path = Vec::new();
    let mut last: Option<Key<'i>> = None;
    let mut current = Some(first);
    let mut close = |current: &mut Option<Event>, path: &mut Vec<Key<'i>>| -> Result<()> {
        let Some(event) = current.take() else {
            return Ok(());
        };
        let Some(raw) = source.get(event) else {
            return Ok(());
        };
        let mut text = Cow::Borrowed("");
        decoded(|e| raw.decode_key(&mut text, e))?;
        if let Some(prev) = last.replace(Key::new(range(event.span()), text)) {
            path.push(prev);
        }
        Ok(())
    };
    if input.peek() == Some(EventKind::KeySep) {
        while let Some(event) = input.next() {
            match event.kind() {
                EventKind::SimpleKey => {
                    current = Some(event);
                    if input.peek() != Some(EventKind::KeySep) {
                        break;
                    }
                }
                EventKind::KeySep => close(&mut current, &mut path)?,
                _ => {}
            }
        }
    }
    close(&mut current, &mut path)?;
    if LIMIT as usize <= path.len() {
        return Err(Box::new(ParseError::new("recursion limit")));
    }
    Ok((path, last))
}

// -- values (toml's `de::parser::{value, array, inline_table}`) ----------

fn value<'i>(input: &mut Input<'_>, source: Source<'i>) -> Result<Val<'i>> {
    match input.next() {
        Some(e) if e.kind() == EventKind::InlineTableOpen => on_inline_table(e, input, source),
        Some(e) if e.kind() == EventKind::ArrayOpen => on_array(e, input, source),
        Some(e) if e.kind() == EventKind::Scalar => on_scalar(e, source),
        _ => Ok(Val::new(0..0, Value::Integer(Some(0)))),
    }
}

fn on_scalar<'i>(event: Event, source: Source<'i>) -> Result<Val<'i>> {
    let span = range(event.span());
    let Some(raw) = source.get(event) else {
        return Ok(Val::new(span, Value::Integer(Some(0))));
    };
    let mut text = Cow::Borrowed("");
    let kind = decoded(|e| raw.decode_scalar(&mut text, e))?;
    let value = match kind {
        ScalarKind::String => Value::String(text),
        ScalarKind::Boolean(b) => Value::Boolean(b),
        ScalarKind::DateTime => {
            // toml_parser recognises the shape; toml_datetime checks the
            // fields (month 13, hour 25...), as toml does.
            if let Err(e) = text.parse::<toml::value::Datetime>() {
                let e = ParseError::new(e.to_string()).with_unexpected(event.span());
                return Err(Box::new(e));
            }
            Value::Datetime
        }
        ScalarKind::Float => Value::Float(text.parse().unwrap_or(f64::NAN)),
        ScalarKind::Integer(radix) => {
            Value::Integer(i128::from_str_radix(&text, radix.value()).ok())
        }
    };
    Ok(Val::new(span, value))
}

fn on_array<'i>(open: Event, input: &mut Input<'_>, source: Source<'i>) -> Result<Val<'i>> {
    let mut items = Vec::with_capacity(input.count_at_level(EventKind::ValueSep));
    let mut current = None;
    let mut end = open.span().end();
    while let Some(event) = input.next() {
        end = event.span().end();
        match event.kind() {
            EventKind::InlineTableOpen => current = Some(on_inline_table(event, input, source)?),
            EventKind::ArrayOpen => current = Some(on_array(event, input, source)?),
            EventKind::Scalar => current = Some(on_scalar(event, source)?),
            EventKind::ValueSep => items.extend(current.take()),
            EventKind::ArrayClose => {
                items.extend(current.take());
                break;
            }
            EventKind::Error => {}
            _ => break,
        }
    }
    let array = Array {
        items,
        of_tables: false,
    };
    Ok(Val::new(open.span().start()..end, Value::Array(array)))
}

fn on_inline_table<'i>(open: Event, input: &mut Input<'_>, source: Source<'i>) -> Result<Val<'i>> {
    let mut table = Table {
        inline: true,
        ..Table::with_capacity(input.count_at_level(EventKind::KeyValSep) - 1)
    };
    let mut key: Option<(Vec<Key<'i>>, Key<'i>)> = None;
    let mut current: Option<Val<'i>> = None;
    let mut end = open.span().end();
    while let Some(event) = input.next() {
        end = event.span().end();
        match event.kind() {
            EventKind::SimpleKey => {
                if let (path, Some(k)) = on_key(event, input, source)? {
                    key = Some((path, k));
                }
            }
            EventKind::KeyValSep | EventKind::Error => {}
            EventKind::InlineTableOpen => current = Some(on_inline_table(event, input, source)?),
            EventKind::ArrayOpen => current = Some(on_array(event, input, source)?),
            EventKind::Scalar => current = Some(on_scalar(event, source)?),
            EventKind::ValueSep => inline_entry(&mut table, key.take(), current.take())?,
            EventKind::InlineTableClose => {
                inline_entry(&mut table, key.take(), current.take())?;
                break;
            }
            _ => break,
        }
    }
    Ok(Val::new(open.span().start()..end, Value::Table(table)))
}

/// One `key = value` of an inline table (toml's `inline_table::finish_value`).
fn inline_entry<'i>(
    table: &mut Table<'i>,
    key: Option<(Vec<Key<'i>>, Key<'i>)>,
    value: Option<Val<'i>>,
) -> Result<()> {
    let (Some((path, key)), Some(value)) = (key, value) else {
        return Ok(());
    };
    let parent = descend_inline(table, &path)?;
    if parent.dotted == path.is_empty() || parent.find(&key.value).is_some() {
        return Err(duplicate_key(&key));
    }
    parent.insert(key, value);
    Ok(())
}

/// [`descend_path`] inside an inline table (toml's
/// `inline_table::descend_path`): only tables there, all of them inline.
fn descend_inline<'t, 'i>(
    mut table: &'t mut Table<'i>,
    path: &[Key<'i>],
) -> Result<&'t mut Table<'i>> {
    for key in path {
        let i = match table.find(&key.value) {
            Some(i) => i,
            None => {
                let new = Table {
                    implicit: true,
                    dotted: true,
                    inline: true,
                    ..Table::default()
                };
                table.insert(key.clone(), Val::new(key.span(), Value::Table(new)))
            }
        };
        table = match table.value_mut(i) {
            Value::Table(t) => {
                if !t.implicit {
                    return Err(duplicate_key(key));
                }
                t
            }
            other => return Err(cannot_extend(other.type_str(), key)),
        };
    }
    Ok(table)
}
