//! The walk over the TOML tree: every key and value is checked where it
//! stands, so errors and warnings carry its line and column. Rules are
//! walked in `rule`.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;

use super::toml_tree::{Key, Table, Val, Value};
use foldhash::{HashMap, HashMapExt};

use super::{
    Config, ConfigError, ConntrackConfig, Direction, EventsConfig, Group, InterfaceConfig,
    MAX_TEXT_CHARS, Mode, RULE_ID_HEX_DIGITS, Rule, default_egress_rule, parse_cidr,
    parse_duration, validate_group_name, validate_iface_name,
};

mod nacl;
mod prefix_list;
mod rule;

use rule::RawRule;

pub(super) struct Ctx<'s> {
    file: &'s str,
    src: &'s str,
    /// Offsets of the lines, found at the first error or warning: a clean
    /// file needs none.
    line_starts: std::cell::OnceCell<Vec<usize>>,
    pub(super) warnings: Vec<String>,
    /// Names of `[prefix_lists]`, known before any rule is walked.
    prefix_list_names: BTreeSet<String>,
    /// Every rule ID seen so far, with where its rule stands: IDs are
    /// unique across groups too (explicit `id`s could collide).
    rule_ids: HashMap<IdKey, SeenRule>,
    /// Rule lists walked so far, to tell a duplicate within one list from
    /// an ID used again elsewhere.
    rule_lists: usize,
}

/// A rule ID's bytes (every ID, computed or explicit, has this length): a
/// map key without an allocation per rule.
type IdKey = [u8; 4 + RULE_ID_HEX_DIGITS];

/// Where a rule of a given ID was seen.
struct SeenRule {
    span: Range<usize>,
    /// Which rule list (a group's `ingress` or `egress`) it is in.
    list: usize,
    /// Its index in that list.
    index: usize,
}

fn id_key(id: &str) -> IdKey {
    // Computed IDs have this length and explicit ones are checked for it;
    // anything else maps to a key no real ID has.
    id.as_bytes()
        .try_into()
        .unwrap_or([0; 4 + RULE_ID_HEX_DIGITS])
}

/// The entries of a table, in file order, after checking the keys.
struct Fields<'t, 'i> {
    entries: Vec<(&'t Key<'i>, &'t Val<'i>)>,
}

impl<'t, 'i> Fields<'t, 'i> {
    fn get(&self, key: &str) -> Option<&'t Val<'i>> {
        self.entries
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| *v)
    }
}

/// The text of an item [`Ctx::string_list`] checked.
fn str_of<'t>(v: &'t Val<'_>) -> &'t str {
    match v.get_ref() {
        Value::String(s) => s,
        _ => "",
    }
}

