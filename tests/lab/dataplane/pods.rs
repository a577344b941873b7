//! Pods through containerd's CRI API, the calls the kubelet makes for a pod: RunPodSandbox
//! (the pause container and, through the CNI plugins, the pod's network), CreateContainer and
//! StartContainer for its one container, ExecSync to run a command in it, then StopPodSandbox
//! (which releases the pod's address) and RemovePodSandbox.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use cri_client::Cri;
use cri_client::v1;

/// The port the pods' web server listens on.
pub const HTTP_PORT: u16 = 8080;

/// A pod with one container that serves `hello from <its hostname>` over HTTP.
pub struct Pod {
    pub name: String,
    pub sandbox: String,
    pub container: String,
    pub ip: Ipv4Addr,
}

/// What the kubelet sends for a pod named `name` with this `uid`: the systemd cgroup driver's
/// slice as its cgroup parent (the rendered config has `SystemdCgroup = true`), namespaces of
/// its own, its logs under /var/log/pods.
fn sandbox_config(name: &str, uid: &str) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: format!("/var/log/pods/default_{name}_{uid}"),
        linux: Some(v1::LinuxPodSandboxConfig {
            cgroup_parent: format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_")),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn web_container(image: &str) -> v1::ContainerConfig {
    // /cgi-bin/peer answers with the address the request came from, as this pod sees it.
    let script = format!(
        "mkdir -p /tmp/www/cgi-bin && echo \"hello from $(hostname)\" >/tmp/www/index.html && \
         printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' >/tmp/www/cgi-bin/peer && \
         chmod +x /tmp/www/cgi-bin/peer && exec httpd -f -p {HTTP_PORT} -h /tmp/www"
    );
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: "web".into(),
            attempt: 0,
        }),
        image: Some(v1::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script],
        log_path: "web/0.log".into(),
        linux: Some(v1::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

fn failed(what: &str, e: cri_client::Status) -> String {
    format!("{what}: {} ({:?})", e.message(), e.code())
}

/// Runs the pod: its sandbox, then its web container. The sandbox's image is the one
/// containerd's config names; the call fails if containerd cannot find it locally and cannot
/// pull it (the lab reaches no registry).
pub async fn run(cri: &mut Cri, name: &str, uid: &str, image: &str) -> Result<Pod, String> {
    let config = sandbox_config(name, uid);
    let sandbox = cri
        .runtime
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(|e| failed(&format!("RunPodSandbox {name}"), e))?
        .into_inner()
        .pod_sandbox_id;
    let status = cri
        .runtime
        .pod_sandbox_status(v1::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox.clone(),
            verbose: false,
        })
        .await
        .map_err(|e| failed(&format!("PodSandboxStatus {name}"), e))?
        .into_inner()
        .status
        .ok_or_else(|| format!("PodSandboxStatus {name}: no status"))?;
    if status.state != v1::PodSandboxState::SandboxReady as i32 {
        return Err(format!("sandbox of {name} is not ready: {status:?}"));
    }
    let ip_text = status.network.map(|n| n.ip).unwrap_or_default();
    let ip: Ipv4Addr = ip_text
        .parse()
        .map_err(|_| format!("sandbox of {name} has no IPv4 address ({ip_text:?})"))?;
    let container = cri
        .runtime
        .create_container(v1::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(web_container(image)),
            sandbox_config: Some(config),
        })
        .await
        .map_err(|e| failed(&format!("CreateContainer in {name}"), e))?
        .into_inner()
        .container_id;
    cri.runtime
        .start_container(v1::StartContainerRequest {
            container_id: container.clone(),
        })
        .await
        .map_err(|e| failed(&format!("StartContainer in {name}"), e))?;
    Ok(Pod {
        name: name.into(),
        sandbox,
        container,
        ip,
    })
}

/// Runs `cmd` in the pod's container: exit code, stdout and stderr.
pub async fn exec(cri: &mut Cri, pod: &Pod, cmd: &[&str]) -> Result<(i32, String, String), String> {
    let r = cri
        .runtime
        .exec_sync(v1::ExecSyncRequest {
            container_id: pod.container.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .map_err(|e| failed(&format!("ExecSync {cmd:?} in {}", pod.name), e))?
        .into_inner();
    Ok((
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    ))
}

/// Fetches `http://<to>:8080<path>` from inside `from`'s container until it answers, or fails after
/// `timeout` with the last error (httpd needs a moment after StartContainer).
pub async fn fetch(
    cri: &mut Cri,
    from: &Pod,
    to: Ipv4Addr,
    path: &str,
    timeout: Duration,
) -> Result<String, String> {
    fetch_port(cri, from, to, HTTP_PORT, path, timeout).await
}

/// Like [`fetch`], from any HTTP server at `to:port`.
pub async fn fetch_port(
    cri: &mut Cri,
    from: &Pod,
    to: Ipv4Addr,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<String, String> {
    let url = format!("http://{to}:{port}{path}");
    let deadline = Instant::now() + timeout;
    loop {
        // No -T: Debian's busybox 1.35 wget crashes with it. ExecSync's own timeout bounds it.
        let (code, out, err) = exec(cri, from, &["wget", "-q", "-O", "-", &url]).await?;
        if code == 0 {
            return Ok(out);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} could not fetch {url} within {timeout:?}: exit {code}: {}",
                from.name,
                err.trim()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops and removes the pod, as the kubelet does when a pod is deleted.
pub async fn remove(cri: &mut Cri, pod: &Pod) -> Result<(), String> {
    let id = pod.sandbox.clone();
    cri.runtime
        .stop_pod_sandbox(v1::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .map_err(|e| failed(&format!("StopPodSandbox {}", pod.name), e))?;
    cri.runtime
        .remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .map_err(|e| failed(&format!("RemovePodSandbox {}", pod.name), e))?;
    Ok(())
}
