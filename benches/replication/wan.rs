//! A WAN between the tools and the clusters: toxiproxy adds latency and a bandwidth
//! cap in front of the brokers, and the brokers advertise the proxies on a listener
//! of their own, so every connection a tool opens crosses the proxies.
//!
//! Where the tool sits is [`WanLegs`]: by default beside the target, so only its
//! connections to the source cross the WAN (what MirrorMaker's docs advise:
//! consume from the remote cluster, produce to the local one); or halfway, with
//! the WAN on both legs.
//!
//! ```text
//! tool ──▶ toxiproxy "source" ──▶ source broker (WAN listener)
//! tool ──▶ toxiproxy "target" ──▶ counting proxy ──▶ target broker (WAN listener)
//! ```

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use kafka_testkit::{free_ports, CountingProxy, Toxiproxy, TOXIPROXY_VERSION};

use crate::lab::{DataSet, Lab};
use crate::tools::Route;

/// The listener both brokers serve the WAN on.
pub(crate) const WAN: &str = "WAN";

/// The proxies, created before the clusters (whose brokers must advertise them).
pub(crate) struct Wan {
    toxiproxy: Toxiproxy,
    source_listen: SocketAddr,
    target_listen: SocketAddr,
    /// Counts what the tools send to the target across the WAN.
    pub(crate) metered: CountingProxy,
}

impl Wan {
    /// Starts toxiproxy (building it on first use) and picks the proxies' addresses.
    pub(crate) fn prepare() -> Result<Wan> {
        let toxiproxy = Toxiproxy::start()?;
        let ports = free_ports(2)?;
        Ok(Wan {
            toxiproxy,
            source_listen: SocketAddr::from(([127, 0, 0, 1], ports[0])),
            target_listen: SocketAddr::from(([127, 0, 0, 1], ports[1])),
            metered: CountingProxy::bind()?,
        })
    }

    /// The extra listener of the source broker: (name, advertised address).
    pub(crate) fn source_listener(&self) -> (String, SocketAddr) {
        (WAN.to_string(), self.source_listen)
    }

    /// The extra listener of the target broker.
    pub(crate) fn target_listener(&self) -> (String, SocketAddr) {
        (WAN.to_string(), self.target_listen)
    }

    /// Once the clusters run: the proxies to their WAN listeners, with no toxics yet.
    pub(crate) fn connect(&self, lab: &Lab) -> Result<()> {
        let source = lab
            .source
            .listener_addr(0, WAN)
            .context("the source has no WAN listener")?;
        let target = lab
            .target
            .listener_addr(0, WAN)
            .context("the target has no WAN listener")?;
        self.metered.forward_to(target);
        self.toxiproxy
            .create_proxy("source", self.source_listen, source)?;
        self.toxiproxy
            .create_proxy("target", self.target_listen, self.metered.addr())
    }

    /// Sets the WAN legs to `rtt_ms` round trip (half each way) and an optional cap
    /// per direction in Mbit/s; a leg off the WAN gets no toxics.
    pub(crate) fn set(&self, legs: WanLegs, rtt_ms: u32, cap_mbit: Option<u32>) -> Result<()> {
        // toxiproxy's bandwidth rate is in KB/s of 1000 bytes.
        let cap = cap_mbit.map(|m| u64::from(m) * 125);
        self.toxiproxy.set_link("source", rtt_ms / 2, cap)?;
        match legs {
            WanLegs::Both => self.toxiproxy.set_link("target", rtt_ms / 2, cap),
            WanLegs::Source => self.toxiproxy.set_link("target", 0, None),
        }
    }

    /// The route across the WAN for `data`.
    pub(crate) fn route(&self, data: &DataSet) -> Route {
        data.route(
            self.source_listen.to_string(),
            self.target_listen.to_string(),
        )
    }
}

/// Which of the tool's connections cross the WAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WanLegs {
    /// The tool runs beside the target: only the source is across the WAN.
    Source,
    /// The tool runs halfway: both clusters are across a WAN of their own.
    Both,
}

impl WanLegs {
    pub(crate) fn parse(text: &str) -> Result<WanLegs> {
        match text {
            "source" => Ok(WanLegs::Source),
            "both" => Ok(WanLegs::Both),
            other => bail!("BENCH_WAN_LEGS: {other:?} is neither \"source\" nor \"both\""),
        }
    }
}

/// How the WAN sections describe the link.
pub(crate) fn describe_link(legs: WanLegs, capped: bool) -> String {
    let toxics = if capped {
        "latency and bandwidth toxics"
    } else {
        "a latency toxic"
    };
    let (brokers, place) = match legs {
        WanLegs::Source => (
            "the source broker",
            "the tool runs beside the target, as MirrorMaker's docs advise",
        ),
        WanLegs::Both => (
            "each broker",
            "the tool is across the WAN from both clusters",
        ),
    };
    format!(
        "toxiproxy {TOXIPROXY_VERSION} in front of {brokers} ({toxics} on both directions; {place}). \
         toxiproxy caps each connection on its own"
    )
}
