//! [`AlibabaProvider`]: the [`CloudProvider`] for ECS/VPC. Every call goes
//! through the [`CallGuard`]; parameters are flattened the SDK way
//! (`Name.N`, `Tag.N.Key`).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eni_ipam_api::{EniId, InstanceId, InstanceType, VpcId};
use serde::de::DeserializeOwned;

use super::config::AlibabaConfig;
use super::credentials::{CredentialError, CredentialProvider};
use super::rpc::{Call, ECS_VERSION, Endpoint, RpcClient, VPC_VERSION};
use super::wire;
use crate::Api;
use crate::error::{CloudError, CloudResult, ErrorClass};
use crate::guard::CallGuard;
use crate::profile::{BatchLimits, CloudKind};
use crate::provider::{CloudProvider, INSTANCES_PER_DESCRIBE};
use crate::types::{CreateEni, Eni, EniQuery, EniState, InstanceLimits, InstanceState, Page, Subnet};

/// Why the provider could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AlibabaSetupError {
    /// Credentials are not available.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// An endpoint is not a URL.
    #[error("{0}")]
    Endpoint(String),
    /// The HTTP client could not be built (TLS set-up).
    #[error("building the HTTP client: {0}; check the system's TLS set-up")]
    Http(String),
}

/// Instance types one DescribeInstanceTypes call may name.
const TYPES_PER_CALL: usize = 10;
/// vSwitches per DescribeVSwitches page (the API's maximum).
const VSWITCH_PAGE: u32 = 50;

/// The Alibaba Cloud provider.
#[derive(Debug)]
pub struct AlibabaProvider {
    rpc: RpcClient,
    ecs: Endpoint,
    vpc: Endpoint,
    region: String,
    guard: Arc<CallGuard>,
    attach_timeout: Duration,
    instance_types_page: u32,
    /// Instance of each ENI last seen attached: DetachNetworkInterface needs it.
    attached_to: Mutex<HashMap<EniId, InstanceId>>,
}

