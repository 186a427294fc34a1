//! Integration tests of the webhook: the fixture corpus through the router
//! and through real TLS, certificate rotation, fuzzed bodies, and the flags
//! of the binary. One test binary, so the heavy dependencies link once.

mod cert_rotation;
mod fixtures;
mod flags;
mod fuzz_bodies;
mod node_labels;
mod support;
