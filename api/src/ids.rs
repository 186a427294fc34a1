//! Newtypes for cloud object ids, so an ENI id can never be passed where a
//! subnet id is expected. All serialize as plain strings.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

macro_rules! cloud_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize, JsonSchema,
        )]
        #[serde(transparent)]
        #[schemars(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The id as the cloud spells it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

cloud_id!(
    /// A VM instance id (`i-0abc...` on EC2, `i-bp1...` on ECS).
    InstanceId
);
cloud_id!(
    /// An elastic network interface id (`eni-...`).
    EniId
);
cloud_id!(
    /// A subnet (EC2) or vSwitch (ECS) id.
    SubnetId
);
cloud_id!(
    /// A VPC id.
    VpcId
);
cloud_id!(
    /// An availability zone (`us-east-1a`, `cn-hangzhou-h`).
    Zone
);
cloud_id!(
    /// A security group id.
    SecurityGroupId
);
cloud_id!(
    /// An instance type name (`m5.large`, `ecs.g7.xlarge`).
    InstanceType
);