impl AlibabaProvider {
    /// DescribeInstanceTypes for `types` (every type when empty), followed to its
    /// last page. Types without ENIs (ECS lists a few) are left out.
    async fn instance_type_pages(&self, types: &[InstanceType]) -> CloudResult<Vec<InstanceLimits>> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut pairs: Vec<(String, String)> = vec![
                ("RegionId".into(), self.region.clone()),
                ("MaxResults".into(), self.instance_types_page.to_string()),
            ];
            pairs.extend(
                types.iter().enumerate().map(|(i, t)| (format!("InstanceTypes.{}", i + 1), t.0.clone())),
            );
            if !token.is_empty() {
                pairs.push(("NextToken".into(), token.clone()));
            }
            let body: wire::DescribeInstanceTypes =
                self.call(Api::DescribeInstanceTypes, "instance-types", pairs).await?;
            out.extend(body.instance_types.instance_type.into_iter().filter(|t| t.eni_quantity > 0).map(
                |t| InstanceLimits {
                    instance_type: InstanceType::from(t.instance_type_id),
                    max_enis: t.eni_quantity,
                    ipv4_per_eni: t.eni_private_ip_address_quantity,
                },
            ));
            if body.next_token.is_empty() {
                return Ok(out);
            }
            token = body.next_token;
        }
    }

    /// A provider for `config` whose every call goes through `guard`
    /// (normally `CallGuard::for_profile(CloudProfile::alibaba(), ..)`).
    pub fn new(config: AlibabaConfig, guard: Arc<CallGuard>) -> Result<Self, AlibabaSetupError> {
        // The project's one TLS provider; a no-op when the binary installed it already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("eni-ipam/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AlibabaSetupError::Http(e.to_string()))?;
        let credentials = CredentialProvider::new(config.credentials.clone(), http.clone())?;
        Ok(Self {
            rpc: RpcClient::new(http, credentials, config.signature, config.timeout),
            ecs: Endpoint::parse(&config.ecs_endpoint()).map_err(AlibabaSetupError::Endpoint)?,
            vpc: Endpoint::parse(&config.vpc_endpoint()).map_err(AlibabaSetupError::Endpoint)?,
            region: config.region,
            guard,
            attach_timeout: config.attach_timeout,
            instance_types_page: config.instance_types_page,
            attached_to: Mutex::new(HashMap::new()),
        })
    }

    /// The guard (for its counters).
    pub fn guard(&self) -> &CallGuard {
        &self.guard
    }

    fn params(&self, pairs: &[(&str, String)]) -> Vec<(String, String)> {
        let mut out = vec![("RegionId".to_owned(), self.region.clone())];
        out.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())));
        out
    }

    async fn call<T: DeserializeOwned>(
        &self,
        api: Api,
        object: &str,
        params: Vec<(String, String)>,
    ) -> CloudResult<T> {
        let (endpoint, version) =
            if api == Api::DescribeSubnets { (&self.vpc, VPC_VERSION) } else { (&self.ecs, ECS_VERSION) };
        let call = Call { api, action: api.alibaba_name(), version, object, params: &params };
        self.guard.call(api, || self.rpc.send(endpoint, call)).await
    }

    fn remember(&self, enis: &[Eni]) {
        let mut map = self.attached_to.lock().expect("attachment map lock");
        for eni in enis {
            match &eni.instance {
                Some(instance) => map.insert(eni.id.clone(), instance.clone()),
                None => map.remove(&eni.id),
            };
        }
    }

    fn malformed(api: Api, object: &str, reason: String) -> CloudError {
        CloudError::new(api, ErrorClass::Transient, "MalformedResponse", object, reason)
    }

    /// One ENI by id, or `None` when it does not exist.
    pub async fn describe_eni(&self, eni: &EniId) -> CloudResult<Option<Eni>> {
        let params = self.params(&[("NetworkInterfaceId.1", eni.0.clone())]);
        let page: wire::DescribeNetworkInterfaces =
            self.call(Api::DescribeNetworkInterfaces, eni.as_str(), params).await?;
        let found = page
            .network_interface_sets
            .network_interface_set
            .iter()
            .find(|w| w.network_interface_id == eni.0);
        let found = found
            .map(wire::eni_from_wire)
            .transpose()
            .map_err(|e| Self::malformed(Api::DescribeNetworkInterfaces, eni.as_str(), e))?;
        self.remember(found.as_slice());
        Ok(found)
    }

    /// Polls an ENI with jittered waits until it is `InUse` (attach is
    /// asynchronous on ECS); fails after the configured attach timeout.
    pub async fn wait_in_use(&self, eni: &EniId) -> CloudResult<Eni> {
        let deadline = tokio::time::Instant::now() + self.attach_timeout;
        let mut ceiling = Duration::from_millis(200);
        loop {
            match self.describe_eni(eni).await? {
                Some(found) if found.state == EniState::InUse => return Ok(found),
                Some(found) if found.state == EniState::Detached => {
                    return Err(CloudError::new(
                        Api::AttachNetworkInterface,
                        ErrorClass::InvalidState,
                        "AttachNotInProgress",
                        eni.as_str(),
                        "the ENI is Available, not attaching: the attach was refused or undone; attach it again",
                    ));
                }
                Some(_) => {}
                None => {
                    return Err(CloudError::new(
                        Api::AttachNetworkInterface,
                        ErrorClass::NotFound,
                        "InvalidEniId.NotFound",
                        eni.as_str(),
                        "the ENI disappeared while attaching; resync",
                    ));
                }
            }
            let wait = ceiling.mul_f64(0.5 + 0.5 * unit_random());
            if tokio::time::Instant::now() + wait > deadline {
                return Err(CloudError::new(
                    Api::AttachNetworkInterface,
                    ErrorClass::Transient,
                    "AttachTimeout",
                    eni.as_str(),
                    format!(
                        "not InUse after {:?}; check the instance's state in the console",
                        self.attach_timeout
                    ),
                ));
            }
            tokio::time::sleep(wait).await;
            ceiling = (ceiling * 2).min(Duration::from_secs(3));
        }
    }
}

/// A random number in `0..1` (from the OS, via a v4 UUID; rand's thread RNG is not enabled).
fn unit_random() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

fn tag_params(
    prefix_key: &str,
    prefix_value: &str,
    tags: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (n, (key, value)) in tags.iter().enumerate() {
        out.push((format!("Tag.{}.{prefix_key}", n + 1), key.clone()));
        out.push((format!("Tag.{}.{prefix_value}", n + 1), value.clone()));
    }
    out
}

/// ECS also says an address already unassigned in words of its own.
fn gone_is_done(result: CloudResult<()>) -> CloudResult<()> {
    match result {
        Err(e) if e.code == "InvalidIp.IpUnassigned" => Ok(()),
        other => crate::error::gone_is_done(other),
    }
}

#[async_trait]
impl CloudProvider for AlibabaProvider {
    fn kind(&self) -> CloudKind {
        CloudKind::Alibaba
    }

    fn batch_limits(&self) -> BatchLimits {
        self.guard.profile().batch
    }

