//! Client rules in the balancer: each service's rules are entries of the `client_rules`
//! trie, keyed by the service's id and the client prefix. A rule change replaces only the
//! entries that differ, each in one update (a client sees its old rule or its new one);
//! the service's `SERVICE_F_HAS_RULES` flag is set after its first entry is written and
//! cleared before its last one goes, so the data plane never looks rules up for nothing.
//! Only new flows consult rules: the connection table is read first, so a rule change
//! moves no live flow.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{anyhow, bail};
use xdp_lb_common::{CLIENT_ACTION_DROP, CLIENT_ACTION_POOL, ClientRuleValue};

use super::{Balancer, ServiceState};
use crate::config::{ClientAction, ClientPrefix, ClientRule, Service};

impl ServiceState {
    /// The rule the data plane applies to `client`: the longest prefix holding it.
    pub fn client_rule(&self, client: IpAddr) -> Option<(&ClientPrefix, &ClientAction)> {
        self.rules
            .iter()
            .filter(|(prefix, _)| prefix.contains(client))
            .max_by_key(|(prefix, _)| prefix.prefix_len())
    }

    /// The trie value of a rule doing `action` (its pool is known: see `check_rules`).
    fn rule_value(&self, action: &ClientAction) -> ClientRuleValue {
        match action {
            ClientAction::Drop => ClientRuleValue {
                pool_id: 0,
                action: CLIENT_ACTION_DROP,
            },
            ClientAction::Pool(name) => ClientRuleValue {
                pool_id: self.pool(name).map_or(0, |p| p.id),
                action: CLIENT_ACTION_POOL,
            },
        }
    }
}

/// `rules` as a map, after checking each is of `service`'s family, names one of its pools
/// (`has_pool`) and gives a prefix once.
fn check_rules(
    service: &Service,
    rules: &[ClientRule],
    has_pool: impl Fn(&str) -> bool,
) -> anyhow::Result<BTreeMap<ClientPrefix, ClientAction>> {
    let mut wanted = BTreeMap::new();
    for rule in rules {
        if rule.prefix.is_ipv4() != service.vip.is_ipv4() {
            bail!(
                "the client prefix {} is not of the family of {}'s VIP {}",
                rule.prefix,
                service.name,
                service.vip
            );
        }
        if let ClientAction::Pool(pool) = &rule.action
            && !has_pool(pool)
        {
            bail!("service {} has no pool {pool}", service.name);
        }
        if wanted.insert(rule.prefix, rule.action.clone()).is_some() {
            bail!("the client prefix {} is given twice", rule.prefix);
        }
    }
    Ok(wanted)
}

/// The rules of a service about to be added name its own pools.
pub(super) fn check_pools_and_rules(config: &Service) -> anyhow::Result<()> {
    check_rules(config, &config.clients, |pool| config.has_pool(pool)).map(|_| ())
}

impl Balancer {
    /// Makes `rules` the client rules of a running service. Every rule is checked before
    /// anything changes; then new and changed entries are written, and entries no longer
    /// wanted removed.
    pub fn set_client_rules(&mut self, service: &str, rules: &[ClientRule]) -> anyhow::Result<()> {
        self.apply_client_rules(service, rules, true)
    }

    /// [`Self::set_client_rules`]; `live` when the service's value is in the data plane
    /// already (its flag then follows the rules), false while the service is being added
    /// (its first value is written next, with the flag).
    pub(super) fn apply_client_rules(
        &mut self,
        service: &str,
        rules: &[ClientRule],
        live: bool,
    ) -> anyhow::Result<()> {
        let state = self
            .services
            .get(service)
            .ok_or_else(|| anyhow!("no service named {service}"))?;
        let wanted = check_rules(&state.config, rules, |pool| state.pool(pool).is_some())?;
        let had_rules = !state.rules.is_empty();
        let id = state.id;
        let writes: Vec<(ClientPrefix, ClientAction, ClientRuleValue)> = wanted
            .iter()
            .filter(|(prefix, action)| state.rules.get(*prefix) != Some(*action))
            .map(|(prefix, action)| (*prefix, action.clone(), state.rule_value(action)))
            .collect();
        let removals: Vec<ClientPrefix> = state
            .rules
            .keys()
            .filter(|prefix| !wanted.contains_key(*prefix))
            .copied()
            .collect();

        for (prefix, action, value) in writes {
            self.dataplane
                .set_client_rule(id, prefix.addr(), prefix.prefix_len(), value)?;
            self.state_mut(service)?.rules.insert(prefix, action);
        }
        let state = self.state_mut(service)?;
        state.config.clients = rules.to_vec();
        if live && !had_rules && !wanted.is_empty() {
            self.write_service_value(service)?;
        }
        if live && wanted.is_empty() && !removals.is_empty() {
            // The flag goes first: the data plane stops looking before the entries go.
            self.state_mut(service)?.rules.clear();
            self.write_service_value(service)?;
        }
        for prefix in removals {
            self.dataplane
                .remove_client_rule(id, prefix.addr(), prefix.prefix_len())?;
            self.state_mut(service)?.rules.remove(&prefix);
        }
        Ok(())
    }

    /// Sets (or replaces) one client rule of a running service.
    pub fn set_client_rule(&mut self, service: &str, rule: &ClientRule) -> anyhow::Result<()> {
        let state = self
            .services
            .get(service)
            .ok_or_else(|| anyhow!("no service named {service}"))?;
        let mut rules: Vec<ClientRule> = state
            .config
            .clients
            .iter()
            .filter(|r| r.prefix != rule.prefix)
            .cloned()
            .collect();
        rules.push(rule.clone());
        self.set_client_rules(service, &rules)
    }

    /// Removes the client rule for `prefix` of a running service.
    pub fn remove_client_rule(
        &mut self,
        service: &str,
        prefix: ClientPrefix,
    ) -> anyhow::Result<()> {
        let state = self
            .services
            .get(service)
            .ok_or_else(|| anyhow!("no service named {service}"))?;
        if !state.rules.contains_key(&prefix) {
            bail!("service {service} has no client rule for {prefix}");
        }
        let rules: Vec<ClientRule> = state
            .config
            .clients
            .iter()
            .filter(|r| r.prefix != prefix)
            .cloned()
            .collect();
        self.set_client_rules(service, &rules)
    }

    /// Rewrites a service's `service_by_vip` value as it stands (no table switch).
    fn write_service_value(&mut self, service: &str) -> anyhow::Result<()> {
        let state = self
            .services
            .get(service)
            .ok_or_else(|| anyhow!("no service named {service}"))?;
        let (key, value) = (state.key, state.value());
        self.dataplane.set_service(key, value)
    }
}
