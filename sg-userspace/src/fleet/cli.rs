//! The fleet commands' glue from `cli` flags to `commands` and `agent`.

use anyhow::{Result, anyhow};

use super::{
    agent::{self, AgentOptions},
    commands,
    keys::Prefix,
    store::EtcdOptions,
};
use crate::{
    cli::{AgentArgs, EtcdArgs, FleetCommand},
    state::StateDir,
};

fn options(args: &EtcdArgs) -> Result<(EtcdOptions, Prefix)> {
    let etcd = EtcdOptions {
        endpoints: args.etcd.clone(),
        cacert: args.cacert.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
        user: args.user.clone(),
        password: args.password.clone(),
    };
    etcd.check()?;
    Ok((etcd, Prefix::new(&args.prefix)?))
}

/// `sg fleet ...`
pub fn fleet(command: FleetCommand) -> Result<()> {
    match command {
        FleetCommand::Push { config, etcd } => {
            let (etcd, prefix) = options(&etcd)?;
            let revision = commands::push(&etcd, &prefix, &config.path)?;
            println!(
                "pushed {} as the fleet policy {prefix}: revision {revision}",
                config.path.display()
            );
        }
        FleetCommand::Show { etcd, json } => {
            let (etcd, prefix) = options(&etcd)?;
            let show = commands::show(&etcd, &prefix)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&show)?);
            } else {
                commands::print_show(&show);
            }
        }
        FleetCommand::Leave { host, etcd } => {
            let (etcd, prefix) = options(&etcd)?;
            let n = commands::leave(&etcd, &prefix, &host)?;
            println!("removed host {host} from the fleet {prefix} ({n} keys)");
        }
    }
    Ok(())
}

/// `sg agent ...`
pub fn agent(dir: &StateDir, args: AgentArgs) -> Result<()> {
    let (etcd, prefix) = options(&args.etcd)?;
    let ttl =
        crate::config::parse_duration(&args.lease).map_err(|e| anyhow!("invalid --lease: {e}"))?;
    if ttl.as_secs() < 2 || ttl.subsec_nanos() != 0 {
        return Err(anyhow!(
            "invalid --lease {}: etcd leases are whole seconds, at least 2s (e.g. 10s)",
            args.lease
        ));
    }
    let ifaces = super::parse_ifaces(&args.ifaces)?;
    agent::run(
        dir,
        AgentOptions {
            etcd,
            prefix,
            host: args.host,
            nacls: super::parse_nacls(&args.nacls, &ifaces)?,
            ifaces,
            lease_ttl: ttl.as_secs() as i64,
            mode: args.mode,
        },
    )
}
