//! Watches the knobs ConfigMap (`--knob-config NAMESPACE/NAME`, rendered by the
//! chart from `pool.*`, `eni.*` and `nodePools`). A good version replaces the
//! configuration in use and wakes the fleet, which then re-plans every node; a
//! bad one (not YAML, an unknown key, min above max, ...) is refused with one
//! error naming the ConfigMap and the field, in the log, as a Warning Event on
//! the ConfigMap and as `eni_ipam_knob_config_refused` 1, and the last good
//! configuration stays in force. A deleted
//! ConfigMap leaves it in force too.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use eni_ipam_api::KnobConfig;
use eni_ipam_api::knob_config::CONFIG_KEY;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use crate::knob_source::ClusterKnobs;
use crate::metrics::OperatorMetrics;

/// Where the knob configuration lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnobConfigRef {
    /// The ConfigMap's namespace.
    pub namespace: String,
    /// The ConfigMap's name.
    pub name: String,
}

impl FromStr for KnobConfigRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self { namespace: ns.to_owned(), name: name.to_owned() })
            }
            _ => {
                Err(format!("{text:?} is not NAMESPACE/NAME of a ConfigMap, like kube-system/eni-ipam-knobs"))
            }
        }
    }
}

impl fmt::Display for KnobConfigRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the watch tells `run`.
pub struct KnobWatch {
    /// The knobs in use, updated here.
    pub knobs: Arc<ClusterKnobs>,
    /// Set once the ConfigMap has been listed (found or not).
    pub loaded: watch::Sender<bool>,
    /// Bumped every time a new good configuration is taken.
    pub changed: watch::Sender<u64>,
    /// Publishes Warning Events on the ConfigMap, while `leading`.
    pub recorder: Option<Recorder>,
    /// Whether this replica leads (only the leader publishes Events).
    pub leading: watch::Receiver<bool>,
    /// `eni_ipam_knob_config_refused`.
    pub metrics: Arc<OperatorMetrics>,
}

impl KnobWatch {
    /// Watches `at` until the stream ends (never, in practice: errors are retried with backoff).
    pub async fn run(self, client: Client, at: KnobConfigRef) {
        let api: Api<ConfigMap> = Api::namespaced(client, &at.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", at.name));
        let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
        let mut seen = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => seen = false,
                Ok(Event::InitApply(map) | Event::Apply(map)) => {
                    seen = true;
                    self.take(&at, &map).await;
                }
                Ok(Event::InitDone) => {
                    if !seen {
                        tracing::warn!(
                            configmap = %at,
                            "the knobs ConfigMap {at} does not exist: nodes keep the knobs they were last \
                             worked with, new ones get the built-in defaults; create it (helm upgrade) to set knobs"
                        );
                    }
                    self.loaded.send_replace(true);
                }
                Ok(Event::Delete(_)) => tracing::warn!(
                    configmap = %at,
                    "the knobs ConfigMap {at} was deleted: the last good configuration stays in force"
                ),
                Err(e) => {
                    tracing::warn!(configmap = %at, error = %e, "knobs ConfigMap watch failed; retrying")
                }
            }
        }
    }

    async fn take(&self, at: &KnobConfigRef, map: &ConfigMap) {
        let version = map.resource_version().unwrap_or_default();
        match parse(at, map) {
            Ok(config) => {
                self.metrics.set_knob_config_refused(false);
                if self.knobs.replace(config) {
                    tracing::info!(configmap = %at, resource_version = %version, "took the knob configuration");
                    self.changed.send_modify(|n| *n += 1);
                }
            }
            Err(message) => {
                let message = format!(
                    "{message}; the operator keeps the last good knob configuration until this is fixed"
                );
                tracing::error!(configmap = %at, resource_version = %version, "{message}");
                self.metrics.set_knob_config_refused(true);
                self.warn(at, map, message).await;
            }
        }
    }

    async fn warn(&self, at: &KnobConfigRef, map: &ConfigMap, note: String) {
        let Some(recorder) = &self.recorder else { return };
        if !*self.leading.borrow() {
            return;
        }
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            namespace: Some(at.namespace.clone()),
            name: Some(at.name.clone()),
            uid: map.uid(),
            resource_version: map.resource_version(),
            ..ObjectReference::default()
        };
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: "InvalidKnobConfig".into(),
            // The Events API caps a note at 1 kB.
            note: Some(note.chars().take(1000).collect()),
            action: "LoadKnobs".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::debug!(configmap = %at, error = %e, "could not publish an Event on the knobs ConfigMap");
        }
    }
}

/// The configuration in `map`, or what is wrong with it, naming the ConfigMap, key and field.
pub fn parse(at: &KnobConfigRef, map: &ConfigMap) -> Result<KnobConfig, String> {
    let text =
        map.data.as_ref().and_then(|d| d.get(CONFIG_KEY)).ok_or_else(|| {
            format!("ConfigMap {at} has no key {CONFIG_KEY}: put the knob configuration there")
        })?;
    KnobConfig::parse(text).map_err(|e| {
        let field = if e.field.is_empty() { String::new() } else { format!(", field {}", e.field) };
        format!("ConfigMap {at}, key {CONFIG_KEY}{field}: {}", e.message)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn map(text: &str) -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), text.to_owned())])),
            ..Default::default()
        }
    }

    #[test]
    fn errors_name_the_configmap_the_key_and_the_field() {
        let at: KnobConfigRef = "kube-system/eni-ipam-knobs".parse().unwrap();
        let err = parse(&at, &map("defaults: {pool: {minAllocate: 9, maxAllocate: 3}}")).unwrap_err();
        assert!(
            err.starts_with(
                "ConfigMap kube-system/eni-ipam-knobs, key knobs.yaml, field defaults.pool: min-allocate (9)"
            ),
            "{err}"
        );
        let err = parse(&at, &ConfigMap::default()).unwrap_err();
        assert!(err.contains("has no key knobs.yaml"), "{err}");
        assert_eq!(
            parse(&at, &map("defaults: {pool: {preAllocate: 3}}")).unwrap().defaults.pool.pre_allocate,
            Some(3)
        );
    }

    #[test]
    fn the_reference_is_namespace_slash_name() {
        assert_eq!(
            "ns/cm".parse::<KnobConfigRef>(),
            Ok(KnobConfigRef { namespace: "ns".into(), name: "cm".into() })
        );
        for bad in ["cm", "/cm", "ns/", "a/b/c"] {
            assert!(bad.parse::<KnobConfigRef>().is_err(), "{bad}");
        }
    }
}
