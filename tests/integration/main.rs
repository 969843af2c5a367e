//! Integration tests against a real control plane (see `support`).

mod bad_manifests;
mod operator_process;
mod support;
