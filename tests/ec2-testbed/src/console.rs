//! Setting up a VPC in moto the way an admin or an autoscaler would (not
//! through the provider under test): VPC, subnets, instances.

use crate::wire::{call, value, values};

/// Console calls against an EC2 endpoint (moto).
pub struct Console {
    http: reqwest::Client,
    base: String,
}

impl Console {
    /// A console for `base` (moto's URL).
    pub fn new(base: &str) -> Self {
        crate::install_ring();
        Self { http: reqwest::Client::new(), base: base.to_owned() }
    }

    async fn ok(&self, params: &[(&str, String)]) -> String {
        let (status, body) = call(&self.http, &self.base, params).await;
        assert!(status < 300, "console call {params:?} failed with {status}: {body}");
        body
    }

    /// Creates a VPC; returns its id.
    pub async fn create_vpc(&self, cidr: &str) -> String {
        let body = self.ok(&[("Action", "CreateVpc".into()), ("CidrBlock", cidr.into())]).await;
        value(&body, "vpcId").expect("CreateVpc answers a vpcId")
    }

    /// Creates a subnet; returns its id.
    pub async fn create_subnet(&self, vpc: &str, cidr: &str, zone: &str) -> String {
        let body = self
            .ok(&[
                ("Action", "CreateSubnet".into()),
                ("VpcId", vpc.into()),
                ("CidrBlock", cidr.into()),
                ("AvailabilityZone", zone.into()),
            ])
            .await;
        value(&body, "subnetId").expect("CreateSubnet answers a subnetId")
    }

    /// Launches `count` instances in a subnet; returns their ids.
    pub async fn run_instances(&self, instance_type: &str, subnet: &str, count: u32) -> Vec<String> {
        let body = self
            .ok(&[
                ("Action", "RunInstances".into()),
                ("ImageId", "ami-12c6146b".into()),
                ("InstanceType", instance_type.into()),
                ("SubnetId", subnet.into()),
                ("MinCount", count.to_string()),
                ("MaxCount", count.to_string()),
            ])
            .await;
        values(&body, "instanceId")
    }

    /// Terminates an instance.
    pub async fn terminate(&self, instance: &str) {
        self.ok(&[("Action", "TerminateInstances".into()), ("InstanceId.1", instance.into())]).await;
    }

    /// Stops an instance.
    pub async fn stop(&self, instance: &str) {
        self.ok(&[("Action", "StopInstances".into()), ("InstanceId.1", instance.into())]).await;
    }

    /// Takes every free address of `subnet` with one unattached, untagged ENI (another
    /// tenant of the subnet), as EC2 picks them: no address any ENI holds, none of the four
    /// first or the last. Returns the ENI's id and how many addresses it took.
    pub async fn fill_subnet(&self, subnet: &str) -> (String, usize) {
        let described = self.ok(&[("Action", "DescribeSubnets".into()), ("SubnetId.1", subnet.into())]).await;
        let cidr = value(&described, "cidrBlock").expect("DescribeSubnets answers a cidrBlock");
        let held = self
            .ok(&[
                ("Action", "DescribeNetworkInterfaces".into()),
                ("Filter.1.Name", "subnet-id".into()),
                ("Filter.1.Value.1", subnet.into()),
            ])
            .await;
        let held: std::collections::HashSet<String> = values(&held, "privateIpAddress").into_iter().collect();
        let free = crate::proxy::unheld_addresses(&cidr, &held).expect("the subnet's CIDR parses");
        let mut params =
            vec![("Action", "CreateNetworkInterface".to_owned()), ("SubnetId", subnet.to_owned())];
        let keys: Vec<(String, String)> = (1..=free.len())
            .map(|n| {
                (
                    format!("PrivateIpAddresses.{n}.PrivateIpAddress"),
                    format!("PrivateIpAddresses.{n}.Primary"),
                )
            })
            .collect();
        for (n, ip) in free.iter().enumerate() {
            params.push((keys[n].0.as_str(), ip.clone()));
            params.push((keys[n].1.as_str(), (n == 0).to_string()));
        }
        let body = self.ok(&params).await;
        (value(&body, "networkInterfaceId").expect("CreateNetworkInterface answers an id"), free.len())
    }

    /// Deletes an unattached ENI, its addresses free again.
    pub async fn delete_network_interface(&self, eni: &str) {
        self.ok(&[("Action", "DeleteNetworkInterface".into()), ("NetworkInterfaceId", eni.into())]).await;
    }

    /// Every ENI of a VPC as (id, instance id if attached, secondary IP count, tags text).
    pub async fn enis(&self, vpc: &str) -> Vec<EniRow> {
        let body = self
            .ok(&[
                ("Action", "DescribeNetworkInterfaces".into()),
                ("Filter.1.Name", "vpc-id".into()),
                ("Filter.1.Value.1", vpc.into()),
            ])
            .await;
        let (_, items, _) = crate::wire::items(&body, "networkInterfaceSet").unwrap_or(("", Vec::new(), ""));
        items
            .into_iter()
            .map(|item| EniRow {
                id: value(item, "networkInterfaceId").unwrap_or_default(),
                instance: value(item, "instanceId"),
                ips: values(item, "privateIpAddress")
                    .into_iter()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len(),
                tagged: item.contains("eni-ipam.io/cluster"),
                status: value(item, "status").unwrap_or_default(),
            })
            .collect()
    }
}

/// One ENI as the console sees it.
#[derive(Clone, Debug)]
pub struct EniRow {
    /// ENI id.
    pub id: String,
    /// Instance it is attached to.
    pub instance: Option<String>,
    /// Distinct IPv4 addresses on it (primary included).
    pub ips: usize,
    /// Carries the eni-ipam cluster tag.
    pub tagged: bool,
    /// EC2 status (`in-use`, `available`).
    pub status: String,
}
