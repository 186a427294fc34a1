//! Alibaba Cloud ECS (2014-05-26) / VPC (2016-04-28): the signed OpenAPI
//! client behind [`AlibabaProvider`], and the pieces the ECS/VPC emulator
//! shares with it (signature verification, error codes, wire models).

pub mod codes;
mod config;
pub mod credentials;
pub mod encode;
mod provider;
pub mod rpc;
pub mod sign;
pub mod verify;
pub mod wire;

pub use config::AlibabaConfig;
pub use credentials::{CredentialError, CredentialProvider, CredentialSource, Credentials};
pub use provider::{AlibabaProvider, AlibabaSetupError};
pub use sign::SignatureVersion;

#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod vector_tests;
