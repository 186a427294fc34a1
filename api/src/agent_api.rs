//! Wire types of the agent's unix-socket API (JSON over HTTP), shared by the
//! agent that serves it and the CNI plugin and device plugin that call it.
//!
//! - `GET /v1/healthz` -> [`HealthzResponse`]
//! - `POST /v1/ipam` with [`AllocateRequest`] -> [`AllocateResponse`]
//! - `DELETE /v1/ipam` with [`ReleaseRequest`] -> empty body
//! - `POST /v1/endpoint` with [`EndpointRequest`] -> empty body (the pod's host veth, for
//!   the eBPF datapath; sent by the CNI plugin in main mode after it made the veth)
//! - `GET /v1/endpoint/{containerId}?ifName=eth0` -> empty body when the pod's endpoint is
//!   as ADD left it, else [`ApiError`] (CHECK)
//!
//! Every failure answers with one shape, [`ApiError`].

use serde::{Deserialize, Serialize};

/// Where the agent listens unless told otherwise.
pub const DEFAULT_AGENT_SOCKET: &str = "/var/run/eni-ipam/agent.sock";

/// Path of the health endpoint.
pub const HEALTHZ_PATH: &str = "/v1/healthz";

/// Path of the allocate (POST) and release (DELETE) endpoint.
pub const IPAM_PATH: &str = "/v1/ipam";

/// Path where the CNI plugin registers a pod's host veth (POST) after ADD made it, and
/// where CHECK asks whether the pod's endpoint is still as ADD left it
/// (`GET /v1/endpoint/{containerId}?ifName=eth0`: 204, or 409 with what is wrong).
pub const ENDPOINT_PATH: &str = "/v1/endpoint";

/// Answer to `GET /v1/healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthzResponse {
    /// The node's IP pool as the agent sees it.
    pub ipam: IpamHealth,
}

/// Pool numbers the device plugin turns into healthy device slots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamHealth {
    /// IPs handed out to pods.
    pub allocated: u32,
    /// IPs in the node's pool right now.
    pub available: u32,
    /// Pod IPs the node advertises, allocated ones included: [`crate::advertised_ips`] in the
    /// agent's `--capacity-mode` (by default the instance's `ipLimit`, lowered by a shortfall).
    pub capacity: u32,
    /// A one-line summary for people (`IPv4: 2/10 allocated`).
    pub status: String,
}

impl HealthzResponse {
    /// Builds the response, writing the summary line from the numbers.
    pub fn new(allocated: u32, available: u32, capacity: u32) -> Self {
        Self {
            ipam: IpamHealth {
                allocated,
                available,
                capacity,
                status: format!("IPv4: {allocated}/{available} allocated"),
            },
        }
    }
}

/// Body of `POST /v1/ipam`: give this container an IP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocateRequest {
    /// The CNI container id (`CNI_CONTAINERID`).
    pub container_id: String,
    /// The interface name inside the pod (`CNI_IFNAME`, usually `eth0`).
    pub if_name: String,
    /// The pod's namespace (`K8S_POD_NAMESPACE`).
    pub pod_namespace: String,
    /// The pod's name (`K8S_POD_NAME`).
    pub pod_name: String,
    /// The CNI network (the conflist's `name`) the IP is for, so CNI GC of one network
    /// frees only that network's IPs. Empty from plugins before it was sent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
}

/// Answer to `POST /v1/ipam`: the IP and the ENI it lives on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocateResponse {
    /// The pod's IPv4 address.
    pub ip: String,
    /// The ENI the address is assigned to.
    pub eni: String,
    /// That ENI's MAC address, so the CNI plugin can find its link.
    pub mac: String,
    /// The ENI subnet's CIDR (`10.0.32.0/19`).
    pub subnet_cidr: String,
    /// The subnet's gateway address.
    pub gateway: String,
}

/// Body of `DELETE /v1/ipam`: give back what this container holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRequest {
    /// The CNI container id the IP was allocated to.
    pub container_id: String,
    /// The interface name inside the pod.
    pub if_name: String,
}

