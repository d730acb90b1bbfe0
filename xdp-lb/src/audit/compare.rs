//! The comparison itself: every rule by which the kernel's view differs from the agent's
//! intent (`views.rs`), each difference worded for the operator.

use std::{collections::HashSet, net::IpAddr};

use xdp_lb_common::{
    BACKEND_F_VALID, BackendValue, LocalMacs, MAX_LOCAL_MACS, PROTO_TCP, PROTO_UDP, ServiceKey,
    ServiceValue, VipKey, addr_from_words, map_names, port_from_raw, vip_filter_bit,
};

use super::{Attached, Drift, Intent, KernelView, TableDigest};
use crate::config::MacAddr;

/// Every difference between `intent` and `kernel`, sorted.
pub fn compare(intent: &Intent, kernel: &KernelView) -> Vec<Drift> {
    let mut drift = Vec::new();
    for (map, why) in &kernel.unreadable {
        drift.push(Drift::new(
            format!("map {map}"),
            map,
            format!("could not be read: {why}"),
        ));
    }
    services(intent, kernel, &mut drift);
    backends(intent, kernel, &mut drift);
    pools(intent, kernel, &mut drift);
    vips(intent, kernel, &mut drift);
    vip_filter(intent, kernel, &mut drift);
    local_macs(intent, kernel, &mut drift);
    tables(intent, kernel, &mut drift);
    attachments(intent, kernel, &mut drift);
    drift.sort();
    drift.dedup();
    drift
}

fn services(intent: &Intent, kernel: &KernelView, drift: &mut Vec<Drift>) {
    let map = map_names::SERVICE_BY_VIP;
    for s in &intent.services {
        match kernel.services.get(&s.key) {
            None => drift.push(Drift::new(&s.label, map, "key missing from service_by_vip")),
            Some(have) => {
                let fields = service_fields(&s.value, have);
                if !fields.is_empty() {
                    let problem = format!("service_by_vip value differs: {}", fields.join(", "));
                    drift.push(Drift::new(&s.label, map, problem));
                }
            }
        }
    }
    let owned: HashSet<ServiceKey> = intent.services.iter().map(|s| s.key).collect();
    for (key, value) in &kernel.services {
        if !owned.contains(key) {
            drift.push(Drift::new(
                format!("service_by_vip key {}", key_label(key)),
                map,
                format!(
                    "a key the agent does not own (service id {}, table of {} slots)",
                    value.service_id, value.table_size
                ),
            ));
        }
    }
}

/// `field have (agent: want)` for each field that differs; the generation is bookkeeping
/// that no packet reads, so it is not compared.
fn service_fields(want: &ServiceValue, have: &ServiceValue) -> Vec<String> {
    let mut out = Vec::new();
    differ(&mut out, "service_id", want.service_id, have.service_id);
    differ(
        &mut out,
        "table_offset",
        want.table_offset,
        have.table_offset,
    );
    differ(&mut out, "table_size", want.table_size, have.table_size);
    if want.flags != have.flags {
        out.push(format!(
            "flags {:#x} (agent: {:#x})",
            have.flags, want.flags
        ));
    }
    differ(
        &mut out,
        "persist_timeout_s",
        want.persist_timeout_s,
        have.persist_timeout_s,
    );
    differ(
        &mut out,
        "persist_prefix_len",
        want.persist_prefix_len,
        have.persist_prefix_len,
    );
    out
}

fn differ(out: &mut Vec<String>, name: &str, want: u32, have: u32) {
    if want != have {
        out.push(format!("{name} {have} (agent: {want})"));
    }
}

/// `VIP:PORT/PROTO` (and `vlan N`) of a `service_by_vip` key.
pub fn key_label(key: &ServiceKey) -> String {
    let addr = addr_from_words(&key.addr, key.family);
    let port = port_from_raw(key.port);
    let proto = match key.proto {
        PROTO_TCP => "tcp".to_owned(),
        PROTO_UDP => "udp".to_owned(),
        other => format!("proto {other}"),
    };
    let vlan = match key.vlan {
        0 => String::new(),
        v => format!(" vlan {v}"),
    };
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}/{proto}{vlan}"),
        IpAddr::V6(a) => format!("[{a}]:{port}/{proto}{vlan}"),
    }
}

