//! Day 2 for certificates: `certs check` (every certificate on every node and in the PKI),
//! `certs renew` (leaves re-issued and rolled out without downtime) and `certs rotate-ca`.
//! Changes reach the nodes through [`push`]: deploy's plan and rolling restarts, restricted to
//! the files that changed and to what is deployed.

pub mod check;
pub(crate) mod push;
pub mod renew;
pub mod rotate;

#[cfg(test)]
mod tests;
