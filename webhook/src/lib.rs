//! eni-ipam-webhook: the mutating admission webhook that makes every pod
//! needing a pod IP request one `eni-ipam.io/ip`, so kube-scheduler only
//! places it on a node with an IP left.
//!
//! Layers, inside out: [`pod_patch`] decides for one pod (pure), [`admission`]
//! answers one review body (pure), [`router`] is the HTTP face, [`server`]
//! puts it behind TLS with the reloading certificate of [`tls_reload`].

pub mod admission;
pub mod cli;
pub mod metrics;
pub mod node_selection;
pub mod pod_patch;
pub mod policy;
pub mod review;
pub mod router;
pub mod server;
pub mod tls_reload;

pub use router::{WebhookState, webhook_router};
pub use server::{RunningWebhook, start_webhook};