fn backends(intent: &Intent, kernel: &KernelView, drift: &mut Vec<Drift>) {
    let map = map_names::BACKENDS;
    for (id, b) in &intent.backends {
        let have = kernel.backends.get(id).copied().unwrap_or_default();
        let fields = backend_fields(&b.entry, &have);
        if !fields.is_empty() {
            let problem = format!("backends entry differs: {}", fields.join(", "));
            drift.push(Drift::new(&b.label, map, problem));
        }
    }
    for (id, b) in &intent.backends {
        let have = kernel.owners.get(id).copied().unwrap_or_default();
        if have != b.owner {
            drift.push(Drift::new(
                &b.label,
                map_names::BACKEND_OWNERS,
                "owner record differs: a flow-keeping restart would not know whose backend this id is"
                    .to_owned(),
            ));
        }
    }
    for (id, have) in &kernel.backends {
        if !intent.backends.contains_key(id) && have.flags & BACKEND_F_VALID != 0 {
            drift.push(Drift::new(
                format!("backend id {id}"),
                map,
                format!(
                    "VALID entry (mac {}) for an id the agent does not use",
                    MacAddr(have.mac)
                ),
            ));
        }
    }
}

fn backend_fields(want: &BackendValue, have: &BackendValue) -> Vec<String> {
    let mut out = Vec::new();
    let mac = |m: [u8; 6]| MacAddr(m).to_string();
    if want.mac != have.mac {
        out.push(format!("mac {} (agent: {})", mac(have.mac), mac(want.mac)));
    }
    if want.src_mac != have.src_mac {
        out.push(format!(
            "src_mac {} (agent: {})",
            mac(have.src_mac),
            mac(want.src_mac)
        ));
    }
    differ(&mut out, "ifindex", want.ifindex, have.ifindex);
    if want.flags != have.flags {
        out.push(format!(
            "flags {:#x} (agent: {:#x})",
            have.flags, want.flags
        ));
    }
    differ(&mut out, "epoch", want.epoch, have.epoch);
    out
}

fn pools(intent: &Intent, kernel: &KernelView, drift: &mut Vec<Drift>) {
    let map = map_names::POOLS;
    for p in &intent.pools {
        match kernel.pools.get(&p.id) {
            None => drift.push(Drift::new(&p.label, map, "key missing from pools")),
            Some(have) => {
                let mut fields = Vec::new();
                let want = &p.value;
                differ(&mut fields, "service_id", want.service_id, have.service_id);
                differ(
                    &mut fields,
                    "table_offset",
                    want.table_offset,
                    have.table_offset,
                );
                differ(&mut fields, "table_size", want.table_size, have.table_size);
                if !fields.is_empty() {
                    let problem = format!("pools value differs: {}", fields.join(", "));
                    drift.push(Drift::new(&p.label, map, problem));
                }
            }
        }
    }
    let owned: HashSet<u32> = intent.pools.iter().map(|p| p.id).collect();
    for (id, value) in &kernel.pools {
        if !owned.contains(id) {
            drift.push(Drift::new(
                format!("pool id {id}"),
                map,
                format!(
                    "a key the agent does not own (service id {})",
                    value.service_id
                ),
            ));
        }
    }
}

