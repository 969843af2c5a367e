//! Typed handles on the objects of a test's own namespace, the ones most tests read and
//! write.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use keyward::crd::{EncryptionKey, OAuthClient};
use kube::api::Api;

use super::TestCluster;

/// The EncryptionKeys of the test's namespace.
pub fn keys(cluster: &TestCluster) -> Api<EncryptionKey> {
    Api::namespaced(cluster.client.clone(), &cluster.namespace)
}

/// The OAuthClients of the test's namespace.
pub fn clients(cluster: &TestCluster) -> Api<OAuthClient> {
    Api::namespaced(cluster.client.clone(), &cluster.namespace)
}

/// The Secrets of the test's namespace.
pub fn secrets(cluster: &TestCluster) -> Api<Secret> {
    Api::namespaced(cluster.client.clone(), &cluster.namespace)
}

/// The Deployments of the test's namespace.
pub fn deployments(cluster: &TestCluster) -> Api<Deployment> {
    Api::namespaced(cluster.client.clone(), &cluster.namespace)
}

/// The Pods of the test's namespace.
pub fn pods(cluster: &TestCluster) -> Api<Pod> {
    Api::namespaced(cluster.client.clone(), &cluster.namespace)
}

/// The Jobs of the test's namespace.
pub fn jobs(cluster: &TestCluster) -> Api<Job> {
    Api::namespaced(cluster.client.clone(), &cluster.namespace)
}

/// The RoleBindings of the test's namespace.
pub fn role_bindings(cluster: &TestCluster) -> Api<RoleBinding> {
    Api::namespaced(cluster.client.clone(), &cluster.namespace)
}
