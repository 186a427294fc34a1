//! Both binaries as a person or a runtime meets them when something is wrong:
//! a clear message and a failing exit status, never a panic.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{AGENT, PLUGIN};
use serde_json::Value;

fn agent(dir: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(AGENT)
        .args(["--node-name", "node-test", "--metrics-addr", "127.0.0.1:0"])
        .arg("--socket")
        .arg(dir.join("agent.sock"))
        .arg("--state-file")
        .arg(dir.join("state.json"))
        .args(if extra.contains(&"--datapath") {
            &[][..]
        } else {
            &["--datapath", "none", "--node-routing=false"][..]
        })
        .args(extra)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.success(), stderr)
}

#[test]
fn corrupt_state_file_is_kept_aside_and_the_agent_refuses_to_start_empty() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pool.json"), r#"{"ips": {}}"#).unwrap();
    std::fs::write(dir.path().join("state.json"), "{\"version\": 1, \"allocations\": [tru").unwrap();
    let pool = dir.path().join("pool.json").display().to_string();
    let (ok, stderr) = agent(dir.path(), &["--pool-file", &pool]);
    assert!(!ok);
    assert!(stderr.contains("state.json is corrupt") && stderr.contains("moved to"), "{stderr}");
    let kept: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept_bytes = std::fs::read_to_string(dir.path().join(&kept[0])).unwrap();
    assert_eq!(kept_bytes, "{\"version\": 1, \"allocations\": [tru", "kept byte for byte");
    let (ok, stderr) = agent(dir.path(), &["--pool-file", &pool]);
    assert!(!ok, "a second start does not silently begin empty");
    assert!(stderr.contains("found corrupt earlier") && stderr.contains(&kept[0]), "{stderr}");
}

#[test]
fn bad_flags_and_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json").display().to_string();
    let (ok, stderr) = agent(dir.path(), &["--pool-file", &missing]);
    assert!(!ok && stderr.contains("cannot read pool file") && stderr.contains("nope.json"), "{stderr}");
    std::fs::write(dir.path().join("bad.json"), "[]").unwrap();
    let bad = dir.path().join("bad.json").display().to_string();
    let (ok, stderr) = agent(dir.path(), &["--pool-file", &bad]);
    assert!(!ok && stderr.contains("is not a valid pool"), "{stderr}");
    let (ok, stderr) = agent(dir.path(), &["--subnet", "subnet-1", "--pool-file", &bad]);
    assert!(!ok && stderr.contains("SUBNET_ID=CIDR"), "{stderr}");
    let (ok, stderr) = agent(dir.path(), &["--ipam-node-update-rate", "soon"]);
    assert!(!ok && stderr.contains("not a duration"), "{stderr}");
    let (ok, stderr) = agent(dir.path(), &["--eninode-resync", "0ms"]);
    assert!(!ok && stderr.contains("--eninode-resync") && stderr.contains("is zero"), "{stderr}");
    let (ok, stderr) = agent(dir.path(), &["--host-route", "10.96.0.0"]);
    assert!(!ok && stderr.contains("is not an IPv4 CIDR like 10.96.0.0/12"), "{stderr}");
    let (ok, stderr) = agent(dir.path(), &["--datapath", "xdp"]);
    assert!(!ok && stderr.contains("[possible values: ebpf, none]"), "{stderr}");
    // The eBPF datapath without a cluster to list ServiceCIDRs from needs the service range.
    std::fs::write(dir.path().join("pool.json"), r#"{"ips": {}}"#).unwrap();
    let pool = dir.path().join("pool.json").display().to_string();
    let (ok, stderr) = agent(dir.path(), &["--datapath", "ebpf", "--pool-file", &pool]);
    assert!(
        !ok && stderr.contains("--service-cidr") && stderr.contains("agent.datapath.serviceCIDRs"),
        "{stderr}"
    );
    let (ok, stderr) = agent(dir.path(), &["--service-cidr", "10.100.0.0"]);
    assert!(!ok && stderr.contains("is not an IPv4 CIDR"), "{stderr}");
    // The metadata block lives in the agent's nft table: without node routing it cannot hold.
    let (ok, stderr) =
        agent(dir.path(), &["--block-pod-destination", "169.254.169.254/32", "--pool-file", &pool]);
    assert!(!ok && stderr.contains("--block-pod-destination needs --node-routing"), "{stderr}");
}

fn plugin(env: &[(&str, &str)], stdin: &[u8]) -> (i32, Value) {
    let mut child = Command::new(PLUGIN)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", out.stdout));
    (out.status.code().unwrap(), json)
}

#[test]
fn plugin_errors_are_spec_json_with_codes() {
    let add = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/proc/self/ns/net"),
        ("CNI_IFNAME", "eth0"),
    ];
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [u8], u64);
    let cases: &[Case] = &[
        (&[], b"{}", 4),
        (&[("CNI_COMMAND", "ADD")], br#"{"cniVersion":"1.0.0","type":"eni-ipam-cni"}"#, 4),
        (&add, b"not json", 6),
        (&add, b"\xff\xfe", 6),
        (&add, br#"{"cniVersion":"0.1.0","type":"eni-ipam-cni"}"#, 1),
        (&add, br#"{"cniVersion":"1.0.0"}"#, 7),
    ];
    for (env, stdin, code) in cases {
        let (exit, json) = plugin(env, stdin);
        assert_eq!(exit, 1, "{env:?} {stdin:?}");
        assert_eq!(json["code"], *code, "{env:?}: {json}");
        assert!(
            !json["msg"].as_str().unwrap().is_empty() && !json["details"].as_str().unwrap().is_empty(),
            "{json}"
        );
    }
    let (exit, json) = plugin(&[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.1.0"}"#);
    assert_eq!(exit, 0);
    assert_eq!(json["cniVersion"], "1.1.0");
}