/// `vips`: every service address, and no other. Only a later fragment without its first
/// reads it: a VIP missing passes such fragments to the host, a stray address drops them.
fn vips(intent: &Intent, kernel: &KernelView, drift: &mut Vec<Drift>) {
    let map = map_names::VIPS;
    for v in &intent.vips {
        if !kernel.vips.contains(&v.key) {
            drift.push(Drift::new(
                &v.label,
                map,
                "missing from vips: later fragments to it whose first was not seen reach the \
                 LB host instead of being dropped",
            ));
        }
    }
    let owned: HashSet<VipKey> = intent.vips.iter().map(|v| v.key).collect();
    for key in &kernel.vips {
        if !owned.contains(key) {
            drift.push(Drift::new(
                format!("vips key {}", addr_from_words(&key.addr, key.family)),
                map,
                "an address no configured service has: later fragments to it whose first was \
                 not seen are dropped instead of reaching the LB host",
            ));
        }
    }
}

/// `vip_filter`: the bit of every service's (VIP, port), and no other. A service's bit
/// missing passes its frames to the host; a stray bit only costs frames to the (address,
/// port) pairs that share it the lookups after the filter.
fn vip_filter(intent: &Intent, kernel: &KernelView, drift: &mut Vec<Drift>) {
    let map = map_names::VIP_FILTER;
    let wanted = crate::dataplane::vip_filter_words(intent.services.iter().map(|s| &s.key));
    let have =
        |bit: usize| kernel.vip_filter_words.get(bit / 64).copied().unwrap_or(0) >> (bit % 64) & 1;
    for s in &intent.services {
        let bit = vip_filter_bit(&s.key.addr, s.key.family, s.key.port) as usize;
        if have(bit) == 0 {
            drift.push(Drift::new(
                &s.label,
                map,
                format!(
                    "bit {bit} missing from vip_filter: its frames are passed to the LB host \
                     instead of balanced"
                ),
            ));
        }
    }
    for (i, want) in wanted.iter().enumerate() {
        let stray = kernel.vip_filter_words.get(i).copied().unwrap_or(0) & !want;
        for bit in (0..64).filter(|bit| stray >> bit & 1 != 0) {
            drift.push(Drift::new(
                format!("vip_filter bit {}", i * 64 + bit),
                map,
                "set, but no configured service has it: frames to the (address, port) pairs \
                 that share it take the lookups after the filter",
            ));
        }
    }
}

/// `local_macs`: each attached interface's MACs (in any order), and no other interface.
fn local_macs(intent: &Intent, kernel: &KernelView, drift: &mut Vec<Drift>) {
    let map = map_names::LOCAL_MACS;
    for (ifindex, want) in &intent.local_macs {
        let Some(have) = kernel.local_macs.get(ifindex) else {
            drift.push(Drift::new(
                &want.label,
                map,
                "key missing from local_macs: frames there are balanced whatever their \
                 destination MAC (promiscuous or flooded ones too)",
            ));
            continue;
        };
        let have = macs_of(have);
        let mut wanted = want.macs.clone();
        wanted.sort();
        if have != wanted {
            drift.push(Drift::new(
                &want.label,
                map,
                format!(
                    "local_macs differ: {} (agent: {})",
                    mac_list(&have),
                    mac_list(&wanted)
                ),
            ));
        }
    }
    for (ifindex, value) in &kernel.local_macs {
        if !intent.local_macs.contains_key(ifindex) {
            drift.push(Drift::new(
                format!("local_macs key {ifindex}"),
                map,
                format!(
                    "an interface the agent does not register ({})",
                    mac_list(&macs_of(value))
                ),
            ));
        }
    }
}

/// The MACs of a `local_macs` value, sorted (a count beyond the slots reads as all of them).
fn macs_of(value: &LocalMacs) -> Vec<MacAddr> {
    let count = (value.count as usize).min(MAX_LOCAL_MACS);
    let mut macs: Vec<MacAddr> = value.macs[..count]
        .iter()
        .map(|word| {
            let b = word.to_le_bytes();
            MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]])
        })
        .collect();
    macs.sort();
    macs
}

