"""Drives the eni-ipam Alibaba emulator with Alibaba's official Python SDKs.

Usage: python sdk_roundtrip.py HOST:PORT INSTANCE_ID VSWITCH_ID
Prints one JSON object per step on stdout; the Rust test asserts on them.
Exits non-zero on the first unexpected failure.
"""

import json
import sys
import time

from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi import models as openapi_models
from alibabacloud_vpc20160428 import models as vpc_models
from alibabacloud_vpc20160428.client import Client as VpcClient

REGION = "cn-hangzhou"


def config(endpoint, secret="testsecret", algorithm=None):
    c = openapi_models.Config(
        access_key_id="testid",
        access_key_secret=secret,
        region_id=REGION,
        endpoint=endpoint,
        protocol="http",
    )
    if algorithm:
        c.signature_algorithm = algorithm
    return c


def step(name, **fields):
    print(json.dumps({"step": name, **fields}), flush=True)


def eni_state(ecs, eni_id):
    body = ecs.describe_network_interfaces(
        ecs_models.DescribeNetworkInterfacesRequest(region_id=REGION, network_interface_id=[eni_id])
    ).body
    sets = body.network_interface_sets.network_interface_set
    return sets[0] if sets else None


def main():
    endpoint, instance_id, vswitch_id = sys.argv[1:4]
    ecs = EcsClient(config(endpoint))
    vpc = VpcClient(config(endpoint))

    vsw = vpc.describe_vswitches(vpc_models.DescribeVSwitchesRequest(region_id=REGION)).body
    step("describe_vswitches", ids=[v.v_switch_id for v in vsw.v_switches.v_switch],
         free=[v.available_ip_address_count for v in vsw.v_switches.v_switch])

    types = ecs.describe_instance_types(
        ecs_models.DescribeInstanceTypesRequest(instance_types=["ecs.g7.large"])
    ).body
    step("describe_instance_types",
         types=[[t.instance_type_id, t.eni_quantity, t.eni_private_ip_address_quantity]
                for t in types.instance_types.instance_type])

    # The whole catalog two a page, following NextToken as ECS pages it.
    pages, listed, token = 0, [], None
    while True:
        page = ecs.describe_instance_types(
            ecs_models.DescribeInstanceTypesRequest(max_results=2, next_token=token)
        ).body
        pages += 1
        listed += [t.instance_type_id for t in page.instance_types.instance_type]
        token = page.next_token
        if not token:
            break
    step("describe_instance_types_paged", pages=pages, types=listed)

    instances = ecs.describe_instances(ecs_models.DescribeInstancesRequest(
        region_id=REGION, instance_ids=json.dumps([instance_id, "i-released0000000"]), page_size=100,
    )).body
    step("describe_instances", total=instances.total_count,
         instances=[[i.instance_id, i.status] for i in instances.instances.instance])

    created = ecs.create_network_interface(ecs_models.CreateNetworkInterfaceRequest(
        region_id=REGION, v_switch_id=vswitch_id, security_group_id="sg-emulated",
        secondary_private_ip_address_count=2, client_token="sdk-roundtrip-1",
        tag=[ecs_models.CreateNetworkInterfaceRequestTag(key="eni-ipam.io/cluster", value="sdk")],
    )).body
    eni_id = created.network_interface_id
    step("create", eni=eni_id, status=created.status,
         ips=[s.private_ip_address for s in created.private_ip_sets.private_ip_set])

    again = ecs.create_network_interface(ecs_models.CreateNetworkInterfaceRequest(
        region_id=REGION, v_switch_id=vswitch_id, security_group_id="sg-emulated",
        secondary_private_ip_address_count=2, client_token="sdk-roundtrip-1",
        tag=[ecs_models.CreateNetworkInterfaceRequestTag(key="eni-ipam.io/cluster", value="sdk")],
    )).body
    step("create_same_token", eni=again.network_interface_id)

    ecs.attach_network_interface(ecs_models.AttachNetworkInterfaceRequest(
        region_id=REGION, network_interface_id=eni_id, instance_id=instance_id))
    seen = []
    for _ in range(100):
        state = eni_state(ecs, eni_id)
        seen.append(state.status)
        if state.status == "InUse":
            break
        time.sleep(0.05)
    step("attach", statuses=sorted(set(seen)), device_index=state.attachment.device_index,
         instance=state.instance_id)

    assigned = ecs.assign_private_ip_addresses(ecs_models.AssignPrivateIpAddressesRequest(
        region_id=REGION, network_interface_id=eni_id, secondary_private_ip_address_count=3)).body
    new_ips = assigned.assigned_private_ip_addresses_set.private_ip_set.private_ip_address
    step("assign", ips=new_ips)

    # V1 (HMAC-SHA1) signatures through the same SDK.
    v1 = EcsClient(config(endpoint, algorithm="v2"))
    state = eni_state(v1, eni_id)
    step("describe_v1", ips=[s.private_ip_address for s in state.private_ip_sets.private_ip_set if not s.primary])

    ecs.unassign_private_ip_addresses(ecs_models.UnassignPrivateIpAddressesRequest(
        region_id=REGION, network_interface_id=eni_id, private_ip_address=new_ips))
    state = eni_state(ecs, eni_id)
    step("unassign", ips=[s.private_ip_address for s in state.private_ip_sets.private_ip_set if not s.primary])

    ecs.detach_network_interface(ecs_models.DetachNetworkInterfaceRequest(
        region_id=REGION, network_interface_id=eni_id, instance_id=instance_id))
    step("detach", status=eni_state(ecs, eni_id).status)

    ecs.delete_network_interface(ecs_models.DeleteNetworkInterfaceRequest(
        region_id=REGION, network_interface_id=eni_id))
    step("delete", found=eni_state(ecs, eni_id) is not None)

    try:
        EcsClient(config(endpoint, secret="wrongsecret")).describe_network_interfaces(
            ecs_models.DescribeNetworkInterfacesRequest(region_id=REGION))
        step("wrong_secret", code=None)
    except Exception as err:  # the SDK raises its ClientException
        step("wrong_secret", code=getattr(err, "code", None), status=getattr(err, "status_code", None))

    try:
        ecs.delete_network_interface(ecs_models.DeleteNetworkInterfaceRequest(region_id=REGION))
        step("missing_parameter", code=None)
    except Exception as err:
        step("missing_parameter", code=getattr(err, "code", None), status=getattr(err, "status_code", None))


if __name__ == "__main__":
    main()
