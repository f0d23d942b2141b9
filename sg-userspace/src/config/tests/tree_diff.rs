//! Differential guard of the config's TOML tree (`toml_tree`, issue 14):
//! for every text, the tree must equal what `toml::de::DeTable::parse`
//! gives (keys, values, spans, entries in the order the walk reads them)
//! and a bad text must fail with toml's message at toml's span.
//!
//! Besides the corpus below, `config::parse` runs [`check`] on every text
//! any config test parses (cfg(test) only).

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::fails;
use super::fast_parse::big_config;
use crate::config::toml_tree::{self, Table, Value};

/// One comparable form of both trees.
#[derive(Debug, PartialEq)]
enum V {
    Str(String),
    Int(Option<i128>),
    /// Bits, NaNs folded into one.
    Float(u64),
    Bool(bool),
    Datetime,
    Array(Vec<(Range<usize>, V)>),
    Table(Vec<(Range<usize>, String, Range<usize>, V)>),
}

fn float(f: f64) -> V {
    V::Float(if f.is_nan() {
        f64::NAN.to_bits()
    } else {
        f.to_bits()
    })
}

fn from_toml(v: &DeValue<'_>) -> V {
    match v {
        DeValue::String(s) => V::Str(s.to_string()),
        DeValue::Integer(i) => V::Int(i128::from_str_radix(i.as_str(), i.radix()).ok()),
        DeValue::Float(f) => float(f.as_str().parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => V::Bool(*b),
        DeValue::Datetime(_) => V::Datetime,
        DeValue::Array(a) => V::Array(
            a.iter()
                .map(|x| (x.span(), from_toml(x.get_ref())))
                .collect(),
        ),
        DeValue::Table(t) => from_toml_table(t),
    }
}

/// toml's table in the order the walk used to read it: by key position.
fn from_toml_table(t: &DeTable<'_>) -> V {
    let mut entries: Vec<_> = t.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    V::Table(
        entries
            .into_iter()
            .map(|(k, v)| {
                (
                    k.span(),
                    k.get_ref().to_string(),
                    v.span(),
                    from_toml(v.get_ref()),
                )
            })
            .collect(),
    )
}

fn from_ours(v: &Value<'_>) -> V {
    match v {
        Value::String(s) => V::Str(s.to_string()),
        Value::Integer(i) => V::Int(*i),
        Value::Float(f) => float(*f),
        Value::Boolean(b) => V::Bool(*b),
        Value::Datetime => V::Datetime,
        Value::Array(a) => V::Array(
            a.iter()
                .map(|x| (x.span(), from_ours(x.get_ref())))
                .collect(),
        ),
        Value::Table(t) => from_ours_table(t),
    }
}

fn from_ours_table(t: &Table<'_>) -> V {
    V::Table(
        t.iter()
            .map(|(k, v)| {
                (
                    k.span(),
                    k.get_ref().to_string(),
                    v.span(),
                    from_ours(v.get_ref()),
                )
            })
            .collect(),
    )
}

/// Either tree, or the error as (span, message).
fn toml_result(src: &str) -> Result<V, (Range<usize>, String)> {
    DeTable::parse(src)
        .map(|t| from_toml_table(t.get_ref()))
        .map_err(|e| (e.span().unwrap_or(0..0), e.message().to_string()))
}

fn our_result(src: &str) -> Result<V, (Range<usize>, String)> {
    toml_tree::parse(src)
        .map(|t| from_ours_table(&t))
        .map_err(|e| (e.span, e.message))
}

/// Panics unless both parsers agree on `src`; returns whether it parsed.
#[track_caller]
pub(crate) fn check(src: &str) -> bool {
    let (want, got) = (toml_result(src), our_result(src));
    assert_eq!(got, want, "the trees differ for:\n---\n{src}\n---");
    got.is_ok()
}

/// Texts both parse; each exercises a corner of TOML a config can hold.
const GOOD: &[&str] = &[
    "",
    "\n\n# only a comment\n",
    "a = 1",
    "a = 1\r\nb = 'x'\r\n[t]\r\nc = [1,\r\n 2]\r\n",
    // Dotted keys, quoted keys with dots, whitespace around dots.
    "a.b.c = 1\na.b.d = 2\na.e = 3\n",
    "\"a.b\" = 1\n'c.d'.e = 2\n a . f = 3\n",
    "[t]\nx.y = 1\nx.z = 2\n[t.w]\nq = 1\n",
    // Implicit tables defined later, in any order.
    "[a.b.c]\nx = 1\n[z]\ny = 2\n[a]\nw = 3\n[a.b]\nv = 4\n",
    "[groups.g]\ningress = []\n[groups.h]\n[groups]\n",
    // Arrays of tables, nested, and sub-tables of their last element.
    "[[x]]\na = 1\n[[x]]\na = 2\n[x.sub]\nb = 3\n[[x.list]]\nc = 4\n[[x.list]]\nc = 5\n",
    "[[a.b]]\n[[a.b]]\nk = 1\n[a]\nm = 2\n",
    // Inline tables and arrays nested, dotted keys inside inline tables.
    "x = { a.b = 1, a.c = { d = [1, [2, { e = 3 }]] } }\n",
    "r = [ { p = 1 }, { p = 2, q = [] }, ]\nempty = {}\ne2 = []\n",
    "a = [\n  1, # one\n  2,\n  # comment line\n]\n",
    // Strings: basic, literal, multi-line, escapes, unicode.
    "s1 = \"tab\\tnl\\nq\\\"u\\u00e9U\\U0001F600\"\ns2 = 'C:\\path'\n",
    "s3 = \"\"\"\nline1\nline2 \\\n   joined\"\"\"\ns4 = '''\nraw\\n'''\n",
    "s5 = \"\"\"quote\"\"here\"\"\"\ns6 = ''''it''''\n",
    "\"ключ\" = \"значение\"\n'日本' = { \"é\" = 'ü' }\n",
    "\"\" = 1\n'x' .a = 2\n",
    // TOML 1.1: newlines and a trailing comma in inline tables.
    "a = {b = 1,}\nc = {\n  d = 1, # c\n  e = 2\n}\n",
    // Integers in every base, with underscores and signs.
    "i = [0, +1, -1, 1_000, 0xDEAD_beef, 0o755, 0b1010_1010, 9223372036854775807, -9223372036854775808]\n",
    "big = 170141183460469231731687303715884105728\n",
    // toml_parser takes a prefix without digits (the walk then says "out
    // of range"): so must we.
    "a = 0x\n",
    // Floats, inf and nan.
    "f = [1.0, -0.5, 3e2, 6.02E+23, 1_000.000_1, inf, +inf, -inf, nan, +nan, -nan, -0.0]\n",
    // Booleans and datetimes of every kind.
    "b = [true, false]\nd = [1979-05-27T07:32:00Z, 1979-05-27 07:32:00.999-07:00, 1979-05-27T07:32:00, 1979-05-27, 07:32:00, 00:32:00.999999]\n",
    // Comments everywhere.
    "# c\n[t] # c\na = 1 # c\nb = [ # c\n 1 # c\n , 2 # c\n] # c\n[[u]] # c\n",
    "[ t . 'q' ]\n[[ u . v ]]\n",
    // Keys that look like other things.
    "1 = 1\n2.3 = 3\ntrue = false\ninf = 1\n-_ = 2\n",
    // A header after a dotted key made a table in the same table.
    "[fruit]\napple.color = 'red'\n[fruit.banana]\nx = 1\n",
];

/// Texts both reject, each at its own place.
const BAD: &[&str] = &[
    // Duplicates and redefinitions.
    "a = 1\na = 2\n",
    "a = 1\n\"a\" = 2\n",
    "[t]\n[t]\n",
    "[t]\nx = 1\n[t]\ny = 2\n",
    "[a.b]\n[a]\nb = 1\n",
    "a.b = 1\na.b = 2\n",
    "a.b = 1\na = 2\n",
    "a = {}\na.b = 1\n",
    "a = { b = 1 }\n[a]\n",
    "a = { b = 1 }\n[a.c]\n",
    "a = 1\n[a.b]\n",
    "a = [1]\n[[a]]\n",
    "a = [1]\na.b = 2\n",
    "[[a]]\n[a]\n",
    "[a]\n[[a]]\n",
    "[a.b]\n[[a]]\n",
    "[t]\nx.y = 1\n[t.x]\n",
    "[t.x]\n[t]\nx.y = 1\n",
    "x = { a = 1, a = 2 }\n",
    "x = { a.b = 1, a = 2 }\n",
    "x = { a = 1, a.b = 2 }\n",
    "x = { a = { b = 1 }, a.c = 2 }\n",
    "x = { a.b = 1, a.b.c = 2 }\n",
    "[[x]]\na = 1\na = 2\n",
    "[fruit]\napple.color = 'red'\n[fruit.apple]\n",
    "[fruit.apple]\n[fruit]\napple.x = 1\n",
    // A dotted key may not add to a table a header's path made.
    "[a.b.c]\n[a]\nb.d = 1\n",
    "[a.b.c]\n[a]\nb.c.x = 1\n",
    "\"\" = 1\n'' .a = 2\n",
    // Syntax errors at several places.
    "a =\n",
    "= 1\n",
    "a = 1 b = 2\n",
    "[t\n",
    "[t]]\n",
    "[[t]\n",
    "a = [1 2]\n",
    "a = [1,,2]\n",
    "a = { b = 1, c = }\n",
    "a.b. = 1\n",
    "a = 1\n\n\n     [x\n",
    "key = value\n",
    "a = 1 # ok\nb = \"\u{7}\"\n",
    "a = 1\n# bad \u{0} comment\n",
    "a = 1\r\r\n",
    // Strings.
    "a = \"open\n",
    "a = 'open\n",
    "a = \"\"\"open\n",
    "a = \"bad \\q escape\"\n",
    "a = \"\\u12\"\n",
    "a = \"\\uD800\"\n",
    "\"\"\"ml\"\"\" = 1\n",
    "'''ml''' = 1\n",
    // Numbers and datetimes.
    "a = 01\n",
    "a = 1__0\n",
    "a = _1\n",
    "a = 1_\n",
    "a = +0x1\n",
    "a = 0b2\n",
    "a = 1.\n",
    "a = .5\n",
    "a = 1e\n",
    "a = 1979-13-27\n",
    "a = 1979-02-30\n",
    "a = 1979-05-27T25:00:00\n",
    "a = 07:60:00\n",
    "a = 1979-05-27T07:32:00+25:00\n",
    "a = truee\n",
    // Nesting beyond toml's limit.
    "a = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
];

#[test]
fn good_texts_give_toml_s_tree() {
    let failed: Vec<_> = GOOD.iter().filter(|src| !check(src)).collect();
    assert!(failed.is_empty(), "expected to parse: {failed:#?}");
}

#[test]
fn bad_texts_fail_as_toml_fails() {
    let parsed: Vec<_> = BAD.iter().filter(|src| check(src)).collect();
    assert!(parsed.is_empty(), "expected to fail: {parsed:#?}");
}

#[test]
fn long_dotted_keys_fail_as_toml_fails() {
    let key = vec!["k"; 90].join(".");
    assert!(!check(&format!("{key} = 1\n")));
    assert!(!check(&format!("[{key}]\n")));
    let ok = vec!["k"; 60].join(".");
    assert!(check(&format!("{ok} = 1\n[{ok}x]\n")));
}

#[test]
fn the_examples_and_a_big_config_give_toml_s_tree() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).expect("example");
            assert!(check(&text), "{}", path.display());
            n += 1;
        }
    }
    assert!(n >= 2, "examples/*.toml not found in {}", dir.display());
    assert!(check(&big_config(30, 200)));
}

/// Many `[groups.NAME]` headers: the table index, and its rebuild when an
/// implicit table is taken out of a large table.
#[test]
fn large_tables_give_toml_s_tree() {
    let mut s = String::new();
    for g in 0..100 {
        s.push_str(&format!("[groups.g{g}.sub]\nx = {g}\n"));
    }
    for g in (0..100).step_by(7) {
        s.push_str(&format!("[groups.g{g}]\ny = {g}\n"));
    }
    assert!(check(&s));
    assert!(!check(&format!("{s}[groups.g7]\n")));
    assert!(check(&format!("{s}[groups.g3]\nz = 1\n")));
}

/// Semantic errors found by the tree keep file:line:col.
#[test]
fn tree_errors_name_the_line_and_column() {
    fails("a = 1\n  a = 2\n", 2, 3, "TOML syntax error: duplicate key");
    fails(
        "[groups.g]\n[groups.g]\n",
        2,
        9,
        "TOML syntax error: duplicate key",
    );
    fails(
        "[groups]\ng = { ingress = [] }\n[groups.g.x]\n",
        3,
        9,
        "cannot extend value of type inline table with a dotted key",
    );
    fails("x = 1979-13-01\n", 1, 5, "TOML syntax error:");
}
