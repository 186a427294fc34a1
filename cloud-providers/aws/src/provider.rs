//! `CloudProvider` for EC2. Every call goes through the shared `CallGuard`;
//! the SDK's own retries are off (see `config.rs`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, NetworkInterfaceAttachmentChanges, ResourceType, Tag, TagSpecification};
use eni_ipam_api::{EniId, InstanceId, InstanceType, VpcId};
use eni_ipam_cloud::{
    Api, BatchLimits, CallGuard, CloudError, CloudKind, CloudProvider, CloudResult, CreateEni, Eni, EniQuery,
    ErrorClass, INSTANCES_PER_DESCRIBE, InstanceLimits, InstanceState, Page, Subnet, gone_is_done,
};

use crate::config::{AwsConfig, AwsSetupError, endpoint_of, sdk_client};
use crate::convert;
use crate::errors::cloud_error;

/// EC2 through aws-sdk-ec2.
#[derive(Clone, Debug)]
pub struct AwsProvider {
    client: aws_sdk_ec2::Client,
    guard: Arc<CallGuard>,
    config: AwsConfig,
}

/// The provider could not be set up, in words that name the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum AwsConnectError {
    /// The configuration is wrong.
    #[error(transparent)]
    Setup(#[from] AwsSetupError),
    /// No identity, or half of one.
    #[error(transparent)]
    Identity(#[from] crate::identity::AwsIdentityError),
    /// EC2 did not answer.
    #[error(
        "cannot reach EC2 at {endpoint} ({}: {}); check --aws-endpoint, --aws-region and the network",
        .cause.code, .cause.message
    )]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// What happened.
        cause: CloudError,
    },
    /// No credentials, or EC2 refused them.
    #[error(
        "EC2 at {endpoint}: credentials of {identity} missing or refused ({}: {}); check the role's policy and trust (IRSA, EKS Pod Identity), or the keys",
        .cause.code, .cause.message
    )]
    Credentials {
        /// The endpoint.
        endpoint: String,
        /// The identity the default chain used.
        identity: String,
        /// What happened.
        cause: CloudError,
    },
}

fn filter(name: &str, values: impl IntoIterator<Item = String>) -> Filter {
    Filter::builder().name(name).set_values(Some(values.into_iter().collect())).build()
}

fn aws_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

impl AwsProvider {
    /// Builds the client and makes one call (no retry) to check that EC2
    /// answers and accepts the credentials, so a bad setup fails at once
    /// with one clear error instead of a storm of retries later.
    pub async fn connect(
        config: AwsConfig,
        guard: Arc<CallGuard>,
        vpc: &VpcId,
    ) -> Result<Self, AwsConnectError> {
        let env = |name: &str| std::env::var(name).ok();
        let identity = crate::identity::identity_of(config.static_credentials.is_some(), &env)?;
        tracing::info!(%identity, endpoint = %endpoint_of(&config), "EC2 credentials");
        let client = sdk_client(&config).await?;
        let provider = Self { client, guard, config };
        let probe = provider
            .guard
            .call_once(Api::DescribeSubnets, || provider.describe_subnets_page(vpc, None))
            .await;
        match probe {
            Ok(_) => Ok(provider),
            Err(e) if e.class == ErrorClass::Auth => Err(AwsConnectError::Credentials {
                endpoint: endpoint_of(&provider.config),
                identity: identity.to_string(),
                cause: e,
            }),
            Err(e) if e.class == ErrorClass::Transient || e.class == ErrorClass::Throttled => {
                Err(AwsConnectError::Unreachable { endpoint: endpoint_of(&provider.config), cause: e })
            }
            Err(_) => Ok(provider), // EC2 answered; the VPC may just be empty or wrong, which resync will say.
        }
    }

    /// Builds the client without a probe, for callers that only read the
    /// instance-type catalog (`eni-ipam-operator capacity`): that needs no VPC and
    /// only `ec2:DescribeInstanceTypes`, and its first call says what is wrong.
    pub async fn connect_catalog(config: AwsConfig, guard: Arc<CallGuard>) -> Result<Self, AwsConnectError> {
        let env = |name: &str| std::env::var(name).ok();
        crate::identity::identity_of(config.static_credentials.is_some(), &env)?;
        let client = sdk_client(&config).await?;
        Ok(Self { client, guard, config })
    }

