//! `sg demo`: a lab of network namespaces with allowed and denied traffic.
use anyhow::Result;

use crate::state::StateDir;

pub fn run(_dir: &StateDir) -> Result<()> {
    anyhow::bail!("demo not built yet")
}
