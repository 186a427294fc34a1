//! Registering with kubelet: `Registration.Register` on `kubelet.sock`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pod_resources::source_chain;
use crate::proto::DEVICE_PLUGIN_API_VERSION;
use crate::proto::deviceplugin::RegisterRequest;
use crate::proto::deviceplugin::registration_client::RegistrationClient;
use crate::service::plugin_options;
use crate::unix_channel;

/// Why kubelet did not take the registration.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// kubelet's socket cannot be dialed (kubelet down or restarting).
    #[error(
        "cannot connect to kubelet at {socket}: {message}; is kubelet running, and is --device-plugin-dir \
         its device plugin folder? retrying"
    )]
    Connect { socket: PathBuf, message: String },
    /// kubelet refused (version not supported, resource name taken, bad name).
    #[error("kubelet at {socket} refused to register resource {resource}: {status}")]
    Refused { socket: PathBuf, resource: String, status: tonic::Status },
}

/// The registration request: our socket's file name and the resource.
pub fn register_request(endpoint: &str, resource_name: &str) -> RegisterRequest {
    RegisterRequest {
        version: DEVICE_PLUGIN_API_VERSION.to_string(),
        endpoint: endpoint.to_string(),
        resource_name: resource_name.to_string(),
        options: Some(plugin_options()),
    }
}

/// Calls `Register` on kubelet's socket.
pub async fn register(
    kubelet_socket: &Path,
    endpoint: &str,
    resource_name: &str,
    timeout: Duration,
) -> Result<(), RegisterError> {
    let channel = unix_channel::connect(kubelet_socket, timeout).await.map_err(|e| {
        RegisterError::Connect { socket: kubelet_socket.to_owned(), message: source_chain(&e) }
    })?;
    RegistrationClient::new(channel).register(register_request(endpoint, resource_name)).await.map_err(
        |status| RegisterError::Refused {
            socket: kubelet_socket.to_owned(),
            resource: resource_name.to_owned(),
            status,
        },
    )?;
    Ok(())
}
