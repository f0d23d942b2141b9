//! `cargo xtask bench`: per-packet cost at several rule counts, written to
//! target/bench/report.json and a Markdown table on stdout.

use anyhow::Result;
use sg::bench::{Family, measure};

fn main() -> Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![10, 1_000, 10_000, 100_000]
    } else {
        sizes
    };
    let mut rows = Vec::new();
    for family in [Family::V4, Family::V6] {
        for &n in &sizes {
            let row = measure(family, n)?;
            eprintln!("{row:?}");
            rows.push(row);
        }
    }
    std::fs::create_dir_all("target/bench")?;
    std::fs::write(
        "target/bench/report.json",
        serde_json::to_string_pretty(&rows)?,
    )?;
    println!(
        "| family | rules | conntrack hit | new flow allowed | new flow denied | baseline ns | install ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {:?} | {} | {:.2}x | {:.2}x | {:.2}x | {:.0} | {} |",
            r.family,
            r.rules,
            r.conntrack_hit,
            r.new_flow_allowed,
            r.new_flow_denied,
            r.baseline_ns,
            r.install_ms
        );
    }
    Ok(())
}
