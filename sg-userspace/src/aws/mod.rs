//! AWS interoperability (SPEC 9.2, 9.3): `sg import aws` turns the JSON of
//! the AWS CLI into an sg config, `sg export aws` writes a config's groups
//! as `describe-security-groups` JSON.
//!
//! `model` holds the serde types of the AWS outputs, `proto` the mapping of
//! `IpProtocol`/`FromPort`/`ToPort` both ways, `import` and `nacl` the
//! import (with `toml_out` writing the TOML), `export` the export.

pub mod export;
pub mod import;
pub mod model;
mod nacl;
mod proto;
mod toml_out;

pub use export::{export_json, group_id};
pub use import::{ImportInput, Imported, import, import_files};
