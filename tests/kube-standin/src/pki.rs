//! A throwaway CA and a webhook's serving certificate (for 127.0.0.1 or given hosts), as
//! cert-manager would issue them in a cluster: the CA goes to
//! [`crate::PodWebhook::new`], the certificate and key to the webhook.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// PEMs of the CA (the stand-in's `caBundle`) and the webhook's certificate and key.
pub struct Pki {
    /// The CA certificate.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving key.
    pub key_pem: String,
}

impl Pki {
    /// A new CA and a certificate it signed for `127.0.0.1`.
    pub fn new() -> Self {
        Self::for_hosts(&["127.0.0.1"])
    }

    /// A new CA and a certificate it signed for `hosts` (IP addresses or DNS names), e.g.
    /// the node address a webhook on the host network answers at.
    pub fn for_hosts(hosts: &[&str]) -> Self {
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name.push(DnType::CommonName, "eni-ipam e2e CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_cert = ca.self_signed(&ca_key).expect("self-sign the CA");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("a serving key");
        let names = hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>();
        let mut serving = CertificateParams::new(names).expect("serving parameters");
        serving.distinguished_name.push(DnType::CommonName, "eni-ipam-webhook.kube-system.svc");
        let cert = serving.signed_by(&key, &issuer).expect("sign the serving certificate");
        Self { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
