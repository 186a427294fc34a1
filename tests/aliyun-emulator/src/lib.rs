//! An Alibaba Cloud ECS/VPC OpenAPI emulator for eni-ipam's tests: it checks
//! request signatures (V3 and V1) exactly as the cloud does, with the
//! signing code the client uses, and serves the ENI actions over the fake
//! cloud's state machine (quotas, limits, asynchronous attach, pagination,
//! ClientToken idempotency, injected faults), and the identity side: STS
//! `AssumeRoleWithOIDC` for RRSA, a metadata stand-in for the RAM role, and
//! the expiry of every temporary key.

pub mod actions;
pub mod args;
pub mod emulator;
pub mod identity;
pub mod params;
pub mod seed;
pub mod server;

pub use emulator::{Emulator, FaultPlan, InjectedError};
