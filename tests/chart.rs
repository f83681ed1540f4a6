//! The Helm chart `charts/ipledger`: it lints, renders what a node and a control plane
//! need with the default values and with every option set, refuses a misspelt value,
//! carries the generated CRDs, and its objects are accepted by the API server.

mod support;

use serde_json::Value;
use support::chart::{self, all_options, env, find, objects};

/// The host paths a pod spec mounts, in order.
fn host_paths(pod: &Value) -> Vec<&str> {
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect()
}

#[test]
fn the_chart_lints_clean_with_default_values_and_with_every_option() {
    let Some(helm) = chart::helm() else { return };
    let dir = chart::chart_dir().display().to_string();
    let all = all_options().display().to_string();
    for args in [
        vec!["lint", "--strict", dir.as_str()],
        vec!["lint", "--strict", dir.as_str(), "-f", all.as_str()],
    ] {
        let (ok, stdout, stderr) = chart::run(&helm, &args);
        assert!(ok, "helm {args:?}: {stdout}{stderr}");
        assert!(stdout.contains("0 chart(s) failed"), "{stdout}");
    }
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let in_chart = std::fs::read_to_string(chart::chart_dir().join("crds/crds.yaml")).unwrap();
    assert_eq!(
        in_chart,
        ipledger::api::crds_yaml().unwrap(),
        "charts/ipledger/crds/crds.yaml is stale: run `cargo run -- crds > charts/ipledger/crds/crds.yaml`"
    );
}

#[test]
fn the_default_agent_runs_on_every_node_with_the_least_it_needs() {
    let Some(helm) = chart::helm() else { return };
    let objects = objects(&chart::template(&helm, "ipledger", &[]).unwrap());
    let ds = find(&objects, "DaemonSet", "-agent");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}]),
        "the agent must tolerate every taint"
    );
    assert_eq!(pod["serviceAccountName"], "ipledger-agent");
    let agent = &pod["containers"][0];
    assert_eq!(agent["args"], serde_json::json!(["agent"]));
    assert_eq!(
        env(agent, "NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        env(agent, "IPLEDGER_SOCKET")["value"],
        "/run/ipledger/agent.sock"
    );
    assert_eq!(
        env(agent, "IPLEDGER_INSTALL_CNI_BIN_DIR")["value"],
        "/host/cni/bin"
    );
    let sc = &agent["securityContext"];
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(
        sc["capabilities"].get("add").is_none(),
        "no capability added: {sc}"
    );
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_ne!(sc["privileged"], true);
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(agent[probe]["httpGet"]["path"], "/healthz", "{probe}");
    }
    assert!(agent["resources"]["requests"]["memory"].is_string());
    assert!(agent["resources"]["limits"]["memory"].is_string());
    let host_paths = host_paths(pod);
    // The conf dir is mounted only when the agent writes a network config there.
    assert_eq!(host_paths, ["/run/ipledger", "/opt/cni/bin"]);
    // Node-bound writes, on by default, for the agent's ServiceAccount alone.
    let policy = find(&objects, "ValidatingAdmissionPolicy", "-agent-node-bound");
    assert_eq!(
        policy["spec"]["matchConditions"][0]["expression"],
        "request.userInfo.username == \"system:serviceaccount:ipledger:ipledger-agent\""
    );
    let binding = find(
        &objects,
        "ValidatingAdmissionPolicyBinding",
        "-agent-node-bound",
    );
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(
        binding["spec"]["validationActions"],
        serde_json::json!(["Deny"])
    );
}

