//! The kinds the stand-in serves: where each lives in the API and how it is named.

/// A kind the stand-in serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kind {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// URL plural.
    pub plural: &'static str,
    /// `kind`.
    pub kind: &'static str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether `/status` is a subresource (main writes keep status, status writes touch only status).
    pub status: bool,
    /// Short names for discovery.
    pub short: &'static str,
}

impl Kind {
    /// `apiVersion` of the kind.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Core v1 Nodes.
pub const NODES: Kind = Kind {
    group: "",
    version: "v1",
    plural: "nodes",
    kind: "Node",
    namespaced: false,
    status: true,
    short: "no",
};
/// Core v1 Pods.
pub const PODS: Kind = Kind {
    group: "",
    version: "v1",
    plural: "pods",
    kind: "Pod",
    namespaced: true,
    status: true,
    short: "po",
};
/// Core v1 Events.
pub const CORE_EVENTS: Kind = Kind {
    group: "",
    version: "v1",
    plural: "events",
    kind: "Event",
    namespaced: true,
    status: false,
    short: "ev",
};
/// Core v1 ConfigMaps.
pub const CONFIGMAPS: Kind = Kind {
    group: "",
    version: "v1",
    plural: "configmaps",
    kind: "ConfigMap",
    namespaced: true,
    status: false,
    short: "cm",
};
/// ENINodes (cluster-scoped CRD with a status subresource).
pub const ENINODES: Kind = Kind {
    group: "eni-ipam.io",
    version: "v1alpha1",
    plural: "eninodes",
    kind: "ENINode",
    namespaced: false,
    status: true,
    short: "enin",
};
/// coordination.k8s.io/v1 Leases.
pub const LEASES: Kind = Kind {
    group: "coordination.k8s.io",
    version: "v1",
    plural: "leases",
    kind: "Lease",
    namespaced: true,
    status: false,
    short: "",
};
/// events.k8s.io/v1 Events.
pub const EVENTS: Kind = Kind {
    group: "events.k8s.io",
    version: "v1",
    plural: "events",
    kind: "Event",
    namespaced: true,
    status: false,
    short: "",
};

/// Core v1 Services (kube-proxy's input in the bed).
pub const SERVICES: Kind = Kind {
    group: "",
    version: "v1",
    plural: "services",
    kind: "Service",
    namespaced: true,
    status: true,
    short: "svc",
};
/// discovery.k8s.io/v1 EndpointSlices (a Service's backends).
pub const ENDPOINTSLICES: Kind = Kind {
    group: "discovery.k8s.io",
    version: "v1",
    plural: "endpointslices",
    kind: "EndpointSlice",
    namespaced: true,
    status: false,
    short: "",
};
/// networking.k8s.io/v1 ServiceCIDRs (the cluster's service ranges, GA in 1.33).
pub const SERVICECIDRS: Kind = Kind {
    group: "networking.k8s.io",
    version: "v1",
    plural: "servicecidrs",
    kind: "ServiceCIDR",
    namespaced: false,
    status: true,
    short: "",
};

/// Core v1 Namespaces (the stand-in starts with kube-system, whose UID is a cluster's identity).
pub const NAMESPACES: Kind = Kind {
    group: "",
    version: "v1",
    plural: "namespaces",
    kind: "Namespace",
    namespaced: false,
    status: true,
    short: "ns",
};

/// Every kind served.
pub const KINDS: [Kind; 11] = [
    NODES,
    PODS,
    CORE_EVENTS,
    CONFIGMAPS,
    ENINODES,
    LEASES,
    EVENTS,
    SERVICES,
    ENDPOINTSLICES,
    SERVICECIDRS,
    NAMESPACES,
];
