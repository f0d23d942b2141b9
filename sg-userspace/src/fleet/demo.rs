//! `sg demo --fleet`.

use anyhow::{Result, bail};

pub fn run() -> Result<()> {
    bail!("not yet")
}
