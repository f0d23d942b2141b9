//! The programs: loading them, the conntrack sweep timer, and attaching
//! them to interfaces with pinned links that outlive this process.

use anyhow::{Context as _, Result, anyhow};
use aya::programs::{
    SchedClassifier, TcAttachType, Xdp, XdpMode,
    links::{FdLink, LinkError, PinnedLink},
};

use super::Datapath;
use crate::state::StateDir;

pub const XDP_PROGRAM: &str = "sg_ingress";
pub const TC_PROGRAM: &str = "sg_egress";
/// The same verdict on TC ingress, for `--mode tc`.
pub const TC_INGRESS_PROGRAM: &str = "sg_ingress_tc";
/// A do-nothing XDP program, the yardstick of `cargo xtask bench`.
pub const BASELINE_PROGRAM: &str = "sg_baseline";
/// Arms the expiry sweep timer when test-run once; never attached.
pub const SWEEP_ARM_PROGRAM: &str = "sg_sweep_arm";

/// How to attach XDP (`--mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// TC on virtual interfaces (veth, bridges, tunnels); native XDP on
    /// a NIC whose driver has it, else TC (`sg::hook`).
    Auto,
    Native,
    Generic,
    /// Ingress on TC (clsact/tcx) instead of XDP. Faster for TCP on
    /// virtual interfaces (veth), where XDP copies every GRO packet.
    Tc,
}

impl Datapath {
    /// Loads both programs into the kernel (the verifier runs here).
    pub fn load_programs(&mut self) -> Result<()> {
        let xdp = self.xdp()?;
        if xdp.fd().is_err() {
            xdp.load().context("the kernel refused the XDP program")?;
        }
        for name in [TC_PROGRAM, TC_INGRESS_PROGRAM] {
            let tc = self.classifier(name)?;
            if tc.fd().is_err() {
                tc.load().context("the kernel refused the TC program")?;
            }
        }
        Ok(())
    }