    async fn instance_limits(&self, types: &[InstanceType]) -> CloudResult<Vec<InstanceLimits>> {
        let mut out = Vec::new();
        for chunk in types.chunks(TYPES_PER_CALL) {
            out.extend(self.instance_type_pages(chunk).await?);
        }
        Ok(out)
    }

    async fn instance_catalog(&self) -> CloudResult<Vec<InstanceLimits>> {
        self.instance_type_pages(&[]).await
    }

    /// ECS's DescribeInstances takes up to 100 ids as one JSON array; ids it
    /// does not list (released instances) are gone.
    async fn instance_states(&self, ids: &[InstanceId]) -> CloudResult<BTreeMap<InstanceId, InstanceState>> {
        let api = Api::DescribeInstances;
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(INSTANCES_PER_DESCRIBE) {
            let list: Vec<&str> = chunk.iter().map(InstanceId::as_str).collect();
            let object = format!("{} instances", chunk.len());
            let pairs = [
                ("InstanceIds", serde_json::to_string(&list).expect("a list of strings serializes")),
                ("PageSize", INSTANCES_PER_DESCRIBE.to_string()),
            ];
            let body: wire::DescribeInstances = self.call(api, &object, self.params(&pairs)).await?;
            let listed: HashMap<&str, &str> =
                body.instances.instance.iter().map(|i| (i.instance_id.as_str(), i.status.as_str())).collect();
            for id in chunk {
                let state =
                    listed.get(id.as_str()).map_or(InstanceState::Gone, |s| wire::instance_state_of(s));
                out.insert(id.clone(), state);
            }
        }
        Ok(out)
    }

