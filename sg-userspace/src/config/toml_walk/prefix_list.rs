//! `[prefix_lists.NAME]` (SPEC 9.1): named CIDR sets for `pl:NAME` peers.

use std::collections::BTreeMap;

use crate::config::toml_tree::Value;

use super::{Ctx, Val, sorted_entries, type_name};
use crate::config::{ConfigError, PrefixList, PrefixListEntry, parse_cidr, validate_group_name};

impl Ctx<'_> {
    pub(super) fn prefix_lists(
        &mut self,
        v: &Val<'_>,
    ) -> Result<BTreeMap<String, PrefixList>, ConfigError> {
        let t = self.table(v, "`prefix_lists`")?;
        let mut lists = BTreeMap::new();
        for (k, v) in sorted_entries(t) {
            let name = k.get_ref().to_string();
            validate_group_name(&name)
                .map_err(|m| self.err(k.span(), m.replace("group name", "prefix list name")))?;
            let what = format!("prefix list `{name}`");
            let lt = self.table(v, &what)?;
            let f = self.fields(lt, &["entries"], &what)?;
            let Some(ev) = f.get("entries") else {
                return Err(self.err(v.span(), format!("{what} needs `entries = [...]`")));
            };
            let mut entries: Vec<PrefixListEntry> = Vec::new();
            for item in self.array(ev, "`entries` (a list of CIDRs)")? {
                let (text, span, description) = match item.get_ref() {
                    Value::String(s) => (s.as_ref(), item.span(), None),
                    Value::Table(et) => {
                        let ef =
                            self.fields(et, &["cidr", "description"], "a prefix list entry")?;
                        let Some(cv) = ef.get("cidr") else {
                            return Err(self.err(item.span(), "prefix list entry needs `cidr`"));
                        };
                        let d = ef
                            .get("description")
                            .map(|d| self.text(d, "`description`"))
                            .transpose()?;
                        (self.string(cv, "`cidr`")?, cv.span(), d)
                    }
                    other => {
                        return Err(self.err(
                            item.span(),
                            format!(
                                "expected a CIDR string or {{ cidr = \"...\", description = \
                                 \"...\" }} in {what}, found {}",
                                type_name(other)
                            ),
                        ));
                    }
                };
                let (cidr, normalized) = parse_cidr(text)
                    .map_err(|m| self.err(span.clone(), format!("{m} in {what}")))?;
                if normalized {
                    self.warn(span.clone(), format_args!("normalized {text} to {cidr}"));
                }
                if entries.iter().any(|e| e.cidr == cidr) {
                    self.warn(span, format_args!("{cidr} is listed twice in {what}"));
                    continue;
                }
                entries.push(PrefixListEntry { cidr, description });
            }
            lists.insert(name.clone(), PrefixList { name, entries });
        }
        Ok(lists)
    }
}
