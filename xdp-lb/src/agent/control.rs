//! Requests from the control socket (and from the metrics and registration endpoints,
//! which speak through the same channel), handled in the agent's loop (which owns all
//! state): status, lookup, reload, and run-time backend changes. A change is validated by
//! applying it to a copy of the running configuration; only when that copy is applied is
//! the change saved for the next agent.

mod clients;

use std::net::IpAddr;

use super::{
    apply::{apply_config, reload},
    failover::Health,
};
use crate::{
    audit::Auditor,
    balancer::Balancer,
    config::{ConfigFile, MacAddr, Protocol},
    control::census::FlowCensus,
    control::{
        protocol::{AgentInfo, Request, Response},
        report,
        switches::TableSwitches,
    },
    neighbour::{Egress, Neighbours},
    runtime::{RuntimeChange, RuntimeChanges, check_backend},
};

pub(super) struct Context<'a> {
    pub neighbours: &'a Neighbours,
    pub file: &'a mut ConfigFile,
    pub runtime: &'a mut RuntimeChanges,
    pub interfaces: &'a [Egress],
    pub balancer: &'a mut Balancer,
    pub health: &'a mut Health,
    pub auditor: &'a mut Auditor,
    pub info: &'a mut AgentInfo,
    pub census: &'a FlowCensus,
    pub announcer: &'a crate::announce::Announcer,
    pub sync: &'a crate::sync::FlowSync,
}

/// An answer now, or one finished off the control loop.
pub(super) enum Reply {
    Now(Box<Response>),
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>),
}

impl Context<'_> {
    pub async fn handle(&mut self, request: Request) -> Reply {
        match request {
            Request::Status => Reply::Later(Box::pin(self.status().await)),
            other => Reply::Now(Box::new(self.handle_now(other).await)),
        }
    }

    /// The status report, built in the loop but for the connection table's figures, which
    /// the census thread counts meanwhile.
    async fn status(&mut self) -> impl std::future::Future<Output = Response> + Send + use<> {
        let observed = self.health.observed(self.file.config.flow_table);
        // A fresh audit: what `status` says about drift is never older than the request.
        let drift = self
            .auditor
            .run(self.balancer, self.neighbours, &self.file.config.interfaces)
            .await;
        let mut report = report::status(self.balancer, &observed);
        let mut drift = drift;
        drift.extend(self.sync.drift(self.balancer.dataplane()));
        report.drift = drift;
        report.audit_last_run_ms = self.auditor.last_run_ms();
        report.agent = self.info.clone();
        report.announce = self.announcer.status(self.file.announce.as_ref());
        report.sync = self.sync.status(self.file.sync.as_ref());
        let counted = self.census.count();
        async move {
            if let Some(census) = counted.await {
                report::fill_flows(&mut report, &census);
            }
            Response::Status(report)
        }
    }

    async fn handle_now(&mut self, request: Request) -> Response {
        match request {
            // `handle` answers it off the loop; in full here all the same.
            Request::Status => self.status().await.await,
            Request::Lookup {
                client,
                vip,
                protocol,
            } => {
                let protocol = match protocol.as_str() {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    other => {
                        return Response::error(format!(
                            "`{other}` is not a protocol (tcp or udp)"
                        ));
                    }
                };
                match report::lookup(
                    self.balancer,
                    &self.file.config.flow_table,
                    client,
                    vip,
                    protocol,
                ) {
                    Ok(answer) => Response::Lookup(answer),
                    Err(message) => Response::error(message),
                }
            }
            Request::Reload => {
                let outcome = reload(
                    self.neighbours,
                    self.file,
                    self.runtime,
                    self.interfaces,
                    self.balancer,
                )
                .await;
                super::info::record_reload(self.info, &outcome, &self.file.config.path);
                match outcome {
                    Ok((new, summary)) => {
                        *self.file = new;
                        Response::Ok { message: summary }
                    }
                    Err(why) => Response::error(why),
                }
            }
            Request::BackendAdd {
                service,
                address,
                weight,
                mac,
                vlan,
            } => {
                let mac = match mac.as_deref().map(str::parse::<MacAddr>).transpose() {
                    Ok(mac) => mac,
                    Err(err) => return Response::error(err.to_string()),
                };
                if let Some(mac) = mac
                    && (mac.is_zero() || mac.is_multicast())
                {
                    return Response::error(format!("{mac} cannot be a backend's MAC"));
                }
                self.change(RuntimeChange::BackendAdd {
                    service,
                    address,
                    weight,
                    mac,
                    vlan,
                })
                .await
            }
            Request::BackendRemove { service, address } => {
                self.change(RuntimeChange::BackendRemove { service, address })
                    .await
            }
            Request::BackendDrain { service, address } => {
                self.change(RuntimeChange::BackendWeight {
                    service,
                    address,
                    weight: 0,
                })
                .await
            }
            Request::BackendWeight {
                service,
                address,
                weight,
            } => {
                self.change(RuntimeChange::BackendWeight {
                    service,
                    address,
                    weight,
                })
                .await
            }
            Request::BackendEnable { service, address } => self.enable(service, address).await,
            Request::ServiceAdd { yaml } => {
                let service: Option<String> = serde_saphyr::from_str::<serde_json::Value>(&yaml)
                    .ok()
                    .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned));
                let Some(service) = service else {
                    return Response::error(
                        "the service needs a `name` (one item of `services:` in YAML)",
                    );
                };
                self.change(RuntimeChange::ServiceAdd { service, yaml })
                    .await
            }
            Request::ServiceRemove { service } => {
                self.change(RuntimeChange::ServiceRemove { service }).await
            }
            request @ (Request::ClientSet { .. }
            | Request::ClientRemove { .. }
            | Request::ClientList { .. }) => self.client_request(request).await,
        }
    }

    /// Validates and applies one change, then records it.
    async fn change(&mut self, change: RuntimeChange) -> Response {
        let mut candidate = self.file.clone();
        if let Err(why) = edit(&mut candidate, &change) {
            return Response::error(why);
        }
        // One set of rules: the edited copy must pass the file's whole validation.
        let candidate = match crate::config::revalidated(&candidate, &crate::config::LiveHost) {
            Ok(checked) => checked,
            Err(why) => return Response::error(format!("refused: {why}")),
        };
        // An added backend's MAC is resolved first: only the other changes are timed as
        // table switches.
        let timed = !matches!(change, RuntimeChange::BackendAdd { .. });
        let watch = TableSwitches::start(self.balancer);
        let applied = apply_config(
            self.neighbours,
            self.file,
            &candidate,
            self.interfaces,
            self.balancer,
        )
        .await;
        if timed {
            self.health.switches.stop(watch, self.balancer);
        }
        match applied {
            Ok(summary) => {
                *self.file = candidate;
                if let Err(err) = self.runtime.record(change) {
                    return Response::error(format!(
                        "applied, but not saved for the next agent ({}): {err:#}",
                        self.runtime.path().display()
                    ));
                }
                Response::Ok { message: summary }
            }
            Err(why) => Response::error(why),
        }
    }

    /// Back to the configured weight: the YAML's, or the one the backend was added with.
    async fn enable(&mut self, service: String, address: IpAddr) -> Response {
        let yaml = match crate::config::load_file_settled(
            &self.file.config.path,
            &crate::config::LiveHost,
        )
        .await
        {
            Ok(yaml) => yaml,
            Err(errors) => {
                return Response::error(format!("the config file does not load:\n{errors}"));
            }
        };
        let yaml_weight = yaml
            .config
            .services
            .iter()
            .find(|s| s.name == service)
            .and_then(|s| s.all_backends().find(|b| b.address == address))
            .map(|b| b.weight);
        let added_weight = self.runtime.changes().iter().find_map(|c| match c {
            RuntimeChange::BackendAdd {
                service: s,
                address: a,
                weight,
                ..
            } if *s == service && *a == address => Some(*weight),
            _ => None,
        });
        let Some(weight) = yaml_weight.or(added_weight) else {
            return Response::error(format!("service {service} has no backend {address}"));
        };
        let response = self
            .change(RuntimeChange::BackendWeight {
                service: service.clone(),
                address,
                weight,
            })
            .await;
        if matches!(response, Response::Ok { .. })
            && yaml_weight.is_some()
            && let Err(err) = self.runtime.clear_weight(&service, address)
        {
            return Response::error(format!("enabled, but not saved: {err:#}"));
        }
        response
    }
}