    /// Starts the BPF timer that deletes expired conntrack and fragment
    /// entries every `SWEEP_PERIOD_NS`, off the packet path (SPEC 1.13).
    /// The timer lives in a pinned map and keeps firing after this process
    /// exits; starting it again only replaces its program.
    pub fn start_sweeper(&mut self) -> Result<()> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(SWEEP_ARM_PROGRAM)
            .ok_or_else(|| anyhow!("program {SWEEP_ARM_PROGRAM} missing"))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()
                .context("the kernel refused the conntrack sweep timer program")?;
        }
        // XDP test runs need at least an Ethernet header's worth of data.
        let frame = [0u8; 64];
        let opts = aya::programs::TestRunOptions {
            data_in: Some(&frame),
            ..Default::default()
        };
        let result = aya::programs::TestRun::test_run(prog, opts)
            .context("running the conntrack sweep timer program")?;
        const XDP_PASS: u32 = 2;
        if result.return_value != XDP_PASS {
            anyhow::bail!(
                "cannot start the conntrack sweep timer (program returned {})",
                result.return_value
            );
        }
        Ok(())
    }

    pub fn xdp(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or_else(|| anyhow!("program {XDP_PROGRAM} missing"))?
            .try_into()?)
    }

    pub fn baseline(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(BASELINE_PROGRAM)
            .ok_or_else(|| anyhow!("program {BASELINE_PROGRAM} missing"))?
            .try_into()?)
    }

    pub fn tc(&mut self) -> Result<&mut SchedClassifier> {
        self.classifier(TC_PROGRAM)
    }

    /// The TC ingress program (`--mode tc`, and `auto` on virtual links).
    pub fn tc_ingress(&mut self) -> Result<&mut SchedClassifier> {
        self.classifier(TC_INGRESS_PROGRAM)
    }

    fn classifier(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing"))?
            .try_into()?)
    }

    /// Attaches ingress (XDP, or TC with `--mode tc`) and egress (TC) to
    /// `iface` and pins both links, so enforcement outlives this process.
    /// Returns the ingress mode used: "native", "generic" or "tc".
    pub fn attach(
        &mut self,
        state: &StateDir,
        iface: &str,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<&'static str> {
        std::fs::create_dir_all(state.links_dir())?;
        let ingress_pin = state.link_pin(iface, "ingress");
        let egress_pin = state.link_pin(iface, "egress");
        self.load_programs()?;
        self.start_sweeper()?;
        let (link, mode_name) = self
            .attach_ingress(iface, ifindex, mode)
            .with_context(|| format!("cannot attach ingress enforcement to {iface}"))?;
        link.pin(&ingress_pin)
            .with_context(|| format!("cannot pin {}", ingress_pin.display()))?;
        let egress = (|| -> Result<()> {
            let link = attach_tc(self.classifier(TC_PROGRAM)?, ifindex, TcAttachType::Egress)
                .with_context(|| format!("cannot attach TC egress to {iface}"))?;
            link.pin(&egress_pin)
                .with_context(|| format!("cannot pin {}", egress_pin.display()))?;
            Ok(())
        })();
        if let Err(e) = egress {
            let _ = unpin_link(&ingress_pin);
            return Err(e);
        }
        Ok(mode_name)
    }

    fn attach_ingress(
        &mut self,
        iface: &str,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<(FdLink, &'static str)> {
        let modes: &[(XdpMode, &'static str)] = match mode {
            AttachMode::Tc => return self.attach_tc_ingress(ifindex),
            AttachMode::Auto => match crate::hook::auto_hook(iface) {
                crate::hook::AutoHook::Tc => return self.attach_tc_ingress(ifindex),
                crate::hook::AutoHook::NativeXdp => {
                    // A driver may still refuse (MTU, queues): TC then.
                    return match self.attach_ingress(iface, ifindex, AttachMode::Native) {
                        Ok(done) => Ok(done),
                        Err(_) => self.attach_tc_ingress(ifindex),
                    };
                }
            },
            AttachMode::Native => &[(XdpMode::Driver, "native")],
            AttachMode::Generic => &[(XdpMode::Skb, "generic")],
        };
        let xdp = self.xdp()?;
        let mut last_err = None;
        for (xdp_mode, name) in modes {
            match xdp.attach(ifindex, *xdp_mode) {
                Ok(id) => return Ok((xdp.take_link(id)?.try_into()?, *name)),
                Err(e) => last_err = Some(e),
            }
        }
        Err(anyhow!(last_err.expect("at least one mode was tried")))
    }
}

impl Datapath {
    fn attach_tc_ingress(&mut self, ifindex: u32) -> Result<(FdLink, &'static str)> {
        let prog = self.classifier(TC_INGRESS_PROGRAM)?;
        Ok((attach_tc(prog, ifindex, TcAttachType::Ingress)?, "tc"))
    }
}

fn attach_tc(prog: &mut SchedClassifier, ifindex: u32, hook: TcAttachType) -> Result<FdLink> {
    let id = prog.attach(ifindex, hook)?;
    Ok(prog.take_link(id)?.try_into()?)
}

/// Detaches a pinned link by unpinning it; a missing pin is not an error.
pub fn unpin_link(path: &std::path::Path) -> Result<bool> {
    match PinnedLink::from_pin(path) {
        Ok(link) => {
            let fd_link = link
                .unpin()
                .with_context(|| format!("cannot unpin {}", path.display()))?;
            drop(fd_link);
            Ok(true)
        }
        Err(LinkError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
            Ok(false)
        }
        Err(e) => Err(e).with_context(|| format!("cannot open pinned link {}", path.display())),
    }
}

/// Detaches both of an interface's links.
pub fn detach_links(state: &StateDir, iface: &str) -> Result<()> {
    for hook in ["ingress", "egress"] {
        unpin_link(&state.link_pin(iface, hook))?;
    }
    Ok(())
}
