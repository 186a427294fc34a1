//! The operator's view of a cloud: the [`CloudProvider`] trait, the error
//! classes, the per-cloud profiles (quotas, batch limits, instance types),
//! the one client-side limiter + retry policy ([`CallGuard`]) every call goes
//! through, and the in-memory [`fake`] cloud.

pub mod alibaba;
mod api_call;
pub mod error;
pub mod fake;
pub mod guard;
pub mod profile;
pub mod provider;
pub mod retry;
pub mod subnet_gateway;
pub mod token_bucket;
pub mod types;

pub use api_call::Api;
pub use error::{CloudError, CloudResult, ErrorClass, gone_is_done};
pub use guard::{AttemptResult, CallCounts, CallGuard, CallObserver};
pub use profile::{BatchLimits, BucketId, CloudKind, CloudProfile};
pub use provider::{CloudProvider, INSTANCES_PER_DESCRIBE, list_all_enis};
pub use retry::RetryPolicy;
pub use subnet_gateway::{reserved_addresses, subnet_gateway};
pub use token_bucket::{BucketSpec, TokenBucket};
pub use types::{CreateEni, Eni, EniQuery, EniState, InstanceLimits, InstanceState, Page, Subnet, tag};
