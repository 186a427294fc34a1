// A runtime's side of CNI, through libcni (the library containerd and CRI-O call plugins
// with), for agent/tests/libcni_root.rs. Built by that test in GOPATH mode against Debian's
// golang-github-appc-cni-dev. One operation per run; the answer is one JSON line on stdout:
// {"ok": true, "result": ...} or {"ok": false, "error": {"code", "msg", "details"} | {"text"}}.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

type answer struct {
	Ok     bool        `json:"ok"`
	Result interface{} `json:"result,omitempty"`
	Error  interface{} `json:"error,omitempty"`
}

func main() {
	conflist := flag.String("conflist", "", "network configuration list file")
	container := flag.String("container", "", "container id")
	netns := flag.String("netns", "", "network namespace path")
	ifName := flag.String("ifname", "eth0", "interface name in the container")
	cacheDir := flag.String("cache", "", "libcni's result cache folder")
	cniPath := flag.String("path", "", "plugin folders, colon-separated")
	pod := flag.String("pod", "default/pod", "namespace/name for CNI_ARGS")
	portMappings := flag.String("port-mappings", "", "JSON list for the portMappings capability")
	flag.Parse()
	op := flag.Arg(0)

	bytes, err := os.ReadFile(*conflist)
	if err != nil {
		fail(err)
	}
	list, err := libcni.ConfListFromBytes(bytes)
	if err != nil {
		fail(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(strings.Split(*cniPath, ":"), *cacheDir, nil)
	namespace, name, _ := strings.Cut(*pod, "/")
	rt := &libcni.RuntimeConf{
		ContainerID: *container,
		NetNS:       *netns,
		IfName:      *ifName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", namespace},
			{"K8S_POD_NAME", name},
			{"K8S_POD_INFRA_CONTAINER_ID", *container},
		},
		CapabilityArgs: map[string]interface{}{},
	}
	if *portMappings != "" {
		var mappings interface{}
		if err := json.Unmarshal([]byte(*portMappings), &mappings); err != nil {
			fail(err)
		}
		rt.CapabilityArgs["portMappings"] = mappings
	}
	ctx := context.Background()
	switch op {
	case "versions":
		versions := map[string]interface{}{}
		for _, plugin := range list.Plugins {
			info, err := cni.GetVersionInfo(ctx, plugin.Network.Type)
			if err != nil {
				fail(err)
			}
			versions[plugin.Network.Type] = info.SupportedVersions()
		}
		succeed(versions)
	case "validate":
		caps, err := cni.ValidateNetworkList(ctx, list)
		if err != nil {
			fail(err)
		}
		succeed(caps)
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		succeed(result)
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
		succeed(nil)
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
		succeed(nil)
	case "cached":
		result, err := cni.GetNetworkListCachedResult(list, rt)
		if err != nil {
			fail(err)
		}
		succeed(result)
	default:
		fail(fmt.Errorf("unknown operation %q: versions, validate, add, check, del, cached", op))
	}
}

func succeed(result interface{}) {
	emit(answer{Ok: true, Result: result})
}

func fail(err error) {
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		emit(answer{Error: map[string]interface{}{"code": cniErr.Code, "msg": cniErr.Msg, "details": cniErr.Details}})
	}
	emit(answer{Error: map[string]interface{}{"text": err.Error()}})
}

func emit(a answer) {
	line, err := json.Marshal(a)
	if err != nil {
		line = []byte(fmt.Sprintf(`{"ok":false,"error":{"text":%q}}`, err.Error()))
	}
	fmt.Println(string(line))
	os.Exit(0)
}
