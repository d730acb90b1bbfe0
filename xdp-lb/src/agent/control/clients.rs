//! `xdp-lb client set|remove|list`: client rules changed at run time, as the old setup's
//! `change.py -o change-client` did. A change goes the way of a backend change: applied to
//! a copy of the running configuration, then through `apply_config` (which replaces only
//! the trie entries that differ, so no live flow moves), and only then saved for the next
//! agent.

use super::Context;
use crate::{
    config::{ClientAction, ClientPrefix, ConfigFile},
    control::protocol::{ClientList, ClientRuleStatus, Request, Response},
    runtime::{RuntimeChange, apply_client_change},
};

impl Context<'_> {
    /// Answers `ClientSet`, `ClientRemove` and `ClientList`.
    pub(super) async fn client_request(&mut self, request: Request) -> Response {
        match request {
            Request::ClientSet {
                service,
                prefix,
                pool,
                drop,
            } => {
                let prefix = match prefix.parse::<ClientPrefix>() {
                    Ok(prefix) => prefix,
                    Err(err) => return Response::error(err.to_string()),
                };
                let action = match (pool, drop) {
                    (Some(pool), false) => ClientAction::Pool(pool),
                    (None, true) => ClientAction::Drop,
                    (Some(_), true) => {
                        return Response::error("a client rule names a pool or drops, not both");
                    }
                    (None, false) => return Response::error("give a pool (--pool NAME) or --drop"),
                };
                self.change(RuntimeChange::ClientSet {
                    service,
                    prefix,
                    action,
                })
                .await
            }
            Request::ClientRemove { service, prefix } => match prefix.parse::<ClientPrefix>() {
                Ok(prefix) => {
                    self.change(RuntimeChange::ClientRemove { service, prefix })
                        .await
                }
                Err(err) => Response::error(err.to_string()),
            },
            Request::ClientList { service } => self.client_list(service.as_deref()),
            other => Response::error(format!("{other:?} is not a client request")),
        }
    }

    /// The client rules in force (of `service`, or of every service), in file order.
    fn client_list(&self, service: Option<&str>) -> Response {
        if let Some(name) = service
            && !self.file.config.services.iter().any(|s| s.name == name)
        {
            return Response::error(format!("there is no service {name}"));
        }
        let rules = self
            .file
            .config
            .services
            .iter()
            .filter(|s| service.is_none_or(|name| s.name == name))
            .flat_map(|s| {
                s.clients.iter().map(|rule| ClientRuleStatus {
                    service: s.name.clone(),
                    prefix: rule.prefix.to_string(),
                    pool: match &rule.action {
                        ClientAction::Pool(pool) => Some(pool.clone()),
                        ClientAction::Drop => None,
                    },
                    origin: if self.runtime.sets_client(&s.name, rule.prefix) {
                        "run-time".to_owned()
                    } else {
                        "yaml".to_owned()
                    },
                })
            })
            .collect();
        Response::Clients(ClientList { rules })
    }
}

/// Applies a client change to a configuration, refusing what the YAML's validation would
/// (and the removal of a rule that is not there).
pub(super) fn edit(file: &mut ConfigFile, change: &RuntimeChange) -> Result<(), String> {
    let (name, prefix) = match change {
        RuntimeChange::ClientSet {
            service, prefix, ..
        }
        | RuntimeChange::ClientRemove { service, prefix } => (service, *prefix),
        other => return Err(format!("{other:?} is not a client change")),
    };
    let service = file
        .config
        .services
        .iter_mut()
        .find(|s| s.name == *name)
        .ok_or_else(|| format!("there is no service {name}"))?;
    match apply_client_change(service, change) {
        Ok(false) if matches!(change, RuntimeChange::ClientRemove { .. }) => {
            Err(format!("service {name} has no client rule for {prefix}"))
        }
        Ok(_) => Ok(()),
        Err(err) => Err(err.to_string()),
    }
}