    /// DescribeInstanceTypes for `types` (every type when `None`), 100 a page
    /// (EC2's largest), followed to the last page.
    async fn instance_type_pages(
        &self,
        types: Option<Vec<aws_sdk_ec2::types::InstanceType>>,
    ) -> CloudResult<Vec<InstanceLimits>> {
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .guard
                .call(Api::DescribeInstanceTypes, || async {
                    self.client
                        .describe_instance_types()
                        .set_instance_types(types.clone())
                        .set_max_results(types.is_none().then_some(100))
                        .set_next_token(token.clone())
                        .send()
                        .await
                        .map_err(|e| cloud_error(Api::DescribeInstanceTypes, "instance-types", e))
                })
                .await?;
            found.extend(out.instance_types().iter().filter_map(convert::limits));
            match out.next_token() {
                Some(next) => token = Some(next.to_owned()),
                None => return Ok(found),
            }
        }
    }

    /// The endpoint in use, for messages.
    pub fn endpoint(&self) -> String {
        endpoint_of(&self.config)
    }

    async fn describe_subnets_page(
        &self,
        vpc: &VpcId,
        token: Option<String>,
    ) -> CloudResult<(Vec<Subnet>, Option<String>)> {
        let out = self
            .client
            .describe_subnets()
            .filters(filter("vpc-id", [vpc.to_string()]))
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| cloud_error(Api::DescribeSubnets, vpc.as_str(), e))?;
        Ok((out.subnets().iter().filter_map(convert::subnet).collect(), out.next_token().map(str::to_owned)))
    }

    async fn attachment_id(&self, eni: &EniId) -> CloudResult<Option<String>> {
        let out = self
            .guard
            .call(Api::DescribeNetworkInterfaces, || async {
                self.client
                    .describe_network_interfaces()
                    .network_interface_ids(eni.as_str())
                    .send()
                    .await
                    .map_err(|e| cloud_error(Api::DescribeNetworkInterfaces, eni.as_str(), e))
            })
            .await?;
        Ok(out
            .network_interfaces()
            .first()
            .and_then(|ni| ni.attachment())
            .and_then(|a| a.attachment_id())
            .map(str::to_owned))
    }
}

#[async_trait]
impl CloudProvider for AwsProvider {
    fn kind(&self) -> CloudKind {
        CloudKind::Aws
    }

    fn batch_limits(&self) -> BatchLimits {
        self.guard.profile().batch
    }

    async fn instance_limits(&self, types: &[InstanceType]) -> CloudResult<Vec<InstanceLimits>> {
        let mut found: Vec<InstanceLimits> =
            types.iter().filter_map(|t| self.config.limits_override.get(t.as_str()).cloned()).collect();
        let ask: Vec<aws_sdk_ec2::types::InstanceType> = types
            .iter()
            .filter(|t| !self.config.limits_override.contains_key(t.as_str()))
            .map(|t| aws_sdk_ec2::types::InstanceType::from(t.as_str()))
            .collect();
        if ask.is_empty() {
            return Ok(found);
        }
        match self.instance_type_pages(Some(ask)).await {
            Ok(limits) => {
                found.extend(limits);
                Ok(found)
            }
            // An unknown type makes EC2 refuse the whole call: report none, so the
            // caller says which type to add to the override table.
            Err(e) if e.class == ErrorClass::InvalidRequest => Ok(found),
            Err(e) => Err(e),
        }
    }

    /// Every type EC2 offers in the region, with the override table over it.
    async fn instance_catalog(&self) -> CloudResult<Vec<InstanceLimits>> {
        let mut found = self.instance_type_pages(None).await?;
        found.retain(|l| !self.config.limits_override.contains_key(l.instance_type.as_str()));
        found.extend(self.config.limits_override.values().cloned());
        Ok(found)
    }

