//! The Containerfile for people with a registry is the one scripts/build-image
//! generates from its lists, and the chart's default image is the one the script tags.

use eni_ipam_chart_tests::chart_dir;
use eni_ipam_image_tests::{build_image_stdout, repo_root};

#[test]
fn committed_containerfile_is_the_one_the_script_generates() {
    let generated = build_image_stdout(&["--containerfile"]);
    let committed =
        std::fs::read_to_string(repo_root().join("Containerfile")).expect("Containerfile at the repo root");
    assert!(
        committed == generated,
        "Containerfile differs from what scripts/build-image generates: run \
         `scripts/build-image --containerfile > Containerfile`\n--- generated ---\n{generated}"
    );
    for binary in
        ["eni-ipam-operator", "eni-ipam-agent", "eni-ipam-cni", "eni-ipam-device-plugin", "eni-ipam-webhook"]
    {
        assert!(
            generated.contains(&format!("/{binary} ")),
            "{binary} is not copied into the image:\n{generated}"
        );
    }
    assert!(
        generated.contains("-p eni-ipam-agent --bin eni-ipam-cni -- -C target-feature=+crt-static"),
        "{generated}"
    );
}

#[test]
fn default_image_of_the_chart_is_the_one_the_script_tags() {
    let tag = build_image_stdout(&["--print-tag"]);
    let read = |file: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(chart_dir().join(file)).expect(file);
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
    };
    let (values, chart) = (read("values.yaml"), read("Chart.yaml"));
    let repository = values["image"]["repository"].as_str().expect("image.repository");
    let tag_value = values["image"]["tag"].as_str().expect("image.tag");
    let version =
        if tag_value.is_empty() { chart["appVersion"].as_str().expect("appVersion") } else { tag_value };
    assert_eq!(
        format!("{repository}:{version}"),
        tag.trim(),
        "values.yaml's image is not the one scripts/build-image tags"
    );
    assert!(!repository.contains('/'), "the default image names no registry: {repository}");
}
