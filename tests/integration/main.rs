//! Integration tests against a real control plane (see `support`).

mod bad_manifests;
mod chart;
mod chart_rbac;
mod database;
mod distribution;
mod encryption_key;
mod gitops;
mod high_availability;
mod job_runner;
mod key_safety;
mod kstatus;
mod metrics;
mod oauth_client;
mod operator_process;
mod owned_objects;
mod reencrypt;
mod rotation;
mod status_races;
mod support;
mod watch_gaps;
mod wso2_fleet;
mod wso2_hash;
mod wso2_interop;
mod wso2_java;
mod wso2_rollout;
mod wso2_rotation;
