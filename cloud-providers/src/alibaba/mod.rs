//! Alibaba Cloud ECS (2014-05-26) / VPC (2016-04-28): the signed OpenAPI
//! client behind [`AlibabaProvider`], its identities (AccessKey, RRSA, RAM
//! role), and the pieces the ECS/VPC emulator shares with it (signature
//! verification, error codes, wire models, the STS answer).

pub mod codes;
mod config;
pub mod credentials;
pub mod encode;
pub mod identity;
mod provider;
mod ram_role;
pub mod refresh;
pub mod rpc;
pub mod sign;
pub mod sts;
pub mod verify;
pub mod wire;

pub use config::{AlibabaConfig, EndpointKind, regional_endpoint};
pub use credentials::{CredentialError, CredentialProvider, CredentialSource, Credentials, OidcRole};
pub use identity::{IdentityError, IdentityInputs, IdentityMode, IdentitySettings};
pub use provider::{AlibabaProvider, AlibabaSetupError};
pub use sign::SignatureVersion;

#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod vector_tests;
