//! The tera templates of `templates/`, embedded at build time, by name.
//!
//! `render` renders them; `inventory` reads two of them too, to refuse an `extra_args` flag or
//! a `config` field that hardway's own template already sets. The table sits below both, so
//! validating an inventory never calls into rendering.

/// The template of the Secrets encryption config.
pub(crate) const ENCRYPTION_CONFIG: &str = "encryption-config.yaml";

/// The templates, embedded at build time.
pub(crate) const TEMPLATES: &[(&str, &str)] = &[
    ("hosts", include_str!("../templates/hosts.tera")),
    (
        "kubeconfig",
        include_str!("../templates/kubeconfig.yaml.tera"),
    ),
    (
        "etcd.service",
        include_str!("../templates/etcd.service.tera"),
    ),
    ("etcd.env", include_str!("../templates/etcd.env.tera")),
    (
        ENCRYPTION_CONFIG,
        include_str!("../templates/encryption-config.yaml.tera"),
    ),
    (
        "audit-policy.yaml",
        include_str!("../templates/audit-policy.yaml.tera"),
    ),
    (
        "kube-scheduler.yaml",
        include_str!("../templates/kube-scheduler.yaml.tera"),
    ),
    (
        "apiserver-to-kubelet-rbac.yaml",
        include_str!("../templates/apiserver-to-kubelet-rbac.yaml.tera"),
    ),
    (
        "metallb-pool.yaml",
        include_str!("../templates/metallb-pool.yaml.tera"),
    ),
    (
        "coredns.yaml",
        include_str!("../templates/coredns.yaml.tera"),
    ),
    (
        "kube-apiserver.service",
        include_str!("../templates/kube-apiserver.service.tera"),
    ),
    (
        "kube-controller-manager.service",
        include_str!("../templates/kube-controller-manager.service.tera"),
    ),
    (
        "kube-scheduler.service",
        include_str!("../templates/kube-scheduler.service.tera"),
    ),
    (
        "kubelet-config.yaml",
        include_str!("../templates/kubelet-config.yaml.tera"),
    ),
    (
        "kube-proxy-config.yaml",
        include_str!("../templates/kube-proxy-config.yaml.tera"),
    ),
    (
        "containerd-config.toml",
        include_str!("../templates/containerd-config.toml.tera"),
    ),
    (
        "10-bridge.conf",
        include_str!("../templates/10-bridge.conf.tera"),
    ),
    (
        "containerd.service",
        include_str!("../templates/containerd.service.tera"),
    ),
    (
        "kubelet.service",
        include_str!("../templates/kubelet.service.tera"),
    ),
    (
        "kube-proxy.service",
        include_str!("../templates/kube-proxy.service.tera"),
    ),
    ("pod-routes", include_str!("../templates/pod-routes.tera")),
    (
        "pod-routes.service",
        include_str!("../templates/pod-routes.service.tera"),
    ),
    ("haproxy.cfg", include_str!("../templates/haproxy.cfg.tera")),
    (
        "haproxy.service",
        include_str!("../templates/haproxy.service.tera"),
    ),
    (
        "kernel-modules.conf",
        include_str!("../templates/kernel-modules.conf.tera"),
    ),
    (
        "kernel-sysctl.conf",
        include_str!("../templates/kernel-sysctl.conf.tera"),
    ),
    (
        "hardway-kernel.service",
        include_str!("../templates/hardway-kernel.service.tera"),
    ),
];

/// The text of an embedded template, by name (`kube-apiserver.service`).
pub fn template(name: &str) -> Option<&'static str> {
    TEMPLATES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}
