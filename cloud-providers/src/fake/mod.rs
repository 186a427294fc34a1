//! The in-memory cloud: quotas, latencies, asynchronous attach, finite
//! subnets, error injection and counters, for unit tests and the simulator.

mod cloud;
mod provider;
mod state;

pub use cloud::{FakeCloud, Faults, ServerCounts};
pub use provider::FakeProvider;
pub use state::{CloudState, InstanceView};

#[cfg(test)]
mod tests;