/// Applies a change to a configuration, with the rules the YAML's validation has.
fn edit(file: &mut ConfigFile, change: &RuntimeChange) -> Result<(), String> {
    let (name, address) = match change {
        RuntimeChange::BackendAdd {
            service, address, ..
        }
        | RuntimeChange::BackendRemove { service, address }
        | RuntimeChange::BackendWeight {
            service, address, ..
        } => (service, *address),
        RuntimeChange::ClientSet { .. } | RuntimeChange::ClientRemove { .. } => {
            return clients::edit(file, change);
        }
        RuntimeChange::ServiceAdd { yaml, .. } => {
            *file = crate::config::with_service_added(file, yaml, &crate::config::LiveHost)?;
            return Ok(());
        }
        RuntimeChange::ServiceRemove { service } => {
            *file = crate::config::with_service_removed(file, service)
                .ok_or_else(|| format!("there is no service {service}"))?;
            return Ok(());
        }
    };
    let service = file
        .config
        .services
        .iter_mut()
        .find(|s| s.name == *name)
        .ok_or_else(|| format!("there is no service {name}"))?;
    let (vip, maglev_size) = (service.vip, service.maglev_size);
    let service_vlan = service.vlan;
    let in_pool = service.pool_of(address).is_some();
    // A server of any pool: backends are added to the service's own (default) pool.
    let backends = service.backends_holding_mut(address);
    let position = backends.iter().position(|b| b.address == address);
    match change {
        RuntimeChange::BackendAdd {
            weight, mac, vlan, ..
        } => {
            if position.is_some() || in_pool {
                return Err(format!("service {name} already has backend {address}"));
            }
            check_backend(vip, address, *weight).map_err(|e| e.to_string())?;
            let vlan = crate::runtime::backend_vlan(name, service_vlan, address, *vlan)
                .map_err(|e| e.to_string())?;
            if backends.len() >= maglev_size as usize {
                return Err(format!(
                    "service {name} has as many backends as its table has slots"
                ));
            }
            backends.push(crate::config::Backend {
                address,
                weight: *weight,
                mac: *mac,
                vlan,
            });
        }
        RuntimeChange::BackendRemove { .. } => {
            let i = position.ok_or_else(|| format!("service {name} has no backend {address}"))?;
            backends.remove(i);
        }
        RuntimeChange::BackendWeight { weight, .. } => {
            let i = position.ok_or_else(|| format!("service {name} has no backend {address}"))?;
            check_backend(vip, address, *weight).map_err(|e| e.to_string())?;
            backends[i].weight = *weight;
        }
        RuntimeChange::ClientSet { .. }
        | RuntimeChange::ClientRemove { .. }
        | RuntimeChange::ServiceAdd { .. }
        | RuntimeChange::ServiceRemove { .. } => {}
    }
    Ok(())
}
