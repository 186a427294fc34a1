//! The AWS EC2 provider: `CloudProvider` on the official aws-sdk-ec2, every
//! call through the shared limiter and full-jitter retry (`CallGuard`), the
//! SDK's own retries off, EC2 error codes mapped to the shared classes.

mod config;
mod convert;
pub mod errors;
pub mod identity;
mod provider;

pub use config::{AwsConfig, AwsSetupError};
pub use identity::{AwsIdentity, AwsIdentityError, identity_of};
pub use provider::{AwsConnectError, AwsProvider};
