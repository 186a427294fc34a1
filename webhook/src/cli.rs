//! Command-line flags (each also settable from an `ENI_IPAM_WEBHOOK_*`
//! environment variable) and the one-line form of flag errors.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::node_selection::SkippedNodeLabels;
use crate::policy::{ExcludedNamespaces, MutationPolicy, ResourceName};
use crate::tls_reload::CertificateFiles;

/// Exit status for bad flags.
pub const USAGE_EXIT_CODE: u8 = 2;

/// The eni-ipam mutating admission webhook.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "eni-ipam-webhook",
    version,
    about = "eni-ipam mutating admission webhook: every pod that needs a pod IP requests one eni-ipam.io/ip",
    long_about = "eni-ipam mutating admission webhook, served over TLS at POST /mutate. It answers \
AdmissionReview v1 for Pod CREATE with a JSONPatch that gives the first container requests and limits of \
one eni-ipam.io/ip, so kube-scheduler counts one IP per pod. hostNetwork pods, Windows pods, excluded \
namespaces, pods that already request the resource, other operations, subresources and other kinds are \
allowed unchanged. It never denies a pod: register it with failurePolicy as the chart decides.\n\n\
The certificate and key are re-read every second and served to new connections when they change."
)]
pub struct WebhookArgs {
    #[command(flatten)]
    pub log: eni_ipam_admin::process::LogArgs,
    /// Address of the TLS listener for admission reviews.
    #[arg(long, env = "ENI_IPAM_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// PEM certificate chain served to kube-apiserver (reloaded when it changes).
    #[arg(long, env = "ENI_IPAM_WEBHOOK_TLS_CERT_FILE", value_name = "PATH")]
    pub tls_cert_file: PathBuf,

    /// PEM private key of the certificate (reloaded when it changes).
    #[arg(long, env = "ENI_IPAM_WEBHOOK_TLS_KEY_FILE", value_name = "PATH")]
    pub tls_key_file: PathBuf,

    /// Extended resource added to pods, as advertised by the device plugin.
    #[arg(
        long,
        env = "ENI_IPAM_WEBHOOK_RESOURCE_NAME",
        default_value = "eni-ipam.io/ip",
        value_name = "NAME"
    )]
    pub resource_name: ResourceName,

    /// Comma-separated namespaces whose pods are never patched (exact names; "" for none).
    #[arg(
        long,
        env = "ENI_IPAM_WEBHOOK_EXCLUDE_NAMESPACES",
        default_value = "kube-system",
        value_name = "LIST"
    )]
    pub exclude_namespaces: ExcludedNamespaces,

    /// Comma-separated node label keys (e.g. karpenter.sh/nodepool): a pod that can only run
    /// on nodes carrying one (its nodeSelector, or every required node affinity term, names
    /// it) is not patched ("" for none).
    #[arg(long, env = "ENI_IPAM_WEBHOOK_SKIP_NODE_LABELS", default_value = "", value_name = "LIST")]
    pub skip_node_labels: SkippedNodeLabels,

    /// Address of the plain-HTTP admin server: /metrics, /healthz, /readyz.
    #[arg(long, env = "ENI_IPAM_WEBHOOK_METRICS_ADDR", default_value = "0.0.0.0:8080", value_name = "ADDR")]
    pub metrics_addr: SocketAddr,
}

impl WebhookArgs {
    /// The decision inputs the flags describe.
    pub fn policy(&self) -> MutationPolicy {
        MutationPolicy::new(self.resource_name.clone(), self.exclude_namespaces.clone())
            .with_skipped_node_labels(self.skip_node_labels.clone())
    }

    /// The certificate files.
    pub fn certificate_files(&self) -> CertificateFiles {
        CertificateFiles { cert: self.tls_cert_file.clone(), key: self.tls_key_file.clone() }
    }
}

/// A clap error as one line: clap renders usage and hints on further lines,
/// which log collectors split into unrelated entries.
pub fn one_line_flag_error(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    // The first paragraph holds the message; a missing-argument error lists
    // the flags on the lines after its first.
    let message = rendered
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    format!("eni-ipam-webhook: {message} (see --help)")
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<WebhookArgs, clap::Error> {
        let base = ["eni-ipam-webhook", "--tls-cert-file", "c.pem", "--tls-key-file", "k.pem"];
        WebhookArgs::try_parse_from(base.iter().chain(args))
    }

    #[test]
    fn defaults_match_the_fixture_contract() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.listen, "0.0.0.0:8443".parse().unwrap());
        let policy = args.policy();
        assert_eq!(policy.resource_name(), "eni-ipam.io/ip");
        assert_eq!(policy.resource_pointer_token(), "eni-ipam.io~1ip");
        assert!(policy.is_excluded("kube-system"));
        assert!(!policy.is_excluded("default"));
    }

    #[test]
    fn bad_values_are_flag_errors_in_one_line() {
        for (args, expected) in [
            (&["--resource-name", "ip"][..], "invalid value 'ip' for '--resource-name <NAME>'"),
            (&["--exclude-namespaces", "Kube_System"], "not a valid namespace name"),
            (&["--skip-node-labels", "a b"], "is not a label key"),
            (&["--listen", "8443"], "invalid value '8443' for '--listen <ADDR>'"),
        ] {
            let error = parse(args).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::ValueValidation);
            let line = one_line_flag_error(&error);
            assert!(!line.contains('\n') && line.contains(expected), "{line}");
        }
    }

    #[test]
    fn missing_certificate_flags_name_the_flags_on_one_line() {
        let error = WebhookArgs::try_parse_from(["eni-ipam-webhook"]).unwrap_err();
        let line = one_line_flag_error(&error);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--tls-cert-file") && line.contains("--tls-key-file"), "{line}");
    }
}