    /// Asks by the `instance-id` filter, not `InstanceIds`: with ids EC2
    /// refuses the whole call when one is unknown (`InvalidInstanceID.NotFound`,
    /// moto too); with the filter it leaves that one out, which is `Gone`.
    async fn instance_states(&self, ids: &[InstanceId]) -> CloudResult<BTreeMap<InstanceId, InstanceState>> {
        let api = Api::DescribeInstances;
        let mut out: BTreeMap<InstanceId, InstanceState> =
            ids.iter().map(|id| (id.clone(), InstanceState::Gone)).collect();
        for chunk in ids.chunks(INSTANCES_PER_DESCRIBE) {
            let object = format!("{} instances", chunk.len());
            let ask = filter("instance-id", chunk.iter().map(|i| i.to_string()));
            let mut token = None;
            loop {
                let page = self
                    .guard
                    .call(api, || async {
                        self.client
                            .describe_instances()
                            .filters(ask.clone())
                            .max_results(1000)
                            .set_next_token(token.clone())
                            .send()
                            .await
                            .map_err(|e| cloud_error(api, &object, e))
                    })
                    .await?;
                for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                    let (Some(id), Some(state)) = (instance.instance_id(), instance.state()) else {
                        continue;
                    };
                    let id = InstanceId::from(id);
                    if out.contains_key(&id) {
                        out.insert(id, convert::instance_state(state.name()));
                    }
                }
                match page.next_token() {
                    Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                    _ => break,
                }
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
        let (object, filter) = match query {
            EniQuery::Vpc(vpc) => (vpc.to_string(), filter("vpc-id", [vpc.to_string()])),
            EniQuery::Subnet(subnet) => (subnet.to_string(), filter("subnet-id", [subnet.to_string()])),
            EniQuery::Instances(ids) => (
                format!("{} instances", ids.len()),
                filter("attachment.instance-id", ids.iter().map(|i| i.to_string())),
            ),
        };
        // EC2 takes MaxResults in 5..=1000.
        let max_results = page_size.clamp(5, self.batch_limits().max_page_size) as i32;
        let out = self
            .guard
            .call(Api::DescribeNetworkInterfaces, || async {
                self.client
                    .describe_network_interfaces()
                    .filters(filter.clone())
                    .max_results(max_results)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| cloud_error(Api::DescribeNetworkInterfaces, &object, e))
            })
            .await?;
        let items = out.network_interfaces().iter().filter_map(convert::eni).collect();
        Ok(Page { items, next_token: out.next_token().map(str::to_owned) })
    }

    async fn list_subnets(&self, vpc: &VpcId) -> CloudResult<Vec<Subnet>> {
        let mut all = Vec::new();
        let mut token = None;
        loop {
            let (page, next) = self
                .guard
                .call(Api::DescribeSubnets, || self.describe_subnets_page(vpc, token.clone()))
                .await?;
            all.extend(page);
            match next {
                Some(next) => token = Some(next),
                None => return Ok(all),
            }
        }
    }