#[test]
fn the_default_controller_is_two_non_root_replicas_behind_a_budget() {
    let Some(helm) = chart::helm() else { return };
    let objects = objects(&chart::template(&helm, "ipledger", &[]).unwrap());
    let deploy = find(&objects, "Deployment", "-controller");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["serviceAccountName"], "ipledger-controller");
    assert!(
        pod["affinity"]["podAntiAffinity"].is_object(),
        "replicas spread over nodes: {pod:#}"
    );
    assert_ne!(pod["hostNetwork"], true);
    let controller = &pod["containers"][0];
    assert_eq!(controller["args"], serde_json::json!(["controller"]));
    assert_eq!(
        controller["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert_eq!(controller["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(controller["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(
        env(controller, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env(controller, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    let pdb = find(&objects, "PodDisruptionBudget", "-controller");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deploy["spec"]["selector"]["matchLabels"]
    );
    // Nothing optional by default.
    for kind in ["ServiceMonitor", "IPPool", "Service"] {
        assert!(
            !objects.iter().any(|o| o["kind"] == kind),
            "a {kind} rendered by default"
        );
    }
}

#[test]
fn every_option_reaches_the_rendered_objects() {
    let Some(helm) = chart::helm() else { return };
    let all = all_options().display().to_string();
    let objects = objects(&chart::template(&helm, "net", &["-f", &all]).unwrap());
    let ds = find(&objects, "DaemonSet", "-agent");
    let pod = &ds["spec"]["template"]["spec"];
    let agent = &pod["containers"][0];
    assert_eq!(
        agent["image"],
        "registry.example.com/net/ipledger:0.1.0-rc1"
    );
    assert_eq!(agent["imagePullPolicy"], "Always");
    assert_eq!(pod["imagePullSecrets"][0]["name"], "registry-credentials");
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(pod["nodeSelector"]["node-role.example.com/pods"], "true");
    assert_eq!(
        agent["args"],
        serde_json::json!([
            "agent",
            "--write-conflist=/host/cni/net.d/05-pods.conflist",
            "--conflist-network=pods",
            "--conflist-bridge=br-pods"
        ])
    );
    assert_eq!(
        env(agent, "IPLEDGER_SOCKET")["value"],
        "/var/run/ipledger-agent/agent.sock"
    );
    assert_eq!(env(agent, "IPLEDGER_METRICS_ADDR")["value"], "[::]:19464");
    assert_eq!(env(agent, "IPLEDGER_REQUEST_TIMEOUT")["value"], "20s");
    assert_eq!(env(agent, "IPLEDGER_CNI_GC_GRACE")["value"], "2m");
    assert_eq!(env(agent, "IPLEDGER_LOG")["value"], "ipledger=debug,info");
    assert_eq!(agent["ports"][0]["containerPort"], 19464);
    let host_paths = host_paths(pod);
    assert_eq!(
        host_paths,
        [
            "/var/run/ipledger-agent",
            "/usr/libexec/cni",
            "/etc/cni/conf.d"
        ]
    );
    assert_eq!(
        ds["spec"]["template"]["metadata"]["labels"]["example.com/tier"],
        "node"
    );
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        "10%"
    );

    let deploy = find(&objects, "Deployment", "-controller");
    assert_eq!(deploy["spec"]["replicas"], 3);
    let controller = &deploy["spec"]["template"]["spec"]["containers"][0];
    for (name, value) in [
        ("IPLEDGER_METRICS_ADDR", "0.0.0.0:19465"),
        ("IPLEDGER_HEALTH_ADDR", "0.0.0.0:19466"),
        ("IPLEDGER_LEASE_NAME", "ipledger-leader"),
        ("IPLEDGER_LEASE_DURATION", "20s"),
        ("IPLEDGER_RENEW_DEADLINE", "15s"),
        ("IPLEDGER_RETRY_PERIOD", "3s"),
        ("IPLEDGER_GC_INTERVAL", "10m"),
        ("IPLEDGER_GC_GRACE", "2m"),
        ("IPLEDGER_EMPTY_BLOCK_TTL", "30m"),
    ] {
        assert_eq!(env(controller, name)["value"], value, "{name}");
    }
    assert_eq!(controller["resources"]["limits"]["memory"], "512Mi");
    let election = find(&objects, "Role", "-leader-election");
    assert_eq!(election["metadata"]["namespace"], "net");
    assert_eq!(
        election["rules"][1]["resourceNames"],
        serde_json::json!(["ipledger-leader"])
    );
    assert_eq!(
        find(&objects, "PodDisruptionBudget", "-controller")["spec"]["minAvailable"],
        2
    );

    for component in ["agent", "controller"] {
        let monitor = find(&objects, "ServiceMonitor", &format!("-{component}"));
        assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
        assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "15s");
        let service = find(&objects, "Service", &format!("-{component}-metrics"));
        assert_eq!(
            service["spec"]["selector"], monitor["spec"]["selector"]["matchLabels"],
            "the {component} ServiceMonitor selects its Service"
        );
    }
    assert!(
        !objects
            .iter()
            .any(|o| o["kind"] == "ValidatingAdmissionPolicy"),
        "agent.nodeBoundWrites=false renders no policy"
    );
    let pools: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "IPPool").collect();
    assert_eq!(pools.len(), 2);
    assert_eq!(pools[0]["metadata"]["name"], "install-v4");
    assert_eq!(pools[0]["spec"]["cidr"], "10.248.0.0/16");
    assert_eq!(pools[0]["spec"]["exclude"][0], "10.248.255.0/24");
    assert_eq!(
        pools[1]["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "helm uninstall must not delete a pool that still has allocations"
    );
}

#[test]
fn a_misspelt_or_malformed_value_is_an_error_naming_it() {
    let Some(helm) = chart::helm() else { return };
    for (set, named) in [
        ("agent.metricsAdr=0.0.0.0:1", "metricsAdr"),
        ("controller.gcGrace=soon", "/controller/gcGrace"),
        ("cni.binDir=opt/cni/bin", "/cni/binDir"),
        (
            "cni.conflist.fileName=10-ipledger.json",
            "/cni/conflist/fileName",
        ),
    ] {
        let err = chart::template(&helm, "ipledger", &["--set", set])
            .expect_err(&format!("--set {set} was accepted"));
        assert!(err.contains(named), "--set {set}: {err}");
    }
    let err = chart::template(&helm, "ipledger", &["--set", "pools[0].name=p"])
        .expect_err("a pool without a spec was accepted");
    assert!(err.contains("spec"), "{err}");
}

/// The rendered objects, default and with every option, applied with real kubectl; the
/// ServiceMonitors are left out (their CRD belongs to prometheus-operator).
#[tokio::test]
async fn the_rendered_objects_are_accepted_by_the_api_server() {
    let Some(helm) = chart::helm() else { return };
    let Some(kubectl) = test_support::kubectl::Kubectl::start().await else {
        return;
    };
    let crds = chart::chart_dir().join("crds");
    kubectl
        .install_crds(&crds, &["ippools.ipledger.io", "ipblocks.ipledger.io"])
        .await;
    let namespace = test_support::unique("chart");
    kubectl.ok(&["create", "namespace", &namespace]).await;
    let all = all_options().display().to_string();
    for (name, extra) in [
        ("default", vec![]),
        ("all-options", vec!["-f", all.as_str()]),
    ] {
        let rendered: Vec<Value> = objects(&chart::template(&helm, &namespace, &extra).unwrap())
            .into_iter()
            .filter(|o| o["kind"] != "ServiceMonitor")
            .collect();
        let yaml: String = rendered
            .iter()
            .map(|o| format!("---\n{}", serde_yaml_ng::to_string(o).unwrap()))
            .collect();
        let file = kubectl.write(&format!("{name}.yaml"), &yaml);
        let dry = kubectl
            .ok(&["apply", "--dry-run=server", "-f", &file])
            .await;
        assert!(dry.contains("daemonset.apps/ipledger-agent"), "{dry}");
        let applied = kubectl.ok(&["apply", "-f", &file]).await;
        for object in &rendered {
            let kind = object["kind"].as_str().unwrap().to_lowercase();
            let name = object["metadata"]["name"].as_str().unwrap();
            assert!(
                applied.contains(&format!("/{name} ")),
                "{kind} {name} not applied: {applied}"
            );
        }
    }
    let pools = kubectl.ok(&["get", "ippools", "-o", "name"]).await;
    assert!(pools.contains("ippool.ipledger.io/install-v4"), "{pools}");
    let ds = kubectl
        .ok(&[
            "-n",
            &namespace,
            "get",
            "daemonset",
            "ipledger-agent",
            "-o",
            "jsonpath={.spec.template.spec.hostNetwork}",
        ])
        .await;
    assert_eq!(ds, "true");
}

/// Every environment variable the chart sets for a container, and every argument it
/// passes, as `ipledger agent` / `ipledger controller` would parse them: an env name the
/// binary does not read, a flag it does not have, or a value it cannot parse fails here,
/// not on a node at start.
fn parse_as<A: clap::Args>(container: &Value) -> Result<clap::ArgMatches, String> {
    let command = A::augment_args(clap::Command::new("ipledger").no_binary_name(true));
    let mut argv: Vec<String> = container["args"].as_array().unwrap()[1..]
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap();
        let arg = command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name));
        let Some(arg) = arg else {
            // Read by the process itself rather than a flag: the log filter, the pod's name.
            assert!(
                ["IPLEDGER_LOG", "POD_NAME"].contains(&name),
                "the chart sets {name}, which no flag reads"
            );
            continue;
        };
        // Values from the downward API are the pod's at run time; any name stands in.
        let value = var["value"]
            .as_str()
            .map(|v| v.replace("$(POD_NAME)", "ipledger-controller-0"))
            .unwrap_or_else(|| "from-the-downward-api".into());
        argv.push(format!("--{}={value}", arg.get_long().unwrap()));
    }
    command
        .try_get_matches_from(argv)
        .map_err(|e| e.to_string())
}

