//! Turns the agent's numbers (and kubelet's view of which slots are taken)
//! into the device list, every `--poll-interval`, and publishes it only when
//! it changed: a capacity change reaches ListAndWatch within one poll.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::agent_client::AgentClient;
use crate::counting::{count_slots, healthy_slot_ids};
use crate::devices::{device_list, healthy_count};
use crate::metrics::Metrics;
use crate::pod_resources::{DevicesInUse, PodResourcesClient};
use crate::proto::deviceplugin::Device;

/// What the last poll saw, to log transitions once instead of every poll.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Start,
    Agent {
        healthy: u32,
        capacity: u32,
        held_outside: u32,
    },
    AgentFailed(&'static str),
    /// The agent does not answer; its last slots stand until the grace is over.
    AgentGrace(&'static str),
}

/// Polls the agent and publishes device lists.
#[derive(Debug)]
pub struct Poller {
    /// The agent's healthz client.
    pub agent: AgentClient,
    /// kubelet's pod-resources client; `None` counts every allocated IP as requested.
    pub pod_resources: Option<PodResourcesClient>,
    /// Slots advertised.
    pub max_slots: u32,
    /// Time between polls.
    pub interval: Duration,
    /// How long the last good list stands while the agent does not answer.
    pub agent_grace: Duration,
    /// Where device lists go (ListAndWatch streams read them).
    pub devices: watch::Sender<Vec<Device>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl Poller {
    /// Polls forever.
    pub async fn run(self) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seen = Seen::Start;
        let mut pod_resources_failing = false;
        let mut last_good = None;
        loop {
            ticks.tick().await;
            self.poll_once(&mut seen, &mut pod_resources_failing, &mut last_good).await;
        }
    }

    async fn poll_once(
        &self,
        seen: &mut Seen,
        pod_resources_failing: &mut bool,
        last_good: &mut Option<(Instant, Vec<Device>)>,
    ) {
        let (devices, now) = match self.agent.healthz().await {
            Ok(health) => {
                let in_use = self.read_in_use(pod_resources_failing).await;
                let counted =
                    in_use.as_ref().map(|in_use| u32::try_from(in_use.ids.len()).unwrap_or(u32::MAX));
                let count = count_slots(self.max_slots, health.capacity, health.allocated, counted);
                let slots_in_use = in_use.map(|in_use| in_use.slots).unwrap_or_default();
                let healthy = healthy_slot_ids(self.max_slots, count.healthy, &slots_in_use);
                Metrics::count(&self.metrics.agent_polls, "ok");
                self.metrics.agent_capacity.set(i64::from(health.capacity));
                self.metrics.held_outside_kubelet.set(i64::from(count.held_outside_kubelet));
                let now = Seen::Agent {
                    healthy: count.healthy,
                    capacity: health.capacity,
                    held_outside: count.held_outside_kubelet,
                };
                if *seen != now {
                    tracing::info!(
                        healthy = count.healthy,
                        max_slots = self.max_slots,
                        capacity = health.capacity,
                        allocated = health.allocated,
                        available = health.available,
                        counted_by_kubelet = ?counted,
                        held_outside_kubelet = count.held_outside_kubelet,
                        status = %health.status,
                        "IP slots from the agent"
                    );
                }
                let devices = device_list(self.max_slots, &healthy);
                *last_good = Some((Instant::now(), devices.clone()));
                (devices, now)
            }
            Err(error) => {
                Metrics::count(&self.metrics.agent_polls, error.kind());
                let standing = last_good
                    .as_ref()
                    .filter(|(at, _)| at.elapsed() < self.agent_grace)
                    .map(|(_, d)| d.clone());
                if let Some(devices) = standing {
                    let now = Seen::AgentGrace(error.kind());
                    if *seen != now {
                        tracing::warn!(
                            agent_socket = %self.agent.socket().display(),
                            %error,
                            grace = ?self.agent_grace,
                            "the agent does not answer; its last IP slots stand until it answers or the grace ends"
                        );
                    }
                    *seen = now;
                    self.publish(devices);
                    return;
                }
                let now = Seen::AgentFailed(error.kind());
                if *seen != now {
                    tracing::warn!(
                        agent_socket = %self.agent.socket().display(),
                        %error,
                        max_slots = self.max_slots,
                        "every IP slot reported Unhealthy until the agent answers"
                    );
                }
                (device_list(self.max_slots, &Default::default()), now)
            }
        };
        *seen = now;
        self.publish(devices);
    }

    async fn read_in_use(&self, failing: &mut bool) -> Option<DevicesInUse> {
        let client = self.pod_resources.as_ref()?;
        match client.devices_in_use().await {
            Ok(in_use) => {
                Metrics::count(&self.metrics.pod_resources_reads, "ok");
                if *failing {
                    tracing::info!(socket = %client.socket().display(), "kubelet pod-resources readable again");
                }
                *failing = false;
                Some(in_use)
            }
            Err(error) => {
                Metrics::count(&self.metrics.pod_resources_reads, "failed");
                if !*failing {
                    tracing::warn!(
                        socket = %client.socket().display(),
                        %error,
                        "counting every allocated IP as held by a pod with the request until pod-resources answers"
                    );
                }
                *failing = true;
                None
            }
        }
    }

    fn publish(&self, devices: Vec<Device>) {
        let healthy = healthy_count(&devices);
        let changed = self.devices.send_if_modified(|current| {
            if *current == devices {
                false
            } else {
                *current = devices;
                true
            }
        });
        if changed {
            self.metrics.device_list_updates.inc();
            self.metrics.healthy_slots.set(i64::try_from(healthy).unwrap_or(i64::MAX));
            tracing::debug!(healthy, "device list changed; sent to ListAndWatch");
        }
    }
}
