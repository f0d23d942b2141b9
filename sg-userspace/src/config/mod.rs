//! Configuration file (SPEC 3).
//!
//! The file is parsed into a span-carrying TOML tree (`toml_tree`, built
//! from `toml_parser`'s events) and walked by hand, so that every error, whether TOML syntax, an unknown
//! key, a wrong type or a bad value, names the file, line and column of the
//! offending text. Nothing here touches the kernel.
//!
//! `model` holds the parsed configuration, `presets` the `type` shortcuts,
//! `rule_id` the stable rule IDs, `values` the parsers of single values
//! (peers, CIDRs, names, durations) and `toml_walk` the walk over the file.

use std::path::Path;

mod model;
mod presets;
mod rule_id;
#[cfg(test)]
pub(crate) mod tests;
mod toml_tree;
mod toml_walk;
mod values;

pub use model::*;
pub use presets::{PRESETS, preset};
pub use rule_id::rule_id;
pub use values::{
    parse_cidr, parse_duration, parse_peer, validate_group_name, validate_iface_name,
    validate_rule_id,
};

use toml_walk::Ctx;

/// Longest `name` or `description`, in characters (SPEC 1.3).
pub const MAX_TEXT_CHARS: usize = 255;
/// Longest group name, in characters.
pub const MAX_GROUP_NAME_CHARS: usize = 255;
/// Hex digits after `sgr-` in a rule ID.
pub const RULE_ID_HEX_DIGITS: usize = 17;
/// Longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_IFACE_NAME_BYTES: usize = 15;

/// Reads and parses a configuration file.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let name = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: name.clone(),
        line: 0,
        column: 0,
        message: format!("cannot read the configuration file: {e}"),
    })?;
    parse(&source, &name)
}

/// Parses configuration text; `file_name` is used in errors and warnings.
pub fn parse(source: &str, file_name: &str) -> Result<Loaded, ConfigError> {
    #[cfg(test)]
    tests::tree_diff::check(source);
    let mut cx = Ctx::new(source, file_name);
    let t = crate::phase::start("toml tree");
    let root = toml_tree::parse(source)
        .map_err(|e| cx.err(e.span, format!("TOML syntax error: {}", e.message.trim())))?;
    drop(t);
    let t = crate::phase::start("toml walk");
    let config = cx.config(&root)?;
    drop(t);
    Ok(Loaded {
        config,
        warnings: cx.warnings,
    })
}
