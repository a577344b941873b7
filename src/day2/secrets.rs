//! Secrets at rest and service-account tokens: `secrets rotate-encryption-key` and `secrets
//! rotate-service-account-key` are rotations (`pki::rotate`, run by `certs::rotate`) of the
//! encryption key and of the token signing key pair. What only they need is here: the step that
//! stores every Secret again with the new key, through the API on the first master.

use crate::components::ComponentId;
use crate::events::{Events, Status};
use crate::inventory::Inventory;
use crate::remote::Connector;

use super::Day2Error;

/// The admin kubeconfig deploy places on the masters (render's table), which kubectl uses there.
pub const ADMIN_KUBECONFIG: &str = "/etc/kubernetes/admin.kubeconfig";

/// `kubectl get secrets --all-namespaces -o json | kubectl replace -f -` on the first master:
/// every Secret stored again, encrypted with the key that now comes first. The number rewritten.
pub fn rewrite(
    inv: &Inventory,
    connector: &dyn Connector,
    events: &Events,
) -> Result<usize, Day2Error> {
    let Some(m) = inv.masters().next() else {
        return Err(Day2Error::Refused {
            reason: "the inventory has no master to rewrite the Secrets on".into(),
        });
    };
    let step = events.start(
        Some(&m.name),
        Some("rotate"),
        "rewrite every Secret with the new key",
    );
    let kubectl = ComponentId::Kubectl.get().binary_path(inv);
    let done = connector
        .connect(m)
        .and_then(|r| r.rewrite_secrets(&kubectl, ADMIN_KUBECONFIG));
    match &done {
        Ok(n) => step.done(Status::Changed, Some(format!("{n} Secrets"))),
        Err(e) => step.done(Status::Failed, Some(e.to_string())),
    }
    Ok(done?)
}
