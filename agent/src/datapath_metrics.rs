//! The datapath's per-endpoint counters as Prometheus metrics (`eni_ipam_datapath_*`), read
//! from the pinned per-CPU maps at every scrape:
//! - `eni_ipam_datapath_packets_total{pod_ip, pod, direction="tx"|"rx"}`
//! - `eni_ipam_datapath_bytes_total{pod_ip, pod, direction}` (Ethernet frame lengths)
//! - `eni_ipam_datapath_drops_total{pod_ip, pod, reason}` (`pod_ip="0.0.0.0"`: drops on
//!   attached veths with no endpoint)
//! - `eni_ipam_datapath_endpoints`, and `eni_ipam_datapath_up` (0 when the maps cannot be read).

use std::sync::Arc;

use eni_ipam_datapath::DropReason;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::endpoints::{EndpointStats, Endpoints};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrafficLabels {
    pod_ip: String,
    pod: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    pod_ip: String,
    pod: String,
    reason: &'static str,
}

/// Reads the counters through [`Endpoints`] on every scrape.
#[derive(Debug)]
pub struct DatapathCollector(pub Arc<Endpoints>);

impl Collector for DatapathCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = match self.0.stats() {
            Ok(stats) => Some(stats),
            Err(error) => {
                tracing::warn!(%error, "cannot read the datapath counters for /metrics");
                None
            }
        };
        let up = ConstGauge::new(i64::from(stats.is_some()));
        up.encode(encoder.encode_descriptor(
            "up",
            "1 when the datapath maps were read",
            None,
            up.metric_type(),
        )?)?;
        let Some(stats) = stats else { return Ok(()) };
        let endpoints = ConstGauge::new(stats.iter().filter(|s| !s.pod_ip.is_unspecified()).count() as i64);
        endpoints.encode(encoder.encode_descriptor(
            "endpoints",
            "Pod endpoints in the datapath",
            None,
            endpoints.metric_type(),
        )?)?;
        let traffic = |stat: &EndpointStats, direction| TrafficLabels {
            pod_ip: stat.pod_ip.to_string(),
            pod: stat.pod.clone(),
            direction,
        };
        type Pick = fn(&EndpointStats) -> (u64, u64);
        let families: [(&str, &str, Pick); 2] = [
            ("packets", "Packets the datapath forwarded from (tx) and to (rx) a pod", |s| {
                (s.counters.tx_packets, s.counters.rx_packets)
            }),
            ("bytes", "Bytes (Ethernet frames) the datapath forwarded from (tx) and to (rx) a pod", |s| {
                (s.counters.tx_bytes, s.counters.rx_bytes)
            }),
        ];
        for (name, help, pick) in families {
            let mut family =
                encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
            for stat in stats.iter().filter(|s| !s.pod_ip.is_unspecified()) {
                let (tx, rx) = pick(stat);
                for (direction, value) in [("tx", tx), ("rx", rx)] {
                    let labels = traffic(stat, direction);
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut drops = encoder.encode_descriptor(
            "drops",
            "Packets the datapath dropped, by endpoint and reason",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for stat in &stats {
            for reason in DropReason::ALL {
                let labels = DropLabels {
                    pod_ip: stat.pod_ip.to_string(),
                    pod: stat.pod.clone(),
                    reason: reason.as_str(),
                };
                ConstCounter::new(stat.counters.drops(reason)).encode(drops.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