    async fn list_enis(
        &self,
        query: &EniQuery,
        page_size: u32,
        token: Option<String>,
    ) -> CloudResult<Page<Eni>> {
        let api = Api::DescribeNetworkInterfaces;
        let max = self.batch_limits().max_page_size;
        let mut pairs = vec![("MaxResults", page_size.clamp(1, max).to_string())];
        let object = match query {
            EniQuery::Vpc(vpc) => {
                pairs.push(("VpcId", vpc.0.clone()));
                vpc.0.clone()
            }
            EniQuery::Subnet(subnet) => {
                pairs.push(("VSwitchId", subnet.0.clone()));
                subnet.0.clone()
            }
            EniQuery::Instances(ids) => match ids.as_slice() {
                [] => return Ok(Page { items: Vec::new(), next_token: None }),
                [one] => {
                    pairs.push(("InstanceId", one.0.clone()));
                    one.0.clone()
                }
                _ => {
                    return Err(CloudError::new(
                        api,
                        ErrorClass::InvalidRequest,
                        "TooManyInstances",
                        format!("{} instances", ids.len()),
                        "ECS lists the ENIs of one instance per call: ask per instance (batch_limits().instances_per_list is 1)",
                    ));
                }
            },
        };
        if let Some(token) = token {
            pairs.push(("NextToken", token));
        }
        let body: wire::DescribeNetworkInterfaces = self.call(api, &object, self.params(&pairs)).await?;
        let items = body
            .network_interface_sets
            .network_interface_set
            .iter()
            .map(wire::eni_from_wire)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Self::malformed(api, &object, e))?;
        self.remember(&items);
        Ok(Page { items, next_token: Some(body.next_token).filter(|t| !t.is_empty()) })
    }

    async fn list_subnets(&self, vpc: &VpcId) -> CloudResult<Vec<Subnet>> {
        let mut out = Vec::new();
        for page in 1u32.. {
            let pairs = [
                ("VpcId", vpc.0.clone()),
                ("PageSize", VSWITCH_PAGE.to_string()),
                ("PageNumber", page.to_string()),
            ];
            let body: wire::DescribeVSwitches =
                self.call(Api::DescribeSubnets, vpc.as_str(), self.params(&pairs)).await?;
            let got = body.v_switches.v_switch.len();
            out.extend(body.v_switches.v_switch.iter().map(wire::subnet_from_wire));
            if got == 0 || out.len() as u64 >= body.total_count {
                break;
            }
        }
        Ok(out)
    }

    async fn create_eni(&self, request: &CreateEni) -> CloudResult<Eni> {
        let api = Api::CreateNetworkInterface;
        let mut pairs = vec![("VSwitchId", request.subnet.0.clone())];
        let groups: Vec<(String, String)> = request
            .security_groups
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("SecurityGroupIds.{}", i + 1), g.0.clone()))
            .collect();
        if request.secondary_ips > 0 {
            pairs.push(("SecondaryPrivateIpAddressCount", request.secondary_ips.to_string()));
        }
        pairs.push(("Description", "created by eni-ipam".into()));
        pairs.push(("ClientToken", request.client_token.clone()));
        let mut params = self.params(&pairs);
        params.extend(groups);
        params.extend(tag_params("Key", "Value", &request.tags));
        let body: wire::CreateNetworkInterface = self.call(api, request.subnet.as_str(), params).await?;
        wire::eni_from_wire(&body.eni).map_err(|e| Self::malformed(api, request.subnet.as_str(), e))
    }

    /// ECS picks the device index itself (the lowest free one); the planner
    /// asks for the lowest free index too, and the next listing shows the
    /// cloud's choice. ENIs stay when the instance is released (ECS does not
    /// delete secondary ENIs with it); the tags let GC find them.
    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId, _device_index: u32) -> CloudResult<()> {
        let params =
            self.params(&[("NetworkInterfaceId", eni.0.clone()), ("InstanceId", instance.0.clone())]);
        let _: wire::Acknowledged = self.call(Api::AttachNetworkInterface, eni.as_str(), params).await?;
        self.attached_to.lock().expect("attachment map lock").insert(eni.clone(), instance.clone());
        Ok(())
    }

    async fn assign_ips(&self, eni: &EniId, count: u32) -> CloudResult<Vec<Ipv4Addr>> {
        let api = Api::AssignPrivateIpAddresses;
        let mut out = Vec::new();
        for chunk in BatchLimits::chunks(count, self.batch_limits().assign_ips_per_call) {
            // One token per chunk, the same across retries: a retried call whose
            // first answer was lost gets the first result, not more addresses.
            let token = uuid::Uuid::new_v4().to_string();
            let params = self.params(&[
                ("NetworkInterfaceId", eni.0.clone()),
                ("SecondaryPrivateIpAddressCount", chunk.to_string()),
                ("ClientToken", token),
            ]);
            let body: wire::AssignPrivateIpAddresses = self.call(api, eni.as_str(), params).await?;
            for ip in &body.assigned_private_ip_addresses_set.private_ip_set.private_ip_address {
                out.push(ip.parse().map_err(|_| {
                    Self::malformed(api, eni.as_str(), format!("assigned address '{ip}' is not IPv4"))
                })?);
            }
        }
        Ok(out)
    }

    async fn unassign_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> CloudResult<()> {
        let per_call = self.batch_limits().unassign_ips_per_call.unwrap_or(u32::MAX).max(1) as usize;
        for chunk in ips.chunks(per_call) {
            let mut params = self.params(&[("NetworkInterfaceId", eni.0.clone())]);
            params.extend(
                chunk
                    .iter()
                    .enumerate()
                    .map(|(i, ip)| (format!("PrivateIpAddress.{}", i + 1), ip.to_string())),
            );
            let result = self
                .call::<wire::Acknowledged>(Api::UnassignPrivateIpAddresses, eni.as_str(), params)
                .await
                .map(drop);
            gone_is_done(result)?;
        }
        Ok(())
    }

    async fn detach_eni(&self, eni: &EniId) -> CloudResult<()> {
        let known = self.attached_to.lock().expect("attachment map lock").get(eni).cloned();
        let instance = match known {
            Some(instance) => instance,
            None => match self.describe_eni(eni).await?.and_then(|e| e.instance) {
                Some(instance) => instance,
                None => return Ok(()),
            },
        };
        let params =
            self.params(&[("NetworkInterfaceId", eni.0.clone()), ("InstanceId", instance.0.clone())]);
        let result = self
            .call::<wire::Acknowledged>(Api::DetachNetworkInterface, eni.as_str(), params)
            .await
            .map(drop);
        self.attached_to.lock().expect("attachment map lock").remove(eni);
        gone_is_done(result)
    }

    async fn delete_eni(&self, eni: &EniId) -> CloudResult<()> {
        let params = self.params(&[("NetworkInterfaceId", eni.0.clone())]);
        let result = self
            .call::<wire::Acknowledged>(Api::DeleteNetworkInterface, eni.as_str(), params)
            .await
            .map(drop);
        gone_is_done(result)
    }

    async fn tag_eni(&self, eni: &EniId, tags: &BTreeMap<String, String>) -> CloudResult<()> {
        let mut params = self.params(&[("ResourceType", "eni".into()), ("ResourceId.1", eni.0.clone())]);
        params.extend(tag_params("Key", "Value", tags));
        let _: wire::Acknowledged = self.call(Api::CreateTags, eni.as_str(), params).await?;
        Ok(())
    }
}
