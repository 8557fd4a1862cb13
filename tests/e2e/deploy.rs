//! The deployment artifacts: the Kubernetes manifests pass the Kubernetes schema (strict,
//! with `kubernetes-validate` from PyPI, which bundles the schemas: no cluster needed), and
//! the image's command serves the shipped config with its probes answering.

use std::path::Path;
use std::process::Command;

use crate::sdk::venv_python;
use crate::support::*;

const MANIFESTS: [&str; 4] = ["deployment.yaml", "service.yaml", "pdb.yaml", "redis.yaml"];

fn deploy_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn validate(files: &[std::path::PathBuf]) -> (bool, String) {
    let python = venv_python();
    let out = Command::new(python)
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.30.0"])
        .args(files)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn the_kubernetes_manifests_pass_the_schema_and_a_broken_one_does_not() {
    let files: Vec<_> = MANIFESTS.iter().map(|f| deploy_dir().join(f)).collect();
    let (ok, out) = tokio::task::spawn_blocking(move || validate(&files))
        .await
        .unwrap();
    assert!(ok, "{out}");
    assert_eq!(
        out.matches("passed").count(),
        5,
        "every resource checked: {out}"
    );
    // The check can fail: a misspelt field is refused.
    let broken = std::env::temp_dir().join(format!("thinkgate-broken-{}.yaml", std::process::id()));
    let text = std::fs::read_to_string(deploy_dir().join("deployment.yaml")).unwrap();
    std::fs::write(&broken, text.replace("readinessProbe:", "readynessProbe:")).unwrap();
    let (ok, out) = tokio::task::spawn_blocking(move || validate(&[broken]))
        .await
        .unwrap();
    assert!(!ok, "a misspelt field passed: {out}");
}

#[tokio::test]
async fn the_manifests_agree_with_the_image_and_the_config() {
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let deployment = std::fs::read_to_string(deploy_dir().join("deployment.yaml")).unwrap();
    let config = std::fs::read_to_string(deploy_dir().join("thinkgate.toml")).unwrap();
    let kustomization = std::fs::read_to_string(deploy_dir().join("kustomization.yaml")).unwrap();
    // The image runs as the user the pod requires, the command the pod runs.
    assert!(dockerfile.contains("USER 10001:10001") && deployment.contains("runAsUser: 10001"));
    assert!(dockerfile.contains(r#"CMD ["serve", "--config", "/etc/thinkgate/thinkgate.toml"]"#));
    assert!(deployment.contains(r#"args: ["serve", "--config", "/etc/thinkgate/thinkgate.toml"]"#));
    assert!(
        deployment.contains("mountPath: /etc/thinkgate\n"),
        "the directory is mounted, so updates reach the file"
    );
    assert!(
        kustomization.contains("- thinkgate.toml")
            && kustomization.contains("disableNameSuffixHash: true")
    );
    for m in MANIFESTS {
        assert!(
            kustomization.contains(&format!("- {m}")),
            "{m} is in the kustomization"
        );
    }
    // The config's replica count is the Deployment's, its port the container's.
    assert!(deployment.contains("replicas: 3") && config.contains("replicas = 3"));
    assert!(
        config.contains("listen = \"0.0.0.0:8080\"") && deployment.contains("containerPort: 8080")
    );
    // The grace period covers the drain.
    assert!(
        config.contains("shutdown_grace = \"30s\"")
            && deployment.contains("terminationGracePeriodSeconds: 45")
    );
}

#[tokio::test]
async fn the_image_command_serves_the_shipped_config_and_its_probes_answer() {
    let config = std::fs::read_to_string(deploy_dir().join("thinkgate.toml")).unwrap();
    // No Redis here: the replica starts anyway and fails open, as the config says.
    let env = [
        ("THINKGATE_API_KEY", "tg-deploy-test-key-0123456789"),
        ("OPENAI_API_KEY", "sk-test"),
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
    ];
    let server = Binary::spawn("deploy", &config, &env);
    assert_eq!(get(&server.url("/healthz")).await.status, 200);
    assert_eq!(get(&server.url("/readyz")).await.status, 200);
    let metrics = get(&server.url("/metrics")).await;
    assert_eq!(metrics.status, 200);
    assert_eq!(
        series(&metrics.text(), "thinkgate_state_backend_up", &[]),
        0.0
    );
    server.sigterm();
    assert_eq!(server.exit_code().await, Some(0));
}