/// Body of `POST /v1/endpoint`: the pod's network link, which only the CNI plugin knows.
/// The agent joins it with what it knows (the ENI owning the IP, that ENI's link and MAC,
/// the VPC gateway's MAC) into the datapath endpoint, persists it and attaches the
/// datapath to the host veth before it answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRequest {
    /// The CNI container id the IP was allocated to.
    pub container_id: String,
    /// The interface name inside the pod.
    pub if_name: String,
    /// Name of the host end of the pod's veth, in the node's network namespace.
    pub host_veth: String,
    /// Its interface index.
    pub host_veth_ifindex: u32,
    /// MAC of the pod's own interface (`if_name` inside the pod).
    pub pod_mac: String,
}

/// The one error shape every endpoint answers with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What failed, on which object, and what to do about it.
    pub error: String,
}

impl ApiError {
    /// Wraps a message a person can act on.
    pub fn new(error: impl Into<String>) -> Self {
        Self { error: error.into() }
    }
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;

    use super::*;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
        let json = serde_json::to_string(value).unwrap();
        assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), value, "{json}");
    }

    #[test]
    fn healthz_json_is_exactly_the_contract() {
        let expected = serde_json::json!(
            {"ipam": {"allocated": 2, "available": 10, "capacity": 30, "status": "IPv4: 2/10 allocated"}}
        );
        let response = HealthzResponse::new(2, 10, 30);
        assert_eq!(serde_json::to_value(&response).unwrap(), expected);
        assert_eq!(serde_json::from_value::<HealthzResponse>(expected).unwrap(), response);
    }

    #[test]
    fn requests_and_answers_are_camel_case() {
        let allocate = AllocateRequest {
            container_id: "abc123".into(),
            if_name: "eth0".into(),
            pod_namespace: "default".into(),
            pod_name: "web-0".into(),
            network: String::new(),
        };
        assert_eq!(
            serde_json::to_value(&allocate).unwrap(),
            serde_json::json!({"containerId": "abc123", "ifName": "eth0", "podNamespace": "default", "podName": "web-0"})
        );
        round_trip(&allocate);
        let on_network = AllocateRequest { network: "eni-ipam".into(), ..allocate };
        assert_eq!(serde_json::to_value(&on_network).unwrap()["network"], "eni-ipam");
        round_trip(&on_network);

        let answer = AllocateResponse {
            ip: "10.0.32.7".into(),
            eni: "eni-0abc".into(),
            mac: "0a:1b:2c:3d:4e:5f".into(),
            subnet_cidr: "10.0.32.0/19".into(),
            gateway: "10.0.32.1".into(),
        };
        let json = serde_json::to_value(&answer).unwrap();
        assert_eq!(json["subnetCidr"], "10.0.32.0/19");
        round_trip(&answer);

        let release = ReleaseRequest { container_id: "abc123".into(), if_name: "eth0".into() };
        assert_eq!(
            serde_json::to_value(&release).unwrap(),
            serde_json::json!({"containerId": "abc123", "ifName": "eth0"})
        );
        round_trip(&release);

        let endpoint = EndpointRequest {
            container_id: "abc123".into(),
            if_name: "eth0".into(),
            host_veth: "eni0123456789ab".into(),
            host_veth_ifindex: 42,
            pod_mac: "0a:00:00:00:00:02".into(),
        };
        assert_eq!(
            serde_json::to_value(&endpoint).unwrap(),
            serde_json::json!({"containerId": "abc123", "ifName": "eth0", "hostVeth": "eni0123456789ab",
                               "hostVethIfindex": 42, "podMac": "0a:00:00:00:00:02"})
        );
        round_trip(&endpoint);
    }

    #[test]
    fn errors_have_one_shape() {
        let err = ApiError::new("no free IP on node-a: the pool is empty; check ENINode node-a status");
        assert_eq!(serde_json::to_value(&err).unwrap()["error"], err.error.as_str());
        round_trip(&err);
    }
}
