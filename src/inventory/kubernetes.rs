//! The rules that depend on the Kubernetes version: which releases are supported, and which
//! flags `[components.<name>] extra_args` may add for the cluster's release.
//!
//! A flag is accepted only if the release's upstream list has it ([`crate::versions`]), hardway
//! does not already set it (unless [`crate::flags::OVERRIDABLE`] says it may be replaced), the
//! component does not ignore it beside the `--config` hardway passes, it does not make the daemon
//! exit, and its value can be written into `ExecStart=` exactly ([`crate::flags::systemd_word`]).
//!
//! `[components.<name>] config` adds fields to the kubelet's and kube-proxy's config files: each
//! must be a field of that config type in the cluster's release (the field lists of
//! [`crate::versions`]), and outside every top-level field hardway's template sets (its identity,
//! certificates and hardening, as for flags).

use std::collections::BTreeMap;

use super::ExtraArg;
use super::raw::RawComponent;
use super::validator::Validator;
use super::values::describe;
use crate::components::ComponentId;
use crate::flags::{self, EXITS, EXTRA_ARGS_COMPONENTS};
use crate::versions::{self, ConfigType, Minor, Version};

const VERSION_FIELD: &str = "cluster.kubernetes_version";

impl Validator<'_> {
    /// The release to deploy: given and supported, or the newest supported when left out.
    pub(super) fn kubernetes_version(&mut self, given: Option<&str>) -> Option<Version> {
        let Some(given) = given else {
            return Some(versions::newest());
        };
        let Some(version) = Version::parse(given) else {
            self.error(
                VERSION_FIELD,
                format!(
                    "{given:?} is not a version like \"{}\" (1.<minor>.<patch>, digits only, optionally after a 'v')",
                    versions::newest()
                ),
            );
            return None;
        };
        if version.supported().is_none() {
            self.error(
                VERSION_FIELD,
                format!(
                    "Kubernetes {version} is not supported: hardway supports {} (upstream's three newest minors); \
                     leave kubernetes_version out for the newest, {}",
                    versions::supported_names(),
                    versions::newest()
                ),
            );
            return None;
        }
        Some(version)
    }

    /// `[components.<name>] extra_args`, checked against the lists of `version` (skipped when the
    /// version itself is wrong: that is reported once, above).
    pub(super) fn extra_args(
        &mut self,
        raw: &BTreeMap<String, RawComponent>,
        version: Option<Version>,
    ) -> BTreeMap<ComponentId, Vec<ExtraArg>> {
        let minor = version.and_then(Version::supported);
        let mut out = BTreeMap::new();
        for (name, component) in raw {
            let Some(id) = EXTRA_ARGS_COMPONENTS
                .into_iter()
                .find(|c| c.get().name == name.as_str())
            else {
                let known: Vec<&str> = EXTRA_ARGS_COMPONENTS.iter().map(|c| c.get().name).collect();
                self.error(
                    &format!("components.{name}"),
                    format!(
                        "unknown component {name:?} (extra_args can be given for {})",
                        known.join(", ")
                    ),
                );
                continue;
            };
            let mut args = Vec::new();
            for (flag, value) in &component.extra_args {
                let field = format!("components.{name}.extra_args.{flag}");
                if let Some(arg) = self.extra_arg(&field, id, flag, value, minor) {
                    args.push(arg);
                }
            }
            out.insert(id, args);
        }
        out
    }

    /// `[components.<name>] config`: fields for the config files of the kubelet and kube-proxy.
    pub(super) fn component_config(
        &mut self,
        raw: &BTreeMap<String, RawComponent>,
        version: Option<Version>,
    ) -> BTreeMap<ComponentId, toml::Table> {
        let minor = version.and_then(Version::supported);
        let mut out = BTreeMap::new();
        for (name, component) in raw.iter().filter(|(_, c)| !c.config.is_empty()) {
            let field = format!("components.{name}.config");
            let Some(config) = ConfigType::USER_FIELDS
                .into_iter()
                .find(|t| t.component().get().name == name.as_str())
            else {
                let known: Vec<&str> = ConfigType::USER_FIELDS
                    .iter()
                    .map(|t| t.component().get().name)
                    .collect();
                if EXTRA_ARGS_COMPONENTS
                    .iter()
                    .any(|c| c.get().name == name.as_str())
                {
                    self.error(&field, format!("hardway renders no config file of its own for {name}: config can be given for {}", known.join(", ")));
                }
                continue;
            };
            let set =
                top_level_keys(crate::templates::template(config.template()).unwrap_or_default());
            for key in component.config.keys().filter(|k| set.contains(k.as_str())) {
                self.error(
                    &format!("{field}.{key}"),
                    format!(
                        "hardway already sets {key} in the {} (from the inventory, the PKI or its hardening): \
                         config may only add fields hardway does not set",
                        config.kind()
                    ),
                );
            }
            if let Some(minor) = minor {
                self.config_fields(&field, "", &component.config, config, minor);
            }
            out.insert(config.component(), component.config.clone());
        }
        out
    }

    /// Every key of `table` (at `prefix`) must be a field of `config` in `minor`; a table goes
    /// on to its own keys where the field has fields of its own (a map field is a leaf).
    fn config_fields(
        &mut self,
        field: &str,
        prefix: &str,
        table: &toml::Table,
        config: ConfigType,
        minor: &Minor,
    ) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if !minor.has_field(config, &path) {
                self.error(
                    &format!("{field}.{path}"),
                    format!(
                        "{} of Kubernetes {} has no field {path} (checked against data/kubernetes/{}/{}.fields, upstream's types)",
                        config.kind(),
                        minor.name(),
                        minor.name(),
                        config.kind()
                    ),
                );
                continue;
            }
            let nested = format!("{path}.");
            if let toml::Value::Table(inner) = value
                && minor.fields(config).any(|f| f.starts_with(&nested))
            {
                self.config_fields(field, &path, inner, config, minor);
            }
        }
    }

    fn extra_arg(
        &mut self,
        field: &str,
        id: ComponentId,
        flag: &str,
        value: &toml::Value,
        minor: Option<&Minor>,
    ) -> Option<ExtraArg> {
        let component = id.get().name;
        if let Some(bare) = flag.strip_prefix('-') {
            self.error(
                field,
                format!(
                    "write the flag without its dashes: {:?}",
                    bare.trim_start_matches('-')
                ),
            );
            return None;
        }
        let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
        if flag.is_empty() || !flag.bytes().all(plain) {
            self.error(
                field,
                format!("{flag:?} is not a flag name (lowercase letters, digits, '-' and '_')"),
            );
            return None;
        }
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                self.error(
                    field,
                    format!(
                        "the value must be a string, number or boolean, not {}",
                        other.type_str()
                    ),
                );
                return None;
            }
        };
        if EXITS.contains(&flag) {
            self.error(
                field,
                format!(
                    "--{flag} makes {component} print and exit: its unit would restart forever"
                ),
            );
            return None;
        }
        let template = id
            .get()
            .unit
            .and_then(|u| crate::templates::template(&format!("{u}.service")))
            .unwrap_or_default();
        let set = flags::set_by_template(template);
        if let Some(minor) = minor {
            let Some(known) = minor.flag(id, flag) else {
                self.error(
                    field,
                    format!(
                        "{component} {} has no flag --{flag} (checked against data/kubernetes/{}/{component}.flags, \
                         upstream's list)",
                        minor.name(),
                        minor.name()
                    ),
                );
                return None;
            };
            if known.ignored_with_config && set.contains("config") {
                self.error(
                    field,
                    format!(
                        "{component} ignores --{flag} when --config is given, and hardway gives it a config file: \
                         the flag would have no effect"
                    ),
                );
                return None;
            }
        }
        if set.contains(flag) && !flags::overridable(id).contains(&flag) {
            let may: Vec<String> = flags::overridable(id)
                .iter()
                .map(|f| format!("--{f}"))
                .collect();
            let may = if may.is_empty() {
                "none".to_string()
            } else {
                may.join(", ")
            };
            self.error(
                field,
                format!(
                    "hardway already sets --{flag} for {component} (from the inventory, the PKI or its hardening); \
                     flags extra_args may override there: {may}"
                ),
            );
            return None;
        }
        match flags::systemd_word(flag, &value) {
            Ok(word) => Some(ExtraArg {
                flag: flag.to_string(),
                value,
                word,
            }),
            Err(c) => {
                self.error(
                    field,
                    format!("the value of --{flag} contains {}, which cannot be written into a unit's ExecStart=", describe(c)),
                );
                None
            }
        }
    }
}

/// The top-level keys a YAML template sets (`apiVersion`, `cgroupDriver`, ...): lines that start
/// with a key, not indented, not a comment or a template tag.
fn top_level_keys(template: &str) -> std::collections::BTreeSet<&str> {
    template
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_alphabetic()))
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .collect()
}
