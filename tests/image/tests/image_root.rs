//! The image scripts/build-image writes (needs root: mmdebstrap, buildah): every
//! container the chart renders runs its program inside it, the install-cni step
//! puts a static eni-ipam-cni on the "node" that starts there, and the archive
//! carries the name the chart asks for. Built with the dev profile: the release
//! build of every binary costs too much for the suite (docs/testing.md).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use eni_ipam_chart_tests::{Helm, RenderedContainer, containers, parse_documents};
use eni_ipam_image_tests::{
    Container, Store, archive_ref_names, build_image_script, build_image_stdout, linkage, require_root,
};
use serde_json::Value;

const DAEMONS: [&str; 4] =
    ["eni-ipam-agent", "eni-ipam-device-plugin", "eni-ipam-operator", "eni-ipam-webhook"];

fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn report(output: &std::process::Output) -> String {
    format!("{}\n{}", stdout_of(output), String::from_utf8_lossy(&output.stderr))
}

/// Host folders standing in for an init container's volumes: an empty one per
/// hostPath (the node's folders), a ConfigMap's files for a configMap volume.
fn node_folders(objects: &[Value], pod: &Value, container: &Value, node: &Path) -> Vec<(PathBuf, String)> {
    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_array().expect("the install step mounts folders") {
        let name = mount["name"].as_str().expect("volume name");
        let volume = pod["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == name))
            .unwrap_or_else(|| panic!("volume {name} is mounted but not declared"));
        let host = node.join(name);
        std::fs::create_dir_all(&host).expect("a node folder");
        if let Some(config_map) = volume["configMap"]["name"].as_str() {
            let object = objects
                .iter()
                .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == config_map)
                .unwrap_or_else(|| panic!("ConfigMap {config_map} is not rendered"));
            for (file, text) in object["data"].as_object().expect("ConfigMap data") {
                std::fs::write(host.join(file), text.as_str().expect("text"))
                    .expect("write a ConfigMap file");
            }
        } else {
            assert!(
                volume.get("hostPath").is_some(),
                "install-cni mounts {volume}: neither hostPath nor configMap"
            );
        }
        mounts.push((host, mount["mountPath"].as_str().expect("mountPath").to_owned()));
    }
    mounts
}

/// Runs the chart's install-cni init container, as rendered, in the image.
fn install_cni_onto_node(image: &Container<'_>, objects: &[Value], step: &RenderedContainer, node: &Path) {
    let daemon_set = objects
        .iter()
        .find(|o| {
            format!("{}/{}", o["kind"].as_str().unwrap_or(""), o["metadata"]["name"].as_str().unwrap_or(""))
                == step.workload
        })
        .expect("the install step's DaemonSet");
    let pod = &daemon_set["spec"]["template"]["spec"];
    let container = pod["initContainers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == step.name.as_str()))
        .expect("the install-cni init container");
    let mounts = node_folders(objects, pod, container, node);
    let mounts: Vec<(&Path, &str)> = mounts.iter().map(|(h, c)| (h.as_path(), c.as_str())).collect();
    let argv: Vec<&str> = step.command.iter().chain(&step.args).map(String::as_str).collect();
    let output = image.run(&mounts, &argv);
    assert!(output.status.success(), "{} fails in the image: {}", step.label(), report(&output));
}

/// `eni-ipam-cni` as a container runtime on the node would call it for VERSION.
fn cni_version_on_the_host(plugin: &Path) -> Value {
    let mut child = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("the installed {} does not start on this host: {e}", plugin.display()));
    child.stdin.take().expect("stdin").write_all(br#"{"cniVersion":"1.0.0"}"#).expect("write stdin");
    let output = child.wait_with_output().expect("the plugin finishes");
    assert!(output.status.success(), "VERSION failed: {}", report(&output));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("VERSION printed no JSON ({e}): {}", report(&output)))
}

#[test]
fn image_runs_every_program_of_the_chart_and_installs_a_static_cni_plugin_as_root() {
    require_root();
    let work = tempfile::tempdir().expect("a temporary folder");
    let archive = work.path().join("eni-ipam.oci.tar");

    let started = Instant::now();
    let built = build_image_script(&["--profile", "dev", "--output", archive.to_str().expect("UTF-8 path")]);
    assert!(built.status.success(), "scripts/build-image failed:\n{}", report(&built));
    eprintln!(
        "scripts/build-image --profile dev: {:.1?}\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&built.stderr)
    );
    let tag = build_image_stdout(&["--print-tag"]).trim().to_owned();
    assert_eq!(
        archive_ref_names(&archive),
        vec![tag.clone()],
        "the archive must carry the chart's image name"
    );

    let store = Store::new();
    let mut image = store.container_from(&archive);
    let objects = parse_documents(&Helm::default().render(&[], &[]));
    let node = work.path().join("node");
    let mut daemons = BTreeSet::new();
    let mut installed = false;
    for step in containers(&objects) {
        let program = step.program().unwrap_or_else(|| panic!("{} relies on an entrypoint", step.label()));
        if program == "sh" {
            install_cni_onto_node(&image, &objects, &step, &node);
            installed = true;
            continue;
        }
        let output = image.run(&[], &[&step.command[0], "--help"]);
        assert!(output.status.success(), "{} --help fails in {tag}: {}", step.label(), report(&output));
        assert!(
            stdout_of(&output).contains("Usage:"),
            "{} --help printed no usage: {}",
            step.label(),
            report(&output)
        );
        daemons.insert(program.to_owned());
    }
    assert!(installed, "no install-cni step among the chart's containers");
    assert_eq!(daemons, DAEMONS.iter().map(|d| (*d).to_owned()).collect(), "the chart's daemons");

    // What the daemons need at run time, from Debian's packages.
    let ip = image.run(&[], &["ip", "-V"]);
    assert!(ip.status.success() && stdout_of(&ip).contains("iproute2"), "iproute2: {}", report(&ip));
    let nft = image.run(&[], &["nft", "--version"]);
    assert!(nft.status.success() && stdout_of(&nft).contains("nftables"), "nftables: {}", report(&nft));
    let root = image.root();
    let bundle =
        std::fs::metadata(root.join("etc/ssl/certs/ca-certificates.crt")).expect("CA bundle in the image");
    assert!(bundle.len() > 100_000, "the CA bundle is nearly empty: {} bytes", bundle.len());

    // The CNI plugin: static in the image, static where install-cni put it, and it starts on the host.
    for plugin in [root.join("usr/local/bin/eni-ipam-cni"), node.join("cni-bin/eni-ipam-cni")] {
        let linked = linkage(&std::fs::read(&plugin).expect("the CNI plugin")).expect("ELF");
        assert!(linked.is_static(), "{} is dynamically linked: {linked:?}", plugin.display());
    }
    let agent =
        linkage(&std::fs::read(root.join("usr/local/bin/eni-ipam-agent")).expect("agent")).expect("ELF");
    assert!(
        agent.needed.iter().any(|n| n.starts_with("libc.so")),
        "the agent links the image's glibc: {agent:?}"
    );
    let version = cni_version_on_the_host(&node.join("cni-bin/eni-ipam-cni"));
    assert!(version["supportedVersions"].as_array().is_some_and(|v| !v.is_empty()), "{version}");
    let conflists: Vec<_> = std::fs::read_dir(node.join("cni-conf")).expect("cni-conf").flatten().collect();
    assert_eq!(conflists.len(), 1, "install-cni writes one conflist: {conflists:?}");
}
