//! Test support for the Helm chart `charts/eni-ipam`: running the external
//! tools (helm, kubernetes-validate), reading what helm renders, and turning
//! a rendered container back into the command line its binary would see.
//!
//! The tools come from `scripts/install-test-tools`; `scripts/test` puts them
//! on `PATH`. A missing tool fails the test that needs it, with the fix in the
//! message: these tests never skip.

pub mod command_line;
pub mod manifests;
pub mod tools;

pub use command_line::{
    ContainerCommandLine, RenderedEnv, command_line, flag_value, known_flags, rendered_env,
};
pub use manifests::{RenderedContainer, admission_policies, containers, parse_documents};
pub use tools::{Helm, chart_dir, validate_kubernetes};
