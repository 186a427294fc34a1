//! Test bed for the AWS provider: moto's EC2 server on loopback ([`Moto`]),
//! the fault-injecting [`Ec2Proxy`] in front of it, and [`Console`] calls
//! to set up a VPC and instances the way an admin or autoscaler would; STS
//! (moto's) through the proxy, with the expiry of every key it issues enforced.

mod console;
mod moto;
mod proxy;
mod sts;
pub mod wire;

pub use console::{Console, EniRow};
pub use moto::{Moto, tools_venv};
pub use proxy::{ActionCounts, Ec2Proxy, Faults};
pub use sts::SessionStats;

/// The one TLS provider of the project (reqwest is built without one).
pub fn install_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
