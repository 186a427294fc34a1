//! Server-side printing: the `meta.k8s.io/v1` Table kube-apiserver answers when a
//! client (kubectl) asks for `application/json;as=Table;v=v1;g=meta.k8s.io`.
//! Columns per kind follow what kube-apiserver prints for Nodes and Pods and the
//! ENINode CRD's printer columns; other kinds get Name and Age.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{ENINODES, Kind, NODES, PODS};

/// Whether the request's Accept header asks for a Table.
pub(crate) fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').next().is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
    })
}

/// One column: name, type, and how to read its cell from an object.
struct Column {
    name: &'static str,
    type_: &'static str,
    cell: fn(&Value) -> Value,
}

fn name(o: &Value) -> Value {
    o["metadata"]["name"].clone()
}

/// `5s`, `3m`, `2h`, `4d` since the object was created, as kubectl shows ages.
fn age(o: &Value) -> Value {
    let Some(created) =
        o["metadata"]["creationTimestamp"].as_str().and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    else {
        return json!("<unknown>");
    };
    let secs = (OffsetDateTime::now_utc() - created).whole_seconds().max(0);
    json!(match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    })
}

fn node_status(o: &Value) -> Value {
    let ready = o["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"] == "True");
    json!(match ready {
        Some(true) => "Ready",
        Some(false) => "NotReady",
        None => "Unknown",
    })
}

fn pod_ready(o: &Value) -> Value {
    let containers = o["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = o["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True");
    json!(format!("{}/{containers}", if ready { containers } else { 0 }))
}

fn pod_status(o: &Value) -> Value {
    o["status"]["reason"].as_str().or(o["status"]["phase"].as_str()).map_or(json!("Pending"), |s| json!(s))
}

fn or_none(v: &Value) -> Value {
    if v.is_null() { json!("<none>") } else { v.clone() }
}

fn columns(kind: &Kind) -> Vec<Column> {
    let mut columns = vec![Column { name: "Name", type_: "string", cell: name }];
    if *kind == NODES {
        columns.push(Column { name: "Status", type_: "string", cell: node_status });
        columns.push(Column {
            name: "IPs",
            type_: "string",
            cell: |o| or_none(&o["status"]["allocatable"]["eni-ipam.io/ip"]),
        });
    } else if *kind == PODS {
        columns.push(Column { name: "Ready", type_: "string", cell: pod_ready });
        columns.push(Column { name: "Status", type_: "string", cell: pod_status });
        columns.push(Column { name: "IP", type_: "string", cell: |o| or_none(&o["status"]["podIP"]) });
        columns.push(Column { name: "Node", type_: "string", cell: |o| or_none(&o["spec"]["nodeName"]) });
    } else if *kind == ENINODES {
        columns.push(Column { name: "Instance", type_: "string", cell: |o| o["spec"]["instanceId"].clone() });
        columns.push(Column { name: "Type", type_: "string", cell: |o| o["spec"]["instanceType"].clone() });
        columns.push(Column {
            name: "Available",
            type_: "integer",
            cell: |o| o["status"]["available"].clone(),
        });
        columns.push(Column { name: "Used", type_: "integer", cell: |o| o["status"]["inUse"].clone() });
        columns.push(Column { name: "ENIs", type_: "integer", cell: |o| o["status"]["eniCount"].clone() });
    }
    columns.push(Column { name: "Age", type_: "string", cell: age });
    columns
}

/// The Table of `objects` (a list's items, or one object), with list metadata `metadata`.
pub(crate) fn table(kind: &Kind, objects: &[Value], metadata: Value, include_object: Option<&str>) -> Value {
    let columns = columns(kind);
    let definitions: Vec<Value> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"name": c.name, "type": c.type_, "format": if i == 0 { "name" } else { "" },
                   "description": "", "priority": 0})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let object = match include_object {
                Some("None") => Value::Null,
                Some("Object") => o.clone(),
                // Metadata, the default.
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}),
            };
            json!({"cells": columns.iter().map(|c| (c.cell)(o)).collect::<Vec<_>>(), "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
           "columnDefinitions": definitions, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectls_accept_header_asks_for_a_table_and_a_plain_one_does_not() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert!(wants_table(Some(kubectl)));
        assert!(!wants_table(Some("application/json")));
        assert!(!wants_table(None));
    }

    #[test]
    fn pods_print_ready_status_ip_and_node() {
        let pod = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": "True"}]}});
        let t = table(&PODS, &[pod], json!({}), None);
        let names: Vec<&str> =
            t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Name", "Ready", "Status", "IP", "Node", "Age"]);
        let cells = t["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(
            cells[..5],
            json!(["web", "1/1", "Running", "10.0.0.7", "node-1"]).as_array().unwrap()[..]
        );
        assert!(cells[5].as_str().unwrap().ends_with('d'), "an age in days: {}", cells[5]);
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }
}
