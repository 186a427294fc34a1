//! `helm uninstall` cleans the nodes: the pre-delete and post-delete hook Jobs exist, run
//! command lines the operator's own parser accepts, aimed at the agent pods the DaemonSet
//! makes, with RBAC of their own that is exactly what they use; the agent's termination path
//! knows where install-cni put the CNI files. With `uninstall.enabled=false` nothing of it
//! renders.

use std::collections::BTreeMap;

use clap::{CommandFactory, Parser};
use eni_ipam_chart_tests::{Helm, command_line, containers, parse_documents};
use eni_ipam_operator::cli::{Cli, Command, UninstallStep};
use serde_json::Value;

fn hook_of(object: &Value) -> Option<&str> {
    object["metadata"]["annotations"]["helm.sh/hook"].as_str()
}

fn weight_of(object: &Value) -> i64 {
    object["metadata"]["annotations"]["helm.sh/hook-weight"].as_str().unwrap_or("0").parse().unwrap()
}

fn labels(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .map(|pair| pair.split_once('=').expect("a key=value selector"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn a_pre_delete_and_a_post_delete_job_run_the_operators_uninstall_steps() {
    let objects = parse_documents(&Helm::default().render(&[], &[]));
    let daemonset = objects.iter().find(|o| o["kind"] == "DaemonSet").expect("the agent DaemonSet");
    let agent_labels: BTreeMap<String, String> =
        serde_json::from_value(daemonset["spec"]["template"]["metadata"]["labels"].clone()).unwrap();
    let jobs: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Job").collect();
    let mut steps = Vec::new();
    for job in &jobs {
        let hook = hook_of(job).expect("every Job of the chart is an uninstall hook");
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["hostNetwork"], true, "{hook}: no pod network is left by post-delete");
        assert_eq!(
            pod["tolerations"],
            serde_json::json!([{"operator": "Exists"}]),
            "{hook}: NotReady nodes too"
        );
        assert_eq!(pod["restartPolicy"], "Never");
        assert!(pod["serviceAccountName"].as_str().unwrap().ends_with("-uninstall"));
        assert_eq!(
            job["metadata"]["annotations"]["helm.sh/hook-delete-policy"],
            "before-hook-creation,hook-succeeded"
        );
        let rendered = containers(std::slice::from_ref(*job));
        assert_eq!(rendered.len(), 1);
        let line = command_line(&rendered[0], &Cli::command());
        assert!(line.problems.is_empty(), "{:?}", line.problems);
        let cli = Cli::try_parse_from(&line.argv).unwrap_or_else(|e| panic!("{hook}: {e}\n{:?}", line.argv));
        let Command::Uninstall(step) = cli.command else { panic!("{hook} runs {:?}", line.argv) };
        let (name, args) = match &step {
            UninstallStep::Prepare(args) => ("prepare", args),
            UninstallStep::Finish(args) => ("finish", args),
        };
        assert_eq!(args.agent_namespace, "eni-ipam", "{name}: the release namespace");
        let selector = labels(&args.agent_selector);
        assert!(
            selector.iter().all(|(k, v)| agent_labels.get(k) == Some(v))
                && selector.contains_key("app.kubernetes.io/component"),
            "{name}: --agent-selector {selector:?} must select the agent pods {agent_labels:?}"
        );
        assert_eq!(args.timeout, std::time::Duration::from_secs(120), "uninstall.timeout");
        steps.push((hook.to_owned(), name));
    }
    steps.sort();
    assert_eq!(steps, [("post-delete".to_owned(), "finish"), ("pre-delete".to_owned(), "prepare")]);

    // The Jobs' identity exists in both phases before they start, and only for them.
    let identity: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] != "Job" && hook_of(o).is_some_and(|h| h.contains("delete")))
        .collect();
    let kinds: Vec<&str> = identity.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert!(kinds.contains(&kind), "no hook {kind}: {kinds:?}");
    }
    for object in &identity {
        assert_eq!(hook_of(object), Some("pre-delete,post-delete"), "{}", object["kind"]);
        assert!(
            weight_of(object) < jobs.iter().map(|j| weight_of(j)).min().unwrap(),
            "created before the Jobs"
        );
    }
}

#[test]
fn the_agent_removes_the_cni_files_install_cni_wrote() {
    let objects = parse_documents(
        &Helm::default().render(&["examples/aws-values.yaml"], &["cni.confFileName=01-x.conflist"]),
    );
    let daemonset = objects.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
    let pod = &daemonset["spec"]["template"]["spec"];
    let host_path = |volume: &str| -> String {
        pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == volume).unwrap()["hostPath"]["path"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mount_of = |container: &Value, path: &std::path::Path| -> String {
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == path.display().to_string())
            .unwrap_or_else(|| panic!("{} mounts nothing at {}", container["name"], path.display()))["name"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let agent_container =
        pod["containers"].as_array().unwrap().iter().find(|c| c["name"] == "agent").unwrap();
    let rendered = containers(std::slice::from_ref(daemonset));
    let agent = rendered.iter().find(|c| c.name == "agent").unwrap();
    let line = command_line(agent, &eni_ipam_agent::cli::Cli::command());
    let cli = eni_ipam_agent::cli::Cli::try_parse_from(&line.argv).expect("agent args parse");
    assert_eq!(host_path(&mount_of(agent_container, &cli.paths.cni_conf_dir)), "/etc/cni/net.d");
    assert_eq!(host_path(&mount_of(agent_container, &cli.paths.cni_bin_dir)), "/opt/cni/bin");
    assert_eq!(cli.paths.cni_conf_file, "01-x.conflist");
    let install = rendered.iter().find(|c| c.name == "install-cni").unwrap();
    assert!(
        install.args[0].contains("/host/cni-conf/01-x.conflist"),
        "install-cni writes that file: {}",
        install.args[0]
    );
}

#[test]
fn nothing_of_the_uninstall_renders_when_it_is_off() {
    let objects = parse_documents(&Helm::default().render(&[], &["uninstall.enabled=false"]));
    let hooks: Vec<String> = objects
        .iter()
        .filter(|o| hook_of(o).is_some_and(|h| h.contains("delete")))
        .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
        .collect();
    assert!(hooks.is_empty(), "{hooks:?}");
}