    async fn create_eni(&self, request: &CreateEni) -> CloudResult<Eni> {
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::NetworkInterface)
            .set_tags(Some(aws_tags(&request.tags)))
            .build();
        let out = self
            .guard
            .call(Api::CreateNetworkInterface, || async {
                self.client
                    .create_network_interface()
                    .subnet_id(request.subnet.as_str())
                    .set_groups(
                        (!request.security_groups.is_empty())
                            .then(|| request.security_groups.iter().map(|g| g.to_string()).collect()),
                    )
                    .set_secondary_private_ip_address_count(
                        (request.secondary_ips > 0).then_some(request.secondary_ips as i32),
                    )
                    .tag_specifications(tags.clone())
                    .client_token(&request.client_token)
                    .send()
                    .await
                    .map_err(|e| cloud_error(Api::CreateNetworkInterface, request.subnet.as_str(), e))
            })
            .await?;
        out.network_interface().and_then(convert::eni).ok_or_else(|| {
            CloudError::new(
                Api::CreateNetworkInterface,
                ErrorClass::Transient,
                "EmptyResponse",
                request.subnet.as_str(),
                "EC2 answered without the new network interface",
            )
        })
    }

    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId, device_index: u32) -> CloudResult<()> {
        let out = self
            .guard
            .call(Api::AttachNetworkInterface, || async {
                self.client
                    .attach_network_interface()
                    .network_interface_id(eni.as_str())
                    .instance_id(instance.as_str())
                    .device_index(device_index as i32)
                    .send()
                    .await
                    .map_err(|e| cloud_error(Api::AttachNetworkInterface, eni.as_str(), e))
            })
            .await?;
        // AttachNetworkInterface cannot set DeleteOnTermination: a third call does.
        // If it fails the ENI still works; it is tagged, so GC finds it once the
        // instance is gone.
        let Some(attachment) = out.attachment_id() else { return Ok(()) };
        let changes = NetworkInterfaceAttachmentChanges::builder()
            .attachment_id(attachment)
            .delete_on_termination(true)
            .build();
        let modified = self
            .guard
            .call(Api::ModifyNetworkInterfaceAttribute, || async {
                self.client
                    .modify_network_interface_attribute()
                    .network_interface_id(eni.as_str())
                    .attachment(changes.clone())
                    .send()
                    .await
                    .map_err(|e| cloud_error(Api::ModifyNetworkInterfaceAttribute, eni.as_str(), e))
            })
            .await;
        if let Err(e) = modified {
            tracing::warn!(eni = %eni, error = %e, "could not set DeleteOnTermination; GC will collect the ENI after its instance");
        }
        Ok(())
    }

    async fn assign_ips(&self, eni: &EniId, count: u32) -> CloudResult<Vec<Ipv4Addr>> {
        let out = self
            .guard
            .call(Api::AssignPrivateIpAddresses, || async {
                self.client
                    .assign_private_ip_addresses()
                    .network_interface_id(eni.as_str())
                    .secondary_private_ip_address_count(count as i32)
                    .send()
                    .await
                    .map_err(|e| cloud_error(Api::AssignPrivateIpAddresses, eni.as_str(), e))
            })
            .await?;
        Ok(out
            .assigned_private_ip_addresses()
            .iter()
            .filter_map(|a| a.private_ip_address()?.parse().ok())
            .collect())
    }

    async fn unassign_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> CloudResult<()> {
        let result = self
            .guard
            .call(Api::UnassignPrivateIpAddresses, || async {
                self.client
                    .unassign_private_ip_addresses()
                    .network_interface_id(eni.as_str())
                    .set_private_ip_addresses(Some(ips.iter().map(Ipv4Addr::to_string).collect()))
                    .send()
                    .await
                    .map_err(|e| cloud_error(Api::UnassignPrivateIpAddresses, eni.as_str(), e))
            })
            .await;
        gone_is_done(result.map(|_| ()))
    }

    async fn detach_eni(&self, eni: &EniId) -> CloudResult<()> {
        // EC2 detaches by attachment id, which only a describe tells.
        let Some(attachment) = self.attachment_id(eni).await? else { return Ok(()) };
        let result = self
            .guard
            .call(Api::DetachNetworkInterface, || async {
                self.client
                    .detach_network_interface()
                    .attachment_id(&attachment)
                    .send()
                    .await
                    .map_err(|e| cloud_error(Api::DetachNetworkInterface, eni.as_str(), e))
            })
            .await;
        gone_is_done(result.map(|_| ()))
    }

    async fn delete_eni(&self, eni: &EniId) -> CloudResult<()> {
        let result = self
            .guard
            .call(Api::DeleteNetworkInterface, || async {
                self.client
                    .delete_network_interface()
                    .network_interface_id(eni.as_str())
                    .send()
                    .await
                    .map_err(|e| cloud_error(Api::DeleteNetworkInterface, eni.as_str(), e))
            })
            .await;
        gone_is_done(result.map(|_| ()))
    }

    async fn tag_eni(&self, eni: &EniId, tags: &BTreeMap<String, String>) -> CloudResult<()> {
        self.guard
            .call(Api::CreateTags, || async {
                self.client
                    .create_tags()
                    .resources(eni.as_str())
                    .set_tags(Some(aws_tags(tags)))
                    .send()
                    .await
                    .map_err(|e| cloud_error(Api::CreateTags, eni.as_str(), e))
            })
            .await
            .map(|_| ())
    }
}