#[test]
fn the_binaries_accept_every_flag_and_variable_the_chart_sets() {
    let Some(helm) = chart::helm() else { return };
    let all = all_options().display().to_string();
    for extra in [vec![], vec!["-f", all.as_str()]] {
        let objects = objects(&chart::template(&helm, "ipledger", &extra).unwrap());
        let agent =
            &find(&objects, "DaemonSet", "-agent")["spec"]["template"]["spec"]["containers"][0];
        let matches = parse_as::<ipledger::agent::AgentArgs>(agent)
            .unwrap_or_else(|e| panic!("the agent refuses the chart's {extra:?}: {e}"));
        assert!(matches.contains_id("node_name"));
        let controller = &find(&objects, "Deployment", "-controller")["spec"]["template"]["spec"]["containers"]
            [0];
        parse_as::<ipledger::controller::ControllerArgs>(controller)
            .unwrap_or_else(|e| panic!("the controller refuses the chart's {extra:?}: {e}"));
    }
    // And the check can fail: a duration the binary cannot read.
    let objects = objects(&chart::template(&helm, "ipledger", &[]).unwrap());
    let mut agent =
        find(&objects, "DaemonSet", "-agent")["spec"]["template"]["spec"]["containers"][0].clone();
    for var in agent["env"].as_array_mut().unwrap() {
        if var["name"] == "IPLEDGER_REQUEST_TIMEOUT" {
            var["value"] = "soon".into();
        }
    }
    let err = parse_as::<ipledger::agent::AgentArgs>(&agent).unwrap_err();
    assert!(
        err.contains("--request-timeout") && err.contains("soon"),
        "{err}"
    );
}
