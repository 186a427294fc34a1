//! The kubelet gRPC APIs, generated at build time from `proto/` (see build.rs).

/// Device plugin API v1beta1: `Registration` (kubelet's) and `DevicePlugin` (ours).
pub mod deviceplugin {
    tonic::include_proto!("v1beta1");
}

/// Pod-resources API v1: which device ids kubelet handed to which live pods.
pub mod podresources {
    tonic::include_proto!("v1");
}

/// The API version string sent in `RegisterRequest.version`.
pub const DEVICE_PLUGIN_API_VERSION: &str = "v1beta1";

/// `Device.health` of a slot the node can back with an IP now.
pub const HEALTHY: &str = "Healthy";

/// `Device.health` of a slot beyond what the node can reach now.
pub const UNHEALTHY: &str = "Unhealthy";

/// File name of kubelet's registration socket inside the device plugin folder.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
