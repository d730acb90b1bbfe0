//! Client-source pools: a service with client rules places each new flow in the pool its
//! client's longest matching prefix names, or refuses the client; a client matching no rule
//! uses the service's own backends (its default pool). Only new flows get here: a flow in
//! the connection table keeps its backend whatever the rules say now.

use aya_ebpf::maps::lpm_trie::Key;
use xdp_lb_common::{
    CLIENT_ACTION_DROP, CLIENT_RULE_SERVICE_BITS, ClientRuleKey, FAMILY_IPV4, POOL_ID_DEFAULT,
    SERVICE_F_HAS_RULES, ServiceValue,
};

use crate::{
    maps::{CLIENT_RULES, POOLS},
    parse::Flow,
};

/// A live Maglev table to pick a backend from, and the pool it belongs to.
pub struct Table {
    pub pool_id: u32,
    pub offset: u32,
    /// 0 when the pool has no usable backend.
    pub size: u32,
}

/// Where a new flow's backend comes from.
pub enum Placement {
    Table(Table),
    /// A `drop` rule refuses the client.
    Refused,
}

/// The table of the pool the flow's client belongs to.
#[inline(always)]
pub fn placement(flow: &Flow, service: &ServiceValue) -> Placement {
    let default = Table {
        pool_id: POOL_ID_DEFAULT,
        offset: service.table_offset,
        size: service.table_size,
    };
    if service.flags & SERVICE_F_HAS_RULES == 0 {
        return Placement::Table(default);
    }
    let client_bits = if flow.service.family == FAMILY_IPV4 {
        32
    } else {
        128
    };
    let key = Key::new(
        CLIENT_RULE_SERVICE_BITS + client_bits,
        ClientRuleKey::from_words(service.service_id, &flow.src),
    );
    let Some(rule) = CLIENT_RULES.get(&key).copied() else {
        return Placement::Table(default);
    };
    if rule.action == CLIENT_ACTION_DROP {
        return Placement::Refused;
    }
    if rule.pool_id == POOL_ID_DEFAULT {
        return Placement::Table(default);
    }
    // SAFETY: the value is copied out at once; the agent replaces values whole.
    let pool = unsafe { POOLS.get(rule.pool_id) }.copied();
    match pool {
        Some(pool) if pool.service_id == service.service_id => Placement::Table(Table {
            pool_id: rule.pool_id,
            offset: pool.table_offset,
            size: pool.table_size,
        }),
        // A pool not (or no longer) set up: as a pool without a usable backend.
        _ => Placement::Table(Table {
            pool_id: rule.pool_id,
            offset: 0,
            size: 0,
        }),
    }
}
