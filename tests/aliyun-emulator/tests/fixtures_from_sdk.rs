//! The project's Alibaba fixtures (`tests/fixtures/alibaba`) are exactly what
//! Alibaba's official Python SDK writes through `generate.py`: a change to the
//! generator, the SDK pins or the committed files that is not carried to the
//! others fails here.

mod common;

use std::path::Path;
use std::process::Command;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/alibaba");

#[test]
fn the_committed_fixtures_are_what_the_official_sdk_writes() {
    let out = tempfile::tempdir().expect("temp dir");
    let output = Command::new(common::tools_python())
        .arg(Path::new(FIXTURES).join("generate.py"))
        .arg(out.path())
        .output()
        .expect("running generate.py");
    assert!(
        output.status.success(),
        "generate.py failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for name in ["signatures.json", "responses.json", "errors.json"] {
        let written = std::fs::read(out.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let committed =
            std::fs::read(Path::new(FIXTURES).join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            written == committed,
            "tests/fixtures/alibaba/{name} differs from what the SDK writes now: run scripts/alibaba-fixtures and commit"
        );
    }
}