fn mac_list(macs: &[MacAddr]) -> String {
    if macs.is_empty() {
        return "none".to_owned();
    }
    macs.iter()
        .map(MacAddr::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn tables(intent: &Intent, kernel: &KernelView, drift: &mut Vec<Drift>) {
    let map = map_names::MAGLEV_TABLES;
    for t in &intent.tables {
        let have = match kernel.tables.get(&t.offset) {
            Some(Ok(have)) => have,
            Some(Err(why)) => {
                drift.push(Drift::new(
                    &t.label,
                    map,
                    format!("could not be read: {why}"),
                ));
                continue;
            }
            None => {
                drift.push(Drift::new(&t.label, map, "was not read"));
                continue;
            }
        };
        let mut foreign = false;
        for (id, slots) in &have.slots_by_id {
            if t.expected.slots_by_id.contains_key(id) {
                continue;
            }
            foreign = true;
            let who = match intent.backends.get(id) {
                Some(b) => format!("{}, which is not a usable server of this table", b.label),
                None => format!("backend id {id}, which the agent does not use"),
            };
            drift.push(Drift::new(
                &t.label,
                map,
                format!("{slots} slot(s) name {who}"),
            ));
        }
        if !foreign && have.hash != t.expected.hash {
            drift.push(Drift::new(
                &t.label,
                map,
                format!(
                    "the {} slots differ from the table the agent computed ({})",
                    t.size,
                    count_changes(&t.expected, have)
                ),
            ));
        }
    }
}

/// How the per-backend slot counts differ, e.g. `id 3: 120 slots (agent: 100)`, or that
/// the counts agree and only the order differs.
fn count_changes(want: &TableDigest, have: &TableDigest) -> String {
    let changed: Vec<String> = want
        .slots_by_id
        .iter()
        .filter_map(|(id, w)| {
            let h = have.slots_by_id.get(id).copied().unwrap_or(0);
            (h != *w).then(|| format!("id {id}: {h} slots (agent: {w})"))
        })
        .collect();
    if changed.is_empty() {
        "same slots per backend, in another order".to_owned()
    } else {
        changed.join(", ")
    }
}

fn attachments(intent: &Intent, kernel: &KernelView, drift: &mut Vec<Drift>) {
    let Some(ours) = kernel.program_id else {
        if !intent.interfaces.is_empty() {
            drift.push(Drift::new(
                "program xdp_lb",
                "xdp",
                "the id of the agent's program could not be read",
            ));
        }
        return;
    };
    for ifname in &intent.interfaces {
        let subject = format!("interface {ifname}");
        let unknown = Attached::Unknown("not read".to_owned());
        let attachment = kernel.interfaces.get(ifname);
        let xdp = attachment.map_or(&unknown, |a| &a.xdp);
        match xdp {
            Attached::Program(id) if *id == ours => {}
            Attached::Program(id) => drift.push(Drift::new(
                &subject,
                "xdp",
                format!("XDP program id {id} is attached, not the agent's (id {ours})"),
            )),
            Attached::Nothing => drift.push(Drift::new(
                &subject,
                "xdp",
                "the agent's XDP program is not attached",
            )),
            Attached::Unknown(why) => drift.push(Drift::new(
                &subject,
                "xdp",
                format!("its XDP program could not be read: {why}"),
            )),
        }
        if !intent.pinned {
            continue;
        }
        match attachment.and_then(|a| a.pinned_link.as_ref()) {
            Some(Attached::Program(id)) if *id == ours => {}
            Some(Attached::Program(id)) => drift.push(Drift::new(
                &subject,
                "links",
                format!("its pinned link runs program id {id}, not the agent's (id {ours})"),
            )),
            Some(Attached::Nothing) => {
                drift.push(Drift::new(&subject, "links", "its pinned link is missing"))
            }
            Some(Attached::Unknown(why)) => drift.push(Drift::new(
                &subject,
                "links",
                format!("its pinned link could not be read: {why}"),
            )),
            None => drift.push(Drift::new(
                &subject,
                "links",
                "its pinned link was not read",
            )),
        }
    }
}
