//! Pod objects behind simulated attachments: the controller's leak GC judges an allocation
//! by whether its pod (namespace, name, UID) still exists, so tests of it need real Pods.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};

/// A scheduler no cluster runs: the pods stay unscheduled, so on a real cluster no kubelet
/// ever starts them (or calls a real CNI plugin for them), and their deletion is immediate.
pub const NO_SCHEDULER: &str = "ipledger-test-no-scheduler";

/// Creates a minimal pod in `namespace` and returns the UID the API server gave it.
pub async fn create_pod(client: &Client, namespace: &str, name: &str) -> String {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "schedulerName": NO_SCHEDULER,
            "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}],
        },
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("creating pod {namespace}/{name}: {e}"))
        .uid()
        .expect("the server gives a created pod a UID")
}

/// Deletes a pod; when this returns it is gone (an unscheduled pod has no kubelet to wait
/// for, and the grace period is 0 besides).
pub async fn delete_pod(client: &Client, namespace: &str, name: &str) {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .delete(name, &DeleteParams::default().grace_period(0))
        .await
        .unwrap_or_else(|e| panic!("deleting pod {namespace}/{name}: {e}"));
}

/// CNI_ARGS as kubelet's runtime passes them for a pod, UID included (containerd and
/// CRI-O pass `K8S_POD_UID`).
pub fn pod_args_for(namespace: &str, name: &str, uid: &str, infra_container_id: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};\
         K8S_POD_UID={uid};K8S_POD_INFRA_CONTAINER_ID={infra_container_id}"
    )
}
