//! Prints the `ENINode` CustomResourceDefinition as YAML, for the Helm chart:
//! `cargo run -p eni-ipam-api --bin crdgen > charts/eni-ipam/crds/eninodes.eni-ipam.io.yaml`.

use std::process::ExitCode;

const HELP: &str = "\
crdgen: print the ENINode CustomResourceDefinition (eninodes.eni-ipam.io) as YAML on stdout.

The CRD is generated from the Rust types in eni-ipam-api; the copy committed in the Helm chart
must match it (a test checks). Regenerate it with:

    cargo run -p eni-ipam-api --bin crdgen > charts/eni-ipam/crds/eninodes.eni-ipam.io.yaml

Usage: crdgen [--help]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            print!("{}", eni_ipam_api::crd_yaml());
            ExitCode::SUCCESS
        }
        [flag] if flag == "--help" || flag == "-h" => {
            println!("{HELP}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("crdgen: unexpected arguments {args:?}; it takes none\n\n{HELP}");
            ExitCode::from(2)
        }
    }
}