fn type_name(v: &Value<'_>) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// Entries of a table in file order (the tree keeps them so: no sort).
fn sorted_entries<'t, 'i>(table: &'t Table<'i>) -> Vec<(&'t Key<'i>, &'t Val<'i>)> {
    table.iter().collect()
}

impl<'s> Ctx<'s> {
    pub(super) fn new(src: &'s str, file: &'s str) -> Self {
        Ctx {
            file,
            src,
            line_starts: std::cell::OnceCell::new(),
            warnings: Vec::new(),
            prefix_list_names: BTreeSet::new(),
            rule_ids: HashMap::new(),
            rule_lists: 0,
        }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.src.len());
        while !self.src.is_char_boundary(offset) {
            offset -= 1;
        }
        let line_starts = self.line_starts.get_or_init(|| {
            let mut starts = vec![0];
            starts.extend(self.src.match_indices('\n').map(|(i, _)| i + 1));
            starts
        });
        let line = line_starts.partition_point(|&s| s <= offset);
        let start = line_starts[line - 1];
        let column = self.src[start..offset].chars().count() + 1;
        (line, column)
    }

    pub(super) fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = self.position(span.start);
        ConfigError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    fn warn(&mut self, span: Range<usize>, message: impl fmt::Display) {
        let (line, column) = self.position(span.start);
        self.warnings
            .push(format!("{}:{line}:{column}: {message}", self.file));
    }

    fn fields<'t, 'i>(
        &self,
        table: &'t Table<'i>,
        allowed: &[&str],
        what: &str,
    ) -> Result<Fields<'t, 'i>, ConfigError> {
        let entries = sorted_entries(table);
        for (k, _) in &entries {
            if !allowed.contains(&k.get_ref().as_ref()) {
                return Err(self.err(
                    k.span(),
                    format!(
                        "unknown key `{}` in {what}; expected one of: {}",
                        k.get_ref(),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        Ok(Fields { entries })
    }

    /// [`Self::fields`] without its Vec and sort: the value of each of
    /// `allowed` by its index there. On an unknown key, the error
    /// `fields` gives (the first unknown key in file order).
    fn slots<'t, 'i, const N: usize>(
        &self,
        table: &'t Table<'i>,
        allowed: &[&str; N],
        what: &str,
    ) -> Result<[Option<(&'t Key<'i>, &'t Val<'i>)>; N], ConfigError> {
        let mut out = [None; N];
        for (k, v) in table.iter() {
            match allowed.iter().position(|a| *a == k.get_ref().as_ref()) {
                Some(i) => out[i] = Some((k, v)),
                None => {
                    return Err(match self.fields(table, allowed, what) {
                        Err(e) => e,
                        Ok(_) => self.err(k.span(), format!("unknown key `{}`", k.get_ref())),
                    });
                }
            }
        }
        Ok(out)
    }

    fn table<'t, 'i>(&self, v: &'t Val<'i>, what: &str) -> Result<&'t Table<'i>, ConfigError> {
        match v.get_ref() {
            Value::Table(t) => Ok(t),
            other => Err(self.err(
                v.span(),
                format!("expected a table for {what}, found {}", type_name(other)),
            )),
        }
    }

    fn array<'t, 'i>(&self, v: &'t Val<'i>, what: &str) -> Result<&'t [Val<'i>], ConfigError> {
        match v.get_ref() {
            Value::Array(a) => Ok(a),
            other => Err(self.err(
                v.span(),
                format!("expected an array for {what}, found {}", type_name(other)),
            )),
        }
    }

    fn string<'t>(&self, v: &'t Val<'_>, what: &str) -> Result<&'t str, ConfigError> {
        match v.get_ref() {
            Value::String(s) => Ok(s),
            other => Err(self.err(
                v.span(),
                format!("expected a string for {what}, found {}", type_name(other)),
            )),
        }
    }

    /// One string or an array of strings.
    fn strings<'t>(
        &self,
        v: &'t Val<'_>,
        what: &str,
    ) -> Result<Vec<(&'t str, Range<usize>)>, ConfigError> {
        match v.get_ref() {
            Value::String(s) => Ok(vec![(s.as_ref(), v.span())]),
            Value::Array(items) => items
                .iter()
                .map(|item| Ok((self.string(item, what)?, item.span())))
                .collect(),
            other => Err(self.err(
                v.span(),
                format!(
                    "expected a string or an array of strings for {what}, found {}",
                    type_name(other)
                ),
            )),
        }
    }

    /// [`Self::strings`] without a Vec: the items, each checked to be a
    /// string (read them with [`str_of`]); one string is a list of one.
    /// `what` is formatted only for an error.
    fn string_list<'t, 'i>(
        &self,
        v: &'t Val<'i>,
        what: &dyn fmt::Display,
    ) -> Result<&'t [Val<'i>], ConfigError> {
        match v.get_ref() {
            Value::String(_) => Ok(std::slice::from_ref(v)),
            Value::Array(items)
                if items
                    .iter()
                    .all(|i| matches!(i.get_ref(), Value::String(_))) =>
            {
                Ok(items)
            }
            _ => Err(match self.strings(v, &what.to_string()) {
                Err(e) => e,
                Ok(_) => self.err(v.span(), format!("expected strings for {what}")),
            }),
        }
    }

    fn integer(&self, v: &Val<'_>, what: &str) -> Result<Option<i128>, ConfigError> {
        match v.get_ref() {
            Value::Integer(i) => {
                Ok(Some(i.ok_or_else(|| {
                    self.err(v.span(), format!("{what} is out of range"))
                })?))
            }
            _ => Ok(None),
        }
    }

    fn int_in(&self, v: &Val<'_>, what: &str, min: i128, max: i128) -> Result<i128, ConfigError> {
        match self.integer(v, what)? {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            Some(n) => Err(self.err(v.span(), format!("{what} {n} is out of range {min}-{max}"))),
            None => Err(self.err(
                v.span(),
                format!(
                    "expected an integer for {what}, found {}",
                    type_name(v.get_ref())
                ),
            )),
        }
    }

    fn text(&self, v: &Val<'_>, what: &str) -> Result<String, ConfigError> {
        let s = self.string(v, what)?;
        let n = s.chars().count();
        if n > MAX_TEXT_CHARS {
            return Err(self.err(
                v.span(),
                format!("{what} is {n} characters long; at most {MAX_TEXT_CHARS} are allowed"),
            ));
        }
        Ok(s.to_string())
    }

    // -- top level ----------------------------------------------------------

    pub(super) fn config(&mut self, root: &Table<'_>) -> Result<Config, ConfigError> {
        let top = self.fields(
            root,
            &[
                "groups",
                "interfaces",
                "conntrack",
                "events",
                "nacls",
                "prefix_lists",
            ],
            "the top level",
        )?;
        let mut config = Config::default();
        if let Some(v) = top.get("prefix_lists") {
            config.prefix_lists = self.prefix_lists(v)?;
            self.prefix_list_names = config.prefix_lists.keys().cloned().collect();
        }

        // Group names first: rules may reference groups defined later.
        let mut group_tables = Vec::new();
        if let Some(v) = top.get("groups") {
            let t = self.table(v, "`groups`")?;
            for (k, v) in sorted_entries(t) {
                validate_group_name(k.get_ref()).map_err(|m| self.err(k.span(), m))?;
                let gt = self.table(v, &format!("group `{}`", k.get_ref()))?;
                group_tables.push((k.get_ref().to_string(), gt));
            }
        }
        let names: BTreeSet<String> = group_tables.iter().map(|(n, _)| n.clone()).collect();
        for (name, t) in group_tables {
            let group = self.group(&name, t, &names)?;
            config.groups.insert(name, group);
        }

        // NACLs before interfaces, which name them.
        let mut nacl_keys = Vec::new();
        if let Some(v) = top.get("nacls") {
            let t = self.table(v, "`nacls`")?;
            for (k, v) in sorted_entries(t) {
                validate_group_name(k.get_ref()).map_err(|m| self.err(k.span(), m))?;
                let nt = self.table(v, &format!("NACL `{}`", k.get_ref()))?;
                let nacl = self.nacl(k.get_ref(), nt)?;
                nacl_keys.push((k.get_ref().to_string(), k.span()));
                config.nacls.insert(nacl.name.clone(), nacl);
            }
        }
        if let Some(v) = top.get("interfaces") {
            let t = self.table(v, "`interfaces`")?;
            for (k, v) in sorted_entries(t) {
                let name = k.get_ref().to_string();
                validate_iface_name(&name).map_err(|m| self.err(k.span(), m))?;
                let iface = self.interface(&name, v, &names, &config.nacls)?;
                config.interfaces.insert(name, iface);
            }
        }
        for (name, span) in nacl_keys {
            if !config
                .interfaces
                .values()
                .any(|i| i.nacl.as_deref() == Some(name.as_str()))
            {
                self.warn(
                    span,
                    format_args!("NACL `{name}` is named by no interface (`nacl = \"{name}\"`)"),
                );
            }
        }
        if let Some(v) = top.get("conntrack") {
            config.conntrack = self.conntrack(v)?;
        }
        if let Some(v) = top.get("events") {
            config.events = self.events(v)?;
        }
        Ok(config)
    }

    fn group(
        &mut self,
        name: &str,
        t: &Table<'_>,
        names: &BTreeSet<String>,
    ) -> Result<Group, ConfigError> {
        let what = format!("group `{name}`");
        let f = self.fields(
            t,
            &["description", "members", "ingress", "egress", "mode"],
            &what,
        )?;
        let mode = self.mode(f.get("mode"), &what)?;
        let description = f
            .get("description")
            .map(|v| self.text(v, "the group's `description`"))
            .transpose()?;
        let mut members = Vec::new();
        if let Some(v) = f.get("members") {
            for (s, span) in self.strings(v, "`members`")? {
                let (net, normalized) = parse_cidr(s).map_err(|m| {
                    self.err(
                        span.clone(),
                        format!("{m} in `members`: expected a CIDR or an address"),
                    )
                })?;
                if normalized {
                    self.warn(span, format_args!("normalized {s} to {net}"));
                }
                members.push(net);
            }
        }
        members.sort();
        members.dedup();

        let mut group = Group {
            name: name.to_string(),
            description,
            members,
            ingress: Vec::new(),
            egress: Vec::new(),
            mode,
        };
        for direction in Direction::ALL {
            let key = direction.as_str();
            let rules = match f.get(key) {
                Some(v) => {
                    let items = self.array(v, &format!("`{key}` (a list of rules)"))?;
                    let mut rules: Vec<Rule> = Vec::with_capacity(items.len());
                    let list = self.rule_lists;
                    self.rule_lists += 1;
                    self.rule_ids.reserve(items.len());
                    for (index, item) in items.iter().enumerate() {
                        let RawRule { rule, span } =
                            self.rule(name, direction, index, item, names)?;
                        let seen_as = id_key(&rule.id);
                        if let Some(prev) = self.rule_ids.get(&seen_as) {
                            let (line, col) = self.position(prev.span.start);
                            let message = if prev.list == list {
                                format!(
                                    "duplicate rule {}: same as rule {} of {key} in group \
                                     `{name}` (at {line}:{col}); remove one of them",
                                    rule.id, prev.index
                                )
                            } else {
                                format!(
                                    "duplicate rule id {}: already used by the rule at \
                                     {line}:{col}; rule IDs must be unique",
                                    rule.id
                                )
                            };
                            return Err(self.err(span, message));
                        }
                        self.rule_ids
                            .insert(seen_as, SeenRule { span, list, index });
                        rules.push(rule);
                    }
                    rules
                }
                None if direction == Direction::Egress => vec![default_egress_rule(name)],
                None => Vec::new(),
            };
            match direction {
                Direction::Ingress => group.ingress = rules,
                Direction::Egress => group.egress = rules,
            }
        }
        Ok(group)
    }

    fn interface(
        &mut self,
        name: &str,
        v: &Val<'_>,
        names: &BTreeSet<String>,
        nacls: &std::collections::BTreeMap<String, super::Nacl>,
    ) -> Result<InterfaceConfig, ConfigError> {
        let t = self.table(v, &format!("interface `{name}`"))?;
        let f = self.fields(
            t,
            &["groups", "nacl", "mode"],
            &format!("interface `{name}`"),
        )?;
        let mode = self.mode(f.get("mode"), &format!("interface `{name}`"))?;
        let nacl = match f.get("nacl") {
            Some(nv) => {
                let n = self.string(nv, "`nacl`")?;
                if !nacls.contains_key(n) {
                    let known: Vec<&str> = nacls.keys().map(String::as_str).collect();
                    return Err(self.err(
                        nv.span(),
                        format!(
                            "unknown NACL `{n}`; defined NACLs: {}",
                            if known.is_empty() {
                                "none (add `[nacls.NAME]`)".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
                Some(n.to_string())
            }
            None => None,
        };
        let Some(gv) = f.get("groups") else {
            return Err(self.err(
                v.span(),
                format!("interface `{name}` needs `groups = [...]`"),
            ));
        };
        let items = self.strings(gv, "`groups`")?;
        if items.is_empty() {
            return Err(self.err(
                gv.span(),
                format!("interface `{name}` needs at least one group"),
            ));
        }
        let mut groups: Vec<String> = Vec::new();
        for (g, span) in items {
            if !names.contains(g) {
                return Err(self.err(span, format!("unknown group `{g}`")));
            }
            if groups.iter().any(|x| x == g) {
                self.warn(span, format_args!("group `{g}` is listed twice"));
                continue;
            }
            groups.push(g.to_string());
        }
        Ok(InterfaceConfig { groups, nacl, mode })
    }

    /// `mode = "enforce" | "audit"` (SPEC 10.2); absent: enforce.
    fn mode(&self, v: Option<&Val<'_>>, what: &str) -> Result<Mode, ConfigError> {
        let Some(v) = v else {
            return Ok(Mode::Enforce);
        };
        let s = self.string(v, &format!("the `mode` of {what}"))?;
        Mode::parse(s).ok_or_else(|| {
            self.err(
                v.span(),
                format!("unknown mode `{s}` for {what}: expected \"enforce\" or \"audit\""),
            )
        })
    }

    fn conntrack(&self, v: &Val<'_>) -> Result<ConntrackConfig, ConfigError> {
        let t = self.table(v, "`conntrack`")?;
        let f = self.fields(
            t,
            &[
                "tcp_established",
                "tcp_syn",
                "tcp_fin",
                "tcp_rst",
                "udp",
                "udp_stream",
                "icmp",
                "other",
                "max_entries",
                "revoke_established",
            ],
            "`[conntrack]`",
        )?;
        let mut c = ConntrackConfig::default();
        for (k, v) in &f.entries {
            let key = k.get_ref().as_ref();
            match key {
                "max_entries" => {
                    c.max_entries = self.int_in(v, "max_entries", 1, i128::from(u32::MAX))? as u32;
                }
                "revoke_established" => match v.get_ref() {
                    Value::Boolean(b) => c.revoke_established = *b,
                    other => {
                        return Err(self.err(
                            v.span(),
                            format!(
                                "expected a boolean for `revoke_established`, found {}",
                                type_name(other)
                            ),
                        ));
                    }
                },
                _ => {
                    let s = match v.get_ref() {
                        Value::String(s) => s,
                        other => {
                            return Err(self.err(
                                v.span(),
                                format!(
                                    "expected a duration string such as \"90s\" for `{key}`, \
                                     found {}",
                                    type_name(other)
                                ),
                            ));
                        }
                    };
                    let d = parse_duration(s).map_err(|m| self.err(v.span(), m))?;
                    if let Some(slot) = c.duration_mut(key) {
                        *slot = d;
                    }
                }
            }
        }
        Ok(c)
    }

    fn events(&self, v: &Val<'_>) -> Result<EventsConfig, ConfigError> {
        let t = self.table(v, "`events`")?;
        let f = self.fields(t, &["per_second"], "`[events]`")?;
        let mut e = EventsConfig::default();
        if let Some(v) = f.get("per_second") {
            e.per_second = self.int_in(v, "per_second", 0, i128::from(u32::MAX))? as u32;
        }
        Ok(e)
    }
}
