//! Every map key, value, capacity and flag the xdp-lb data plane and agent share.
//!
//! The data plane (`xdp-lb-ebpf`) and the agent (`xdp-lb`) both compile this crate, so the
//! two sides agree on one definition of each `#[repr(C)]` type. The `user` feature adds
//! `aya::Pod` for the agent.
#![no_std]

pub mod flow_hash;

pub use flow_hash::{
    addr_from_words, addr_words, flow_hash, flow_hash_v4, flow_hash_v6, port_from_raw, port_raw,
    source_hash,
};

/// Entries of `service_by_vip` (and the stats slots a service can own).
pub const MAX_SERVICES: u32 = 1024;
/// Entries of `backends` (and of `backend_stats`): backend ids are indices below this.
pub const MAX_BACKENDS: u32 = 16384;

/// Entries of `tx_ports`, the devmap for backends behind another interface.
pub const MAX_TX_PORTS: u32 = 64;
/// Entries of `pools`: pool ids are below this. Id 0 is never in the map (see
/// [`POOL_ID_DEFAULT`]).
pub const MAX_POOLS: u32 = 4096;
/// The pool id of a service's own backends (its default pool): their table is the one its
/// `service_by_vip` value names, so a rule to this id uses that.
pub const POOL_ID_DEFAULT: u32 = 0;
/// Entries of `client_rules` (longest-prefix rules of every service together).
pub const MAX_CLIENT_RULES: u32 = 65536;
/// Bits of a `client_rules` key taken by the service id, ahead of the client address: the
/// rule for a client prefix of length L has prefix length `CLIENT_RULE_SERVICE_BITS + L`,
/// so it only ever matches clients of its own service.
pub const CLIENT_RULE_SERVICE_BITS: u32 = 32;

/// Entries of `flows` (the connection table) when the config does not say.
pub const FLOW_TABLE_DEFAULT_SIZE: u32 = 1 << 18;
/// Entries of `persistence` (client -> backend, for services with `persistence`).
pub const PERSIST_TABLE_SIZE: u32 = 1 << 18;
/// A TCP flow with no packet for this long is forgotten (IPVS's default `tcp` timeout).
pub const FLOW_TCP_TIMEOUT_DEFAULT_S: u32 = 900;
/// A UDP flow with no packet for this long is forgotten (IPVS's default `udp` timeout).
pub const FLOW_UDP_TIMEOUT_DEFAULT_S: u32 = 300;
/// A TCP flow that sent a FIN is forgotten after this long without a packet (IPVS's
/// `fin_wait`): the rest of its close needs the entry, a closed flow must not crowd out
/// live ones.
pub const FLOW_TCP_FIN_TIMEOUT_DEFAULT_S: u32 = 120;
/// A TCP flow that sent a RST is forgotten after this long without a packet (IPVS's
/// `close`).
pub const FLOW_TCP_CLOSE_TIMEOUT_DEFAULT_S: u32 = 10;
/// A flow's last-seen time is rewritten at most this often (ns): timeouts are coarse, and
/// fewer writes keep the entry's cache line from bouncing between CPUs.
pub const FLOW_TOUCH_INTERVAL_NS: u64 = 1_000_000_000;
/// Map flag (linux/bpf.h): an LRU hash with per-CPU LRU lists instead of one shared list.
/// Earlier versions made `flows` with it; every insert then rotates the CPU's lists
/// (about 250 ns more per new flow, docs/perf/README.md), and each CPU holds only its share.
pub const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;
/// Flags of `flows`: one LRU list shared by all CPUs (no `BPF_F_NO_COMMON_LRU`). An agent
/// adopting a pinned table of other flags or size moves its live flows into a new one.
pub const FLOW_TABLE_FLAGS: u32 = 0;

/// Maglev table size used when a service does not set one (prime, as the paper asks).
pub const MAGLEV_DEFAULT_SIZE: u32 = 65537;
/// Largest Maglev table one service may have (prime).
pub const MAGLEV_MAX_SIZE: u32 = 655373;
/// Smallest Maglev table one service may have (prime); smaller tables spread badly.
pub const MAGLEV_MIN_SIZE: u32 = 251;

/// Bytes one slot of `maglev_tables` takes in the mmap-ed view of the map: the kernel
/// rounds the value size of an `BPF_F_MMAPABLE` array up to 8.
pub const MAGLEV_SLOT_STRIDE: usize = 8;

/// Map flag (linux/bpf.h): the array can be mmap-ed, so a whole table is written with one
/// memcpy instead of one syscall per slot.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Largest weight a backend may have; 0 means "takes no new flows".
pub const MAX_WEIGHT: u32 = 1000;

/// Address family tags stored in [`ServiceKey::family`].
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// IP protocol numbers stored in [`ServiceKey::proto`].
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Service flag: with no backend available, pass the frame to the LB host's stack instead of
/// dropping it.
pub const SERVICE_F_PASS_WHEN_EMPTY: u32 = 1 << 0;
/// Service flag: pick backends by the client address alone (`hash: source`, like IPVS `sh`)
/// instead of the whole 5-tuple.
pub const SERVICE_F_HASH_SOURCE: u32 = 1 << 1;
/// Service flag: the service has client rules, so a new flow looks its client up in
/// `client_rules` (services without rules never pay for that lookup).
pub const SERVICE_F_HAS_RULES: u32 = 1 << 2;

/// [`ClientRuleValue::action`]: clients matching the rule go to its pool.
pub const CLIENT_ACTION_POOL: u32 = 0;
/// [`ClientRuleValue::action`]: clients matching the rule are refused (dropped).
pub const CLIENT_ACTION_DROP: u32 = 1;

/// Largest 802.1Q VLAN id.
pub const MAX_VLAN_ID: u16 = 4094;

/// Backend flag: the entry holds a resolved MAC and may receive frames of the flows placed
/// on it. Flows whose backend lost it are balanced afresh.
pub const BACKEND_F_VALID: u32 = 1 << 0;
/// Backend flag: the backend takes no new connection (drained, or down with its flows
/// kept). Its established flows stay; a TCP SYN whose 5-tuple still names it, and a new flow
/// whose client's persistence entry names it, are placed afresh.
pub const BACKEND_F_NO_NEW: u32 = 1 << 1;

/// Lowest bit of the backend's VLAN id in [`BackendValue::flags`]: bits 16..28 hold the VID
/// the frame's outer tag is rewritten to for this backend (its PCP and DEI kept); 0 leaves
/// the tag as it came. Kept in `flags`, whose upper bits were always zero, so the entry's
/// layout (and a pinned data plane of an earlier version) stays as it was.
pub const BACKEND_VLAN_SHIFT: u32 = 16;
/// The bits of [`BackendValue::flags`] holding the backend's VLAN id.
pub const BACKEND_VLAN_MASK: u32 = 0x0fff << BACKEND_VLAN_SHIFT;

impl BackendValue {
    /// The VLAN id the frame's outer tag gets for this backend; 0: the tag is kept.
    #[inline(always)]
    pub fn vlan(&self) -> u16 {
        ((self.flags & BACKEND_VLAN_MASK) >> BACKEND_VLAN_SHIFT) as u16
    }
}

/// The `BackendValue::flags` bits for a backend on VLAN `vlan` (0: keep the frame's tag).
#[inline(always)]
pub fn backend_vlan_flags(vlan: u16) -> u32 {
    (u32::from(vlan) << BACKEND_VLAN_SHIFT) & BACKEND_VLAN_MASK
}

/// [`BackendOwner::flags`]: the owner's health checks last said the backend is up.
pub const OWNER_F_HEALTHY: u32 = 1 << 0;

/// Key of `service_by_vip`: one (VIP, port, protocol).
///
/// `addr` holds the address bytes as they stand in the packet, read as native-endian words;
/// an IPv4 VIP uses `addr[0]` and leaves the rest zero. `port` likewise holds the two
/// network-order bytes of the port read as a native `u16`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub addr: [u32; 4],
    pub port: u16,
    pub proto: u8,
    pub family: u8,
    /// The frame's outer 802.1Q/802.1ad VLAN id for a service bound to one VLAN; 0 for a
    /// service that takes its (VIP, port, protocol) on any VLAN or untagged.
    pub vlan: u16,
    pub _pad: u16,
}

impl ServiceKey {
    /// The key of the service at `vip`:`port` with IP protocol `proto`.
    pub fn new(vip: core::net::IpAddr, port: u16, proto: u8) -> Self {
        Self {
            addr: addr_words(vip),
            port: port_raw(port),
            proto,
            family: if vip.is_ipv4() {
                FAMILY_IPV4
            } else {
                FAMILY_IPV6
            },
            vlan: 0,
            _pad: 0,
        }
    }

    /// The same key, bound to one VLAN id (0: any VLAN).
    pub fn on_vlan(self, vlan: u16) -> Self {
        Self { vlan, ..self }
    }
}

/// Value of `service_by_vip`: where the service's live Maglev table is.
///
/// The agent writes a new table into the service's inactive region of `maglev_tables` and
/// then replaces this whole value (a single hash-map update, atomic for readers), so a packet
/// sees either the old table or the new one, never a half-written one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Index into `service_stats`.
    pub service_id: u32,
    /// First slot of the live table in `maglev_tables`.
    pub table_offset: u32,
    /// Slots in the live table (prime M); 0 when no backend is available.
    pub table_size: u32,
    /// `SERVICE_F_*`.
    pub flags: u32,
    /// Bumped on every table switch, for the agent's bookkeeping and status.
    pub generation: u32,
    /// Client persistence (`ipvsadm -p`): seconds a client stays on its backend after its
    /// last packet; 0 = off.
    pub persist_timeout_s: u32,
    /// Client persistence granularity: the client address is masked to this many bits
    /// (32 or 128 = one address).
    pub persist_prefix_len: u32,
}

/// Slots per CPU of `service_cache` (a power of two; 18 KiB a CPU): direct-mapped, so two
/// services sharing a slot take turns in it, each new flow of one then paying the lookup.
pub const SERVICE_CACHE_SLOTS: u32 = 256;

/// A slot of `service_cache`: one CPU's copy of what `service_by_vip` answered for `key`
/// (the frame's VLAN; the value may be the any-VLAN service's), valid while `epoch` is
/// `service_epoch[0]`. The agent bumps that word after every change to `service_by_vip`, so
/// a packet that starts after the bump reads the new value, as it would from the hash map.
/// A hash-map lookup costs a new flow several helper calls (on CPUs with return-thunk
/// mitigations, ~100 ns: docs/perf/README.md); a hit here costs a few loads of a line the
/// CPU keeps warm.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCacheEntry {
    /// Even while the slot is whole, odd while its CPU writes it: a program run that
    /// interrupts the write on the same CPU (a test run's, or generic XDP's) does not read
    /// the slot, and a reader whose copy a nested write overlapped sees `seq` move.
    pub seq: u32,
    pub _pad: u32,
    /// `service_epoch[0]` read (with a full barrier) before the lookup that filled the slot.
    pub epoch: u64,
    pub key: ServiceKey,
    pub value: ServiceValue,
}

/// The `service_cache` slot of a service key.
#[inline(always)]
pub fn service_cache_slot(key: &ServiceKey) -> u32 {
    (vip_filter_bit(&key.addr, key.family, key.port) ^ u32::from(key.proto) ^ u32::from(key.vlan))
        & (SERVICE_CACHE_SLOTS - 1)
}

/// Value of `backends`, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendValue {
    /// Destination MAC written into frames for this backend.
    pub mac: [u8; 6],
    /// Source MAC written into frames: the LB's own interface towards the backend.
    pub src_mac: [u8; 6],
    /// Interface the backend is reached through; frames leave there (XDP_TX when it is the
    /// ingress interface, XDP_REDIRECT through `tx_ports` otherwise).
    pub ifindex: u32,
    /// `BACKEND_F_*` in the low bits; the backend's VLAN id in bits 16..28
    /// (`BACKEND_VLAN_SHIFT`).
    pub flags: u32,
    /// Changes whenever the id is given to another backend, so a flow remembered for the
    /// old one is not sent to the new one.
    pub epoch: u32,
}

/// Value of `backend_owners`, indexed by backend id: whose backend the id is. Only the agent
/// reads it (the data plane never does): a new agent taking over a pinned data plane learns
/// from it which (service, address) each live id and epoch belongs to, so live flows keep
/// their backends even when the earlier agent's snapshot file is missing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendOwner {
    /// The service's key (its listener); all zero for an unused id.
    pub service: ServiceKey,
    /// The backend's address words (see `ServiceKey` for the byte order).
    pub addr: [u32; 4],
    /// `OWNER_F_*`.
    pub flags: u32,
}

/// Key of `flows`: a flow's 5-tuple as the packet has it (see `ServiceKey` for the byte
/// order of `src`, `dst`); IPv4 uses word 0 of each address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Source port's raw bytes in the low half, destination port's in the high half.
    pub ports: u32,
    pub proto: u8,
    pub family: u8,
    /// The frame's outer VLAN id (0 untagged): one 5-tuple on two VLANs is two flows.
    pub vlan: u16,
}

impl FlowKey {
    /// The key of a flow from `client` to the service at `vip` with IP protocol `proto`,
    /// on outer VLAN `vlan` (0: untagged, or a service on any VLAN). The two addresses
    /// are of one family.
    pub fn new(
        client: core::net::SocketAddr,
        vip: core::net::SocketAddr,
        proto: u8,
        vlan: u16,
    ) -> Self {
        let service = ServiceKey::new(vip.ip(), vip.port(), proto);
        Self {
            src: addr_words(client.ip()),
            dst: service.addr,
            ports: flow_hash::ports_word(port_raw(client.port()), service.port),
            proto,
            family: service.family,
            vlan,
        }
    }
}

/// Value of `flows`: the backend a flow was given, and when it was last seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub backend_id: u32,
    /// `BackendValue::epoch` when the flow was placed.
    pub backend_epoch: u32,
    /// The service it belongs to (its stats slot): a connection-table hit needs no
    /// service lookup. Valid while the backend is (a removed service's backends are
    /// invalidated).
    pub service_id: u32,
    /// `FLOW_F_*`: how far the connection has closed, which picks its idle timeout. (The
    /// field was padding before; older entries hold 0, an open flow.)
    pub flags: u32,
    /// `bpf_ktime_get_ns()` of the last packet (refreshed at most every
    /// `FLOW_TOUCH_INTERVAL_NS`).
    pub last_seen_ns: u64,
}

/// A connection-table entry the data plane just made, handed to the agent through
/// `flow_events` for flow-state sync (`sync:`) while `sync_on` is set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    pub key: FlowKey,
    pub backend_id: u32,
    pub service_id: u32,
    /// `FLOW_F_*` of the new entry.
    pub flags: u32,
    pub _pad: u32,
}

/// Size of the `flow_events` ring buffer in bytes (a power of two): 16,384 events of 56
/// bytes plus the ring's 8-byte headers, a quarter second of 64,000 new flows per second;
/// the agent reads it every 10 ms.
pub const FLOW_EVENTS_BYTES: u32 = 1 << 20;

/// [`FlowValue::flags`]: the client sent a FIN; the entry lives `tcp_fin_timeout` idle.
pub const FLOW_F_FIN: u32 = 1 << 0;
/// [`FlowValue::flags`]: the client sent a RST; the entry lives `tcp_close_timeout` idle.
pub const FLOW_F_RST: u32 = 1 << 1;
/// [`FlowValue::flags`]: the entry was learnt from another LB (flow-state sync) and this
/// LB has not forwarded a packet of it since (the data plane clears it at the flow's next
/// packet here). The agent's refresh only tells its peers about entries without it: a
/// flow is told by the LB that carries it.
pub const FLOW_F_LEARNT: u32 = 1 << 2;

/// Key of `persistence`: a service, the pool the client was placed in and the (masked)
/// client address. The pool is part of the key so that a client moved to another pool by a
/// rule change is placed afresh there, instead of following its old pool's server.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PersistKey {
    pub client: [u32; 4],
    pub service_id: u32,
    pub pool_id: u32,
}

/// The data of a `client_rules` key (an LPM trie; the kernel's key is this behind a `u32`
/// prefix length). The trie matches bits in memory order, so the service id comes first and
/// every rule's prefix length covers it whole (`CLIENT_RULE_SERVICE_BITS` + the client
/// prefix length): a rule only matches its own service's clients, and within a service the
/// longest client prefix wins. `addr` is the client address in network byte order (an IPv4
/// address in its first four bytes, the rest zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientRuleKey {
    /// The service's id, native byte order (it is always matched whole).
    pub service_id: u32,
    pub addr: [u8; 16],
}

impl ClientRuleKey {
    /// The key data for a client of `service_id` whose address words are `words` (see
    /// `ServiceKey` for the word order: the packet's bytes read as native words).
    #[inline(always)]
    pub fn from_words(service_id: u32, words: &[u32; 4]) -> Self {
        let mut addr = [0u8; 16];
        let mut i = 0;
        while i < 4 {
            let b = words[i].to_ne_bytes();
            addr[i * 4] = b[0];
            addr[i * 4 + 1] = b[1];
            addr[i * 4 + 2] = b[2];
            addr[i * 4 + 3] = b[3];
            i += 1;
        }
        Self { service_id, addr }
    }

    /// The key data for `client` (an address or a prefix's first address) of `service_id`.
    pub fn new(service_id: u32, client: core::net::IpAddr) -> Self {
        Self::from_words(service_id, &addr_words(client))
    }
}

/// Value of `client_rules`: what happens to the clients a rule matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientRuleValue {
    /// The pool new flows of these clients are placed in (`POOL_ID_DEFAULT`: the service's
    /// own backends); meaningful with `CLIENT_ACTION_POOL`.
    pub pool_id: u32,
    /// `CLIENT_ACTION_*`.
    pub action: u32,
}

/// Value of `pools`, keyed by pool id: where a named pool's live Maglev table is. Switched
/// like a service's table: the new table is written into the pool's other region, then this
/// whole value is replaced (a hash-map update, atomic for readers).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolValue {
    /// First slot of the live table in `maglev_tables`.
    pub table_offset: u32,
    /// Slots in the live table (prime M); 0 while no backend of the pool is usable.
    pub table_size: u32,
    /// The service that owns the pool: a rule is only followed to a pool of its own service.
    pub service_id: u32,
    /// Bumped on every table switch of the pool, for the agent's bookkeeping and status.
    pub generation: u32,
}

/// Entries of `verdict_stats`: room beyond `verdict::COUNT`, so a new verdict does not
/// change the map's layout (a pinned data plane stays adoptable across upgrades).
pub const VERDICT_STATS_SLOTS: u32 = 32;
/// Entries of `flow_stats`, with room beyond `flow_stat::COUNT` for the same reason.
pub const FLOW_STATS_SLOTS: u32 = 16;

/// Slots of `flow_stats`: what the connection table did.
pub mod flow_stat {
    /// A packet of a known flow went to its remembered backend.
    pub const HIT: u32 = 0;
    /// A flow's first packet (or first after it expired): a backend was chosen and remembered.
    pub const NEW: u32 = 1;
    /// A remembered flow whose backend was withdrawn or replaced, or a new connection (a TCP
    /// SYN, or a persistent client's new flow) whose remembered backend takes no new ones
    /// (drained or down): chosen afresh.
    pub const STALE: u32 = 2;
    /// A TCP packet without SYN that found no entry: a connection's handshake-completing
    /// ACK (its entry is created then), or a flow whose entry was evicted under pressure
    /// (or that began before this table existed).
    pub const TCP_MISS_NO_SYN: u32 = 3;
    /// A new flow sent to its client's persistent backend.
    pub const PERSIST_HIT: u32 = 4;
    /// A remembered flow idle past its timeout: chosen afresh.
    pub const EXPIRED: u32 = 5;
    /// A TCP SYN with no usable entry, sent where the table says and not remembered: the
    /// entry waits for the handshake's ACK, so a flood of spoofed SYNs evicts nothing.
    pub const SYN_NOT_REMEMBERED: u32 = 6;
    /// A flow's entry switched to its short timeout by the client's FIN or RST.
    pub const CLOSED: u32 = 7;
    /// A new entry handed to the agent for flow-state sync (`sync:` on).
    pub const SYNC_QUEUED: u32 = 8;
    /// A new entry not handed to the agent: its ring buffer was full (the agent's periodic
    /// refresh still sends the entry to the peers).
    pub const SYNC_RING_FULL: u32 = 9;
    /// A TCP SYN (or RST) the flow filter showed to have no entry: the connection table
    /// was not looked up (see `FLOW_FILTER_OFF`).
    pub const FILTER_SKIP: u32 = 10;
    pub const COUNT: u32 = 11;
    pub const NAMES: [&str; COUNT as usize] = [
        "hit",
        "new",
        "stale",
        "tcp_miss_no_syn",
        "persist_hit",
        "expired",
        "syn_not_remembered",
        "closed",
        "sync_queued",
        "sync_ring_full",
        "filter_skip",
    ];
}

/// One per-CPU packet/byte counter pair (`service_stats`, `backend_stats`, `verdict_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Slots of `verdict_stats`: what happened to a frame, and why.
pub mod verdict {
    /// Sent back out of the ingress interface to a backend.
    pub const TX: u32 = 0;
    /// Redirected to a backend behind another interface.
    pub const REDIRECT: u32 = 1;
    /// Passed: not IP, not TCP/UDP, or no service at its (VIP, port, protocol).
    pub const PASS_NOT_SERVICE: u32 = 2;
    /// Passed: the frame is shorter than its headers claim, or a header is invalid.
    pub const PASS_MALFORMED: u32 = 3;
    /// Passed: an IP fragment not to a VIP (the host's own traffic), or an IPv6 fragment
    /// whose first fragment does not carry TCP or UDP right after the fragment header.
    pub const PASS_FRAGMENT: u32 = 4;
    /// Passed: a service with no backend available, configured to pass.
    pub const PASS_NO_BACKEND: u32 = 5;
    /// Dropped: a service with no backend available, configured to drop (the default).
    pub const DROP_NO_BACKEND: u32 = 6;
    /// Passed: the redirect target could not be used.
    pub const PASS_REDIRECT_FAILED: u32 = 7;
    /// Dropped: the client matches a `drop` client rule of the service.
    pub const DROP_CLIENT_RULE: u32 = 8;
    /// Sent to a backend: an ICMPv4 "fragmentation needed" or ICMPv6 "packet too big" about
    /// a packet a backend sent from a VIP (path MTU discovery), to the backend owning the
    /// client's flow.
    pub const ICMP_TOO_BIG_FORWARDED: u32 = 9;
    /// Sent to a backend: another ICMP(v6) destination-unreachable about a service's packet.
    pub const ICMP_UNREACHABLE_FORWARDED: u32 = 10;
    /// Passed: an ICMP error whose embedded packet is not a service's (or whose service has
    /// no backend to tell); the host may own the address it is about.
    pub const PASS_ICMP_NOT_SERVICE: u32 = 11;
    /// Passed: an ICMP error whose embedded packet is shorter than its IP header and 8
    /// bytes of L4 header (no ports to find the flow by).
    pub const PASS_ICMP_TRUNCATED: u32 = 12;
    /// Sent to a backend: the first fragment of a service's packet, balanced by its ports
    /// (its backend is remembered in `fragments` for the later ones).
    pub const FRAGMENT_FIRST_FORWARDED: u32 = 13;
    /// Sent to a backend: a later fragment, to the backend its first fragment went to.
    pub const FRAGMENT_LATER_FORWARDED: u32 = 14;
    /// Dropped: a later fragment to a VIP whose first fragment was not seen (it comes late,
    /// or its entry expired): no backend is known, and the host must not get it.
    pub const DROP_FRAGMENT_UNKNOWN: u32 = 15;
    /// Passed: the destination MAC is not one of the receiving interface's own (a frame
    /// seen in promiscuous mode, or flooded unknown unicast): it is not addressed to the LB.
    pub const PASS_NOT_OUR_MAC: u32 = 16;
    /// Number of slots.
    pub const COUNT: u32 = 17;

    /// Names of the slots, in slot order, for status and metrics.
    pub const NAMES: [&str; COUNT as usize] = [
        "tx",
        "redirect",
        "pass_not_service",
        "pass_malformed",
        "pass_fragment",
        "pass_no_backend",
        "drop_no_backend",
        "pass_redirect_failed",
        "drop_client_rule",
        "icmp_too_big_forwarded",
        "icmp_unreachable_forwarded",
        "pass_icmp_not_service",
        "pass_icmp_truncated",
        "fragment_first_forwarded",
        "fragment_later_forwarded",
        "drop_fragment_unknown",
        "pass_not_our_mac",
    ];
}

/// Entries of `fragments` (IP datagram -> the backend its first fragment went to).
pub const FRAGMENT_TABLE_SIZE: u32 = 8192;
/// A `fragments` entry is used this long after its first fragment (ns): a datagram's
/// fragments arrive within milliseconds, and an IP id is reused soon on a busy path.
pub const FRAGMENT_TIMEOUT_NS: u64 = 2_000_000_000;
/// Entries of `vips` (distinct service addresses).
pub const MAX_VIPS: u32 = MAX_SERVICES;
/// Words of `vip_filter`: one bit per [`vip_filter_bit`] value, 64 a word (65536 bits, so
/// 1024 services set at most 1/64 of them).
pub const VIP_FILTER_WORDS: u32 = 65536 / 64;

/// The `vip_filter` bit of a service's (address, port) as `ServiceKey` holds them (address
/// words and port as in the packet): folded into one word and spread by a multiplicative
/// (Fibonacci) hash, top 16 bits. Two pairs may share a bit; a frame whose (destination
/// address, port) has its bit clear is certainly no service's.
#[inline(always)]
pub fn vip_filter_bit(addr: &[u32; 4], family: u8, port: u16) -> u32 {
    let folded = addr[0] ^ addr[1] ^ addr[2] ^ addr[3] ^ (u32::from(port) << 8) ^ u32::from(family);
    folded.wrapping_mul(0x9e37_79b1) >> 16
}

/// The flow filter: a table of one-byte slots in front of the connection table, one slot
/// per hash of a 5-tuple, set for every entry the table holds, so that a TCP SYN (or RST)
/// whose slot is clear (a new connection's first packet, a spoofed SYN) skips the table's
/// lookup, whose miss costs a random cache line and TLB entry of a large table. Two halves
/// of `flow_filter_slots(size)` slots in `flow_filter`, interleaved (byte `2s + h` is slot
/// `s` of half `h`): every entry made sets its slot in both with one plain two-byte store
/// (bytes, not bits: a store of a byte loses no other, where setting a bit takes an atomic
/// read-modify-write that stalls the packet), the packet path reads the half
/// `flow_filter_on[0]` names (1 or 2; 0: off, every packet looks the table up), and the
/// agent renews the other one from a walk of the table before it switches halves. A set
/// slot only ever makes a packet look the table up for nothing; a clear one is a promise.
pub const FLOW_FILTER_OFF: u32 = 0;
/// Slots per entry of the connection table in each half of the filter: at a full table
/// about one SYN of an unknown flow in three still looks the table up.
pub const FLOW_FILTER_SLOTS_PER_ENTRY: u32 = 2;
/// The byte a set slot holds, and the two-byte store that sets a slot in both halves.
pub const FLOW_FILTER_SET: u8 = 1;
pub const FLOW_FILTER_SET_BOTH: u16 = 0x0101;

/// Slots of each half of the flow filter for a connection table of `size` entries: a power
/// of two, at least 64 K.
pub const fn flow_filter_slots(size: u32) -> u32 {
    let wanted = (size as u64 * FLOW_FILTER_SLOTS_PER_ENTRY as u64).next_power_of_two();
    let wanted = if wanted < (1 << 16) { 1 << 16 } else { wanted };
    if wanted > (1 << 30) {
        1 << 30
    } else {
        wanted as u32
    }
}

/// The flow filter's slot of a 5-tuple (the connection table's key, without its VLAN) in a
/// half of `slots` slots (a power of two), from the flow hash under its own seed.
#[inline(always)]
pub fn flow_filter_slot(key: &FlowKey, seed: u32, slots: u32) -> u32 {
    let seed = seed ^ FLOW_FILTER_SEED_SALT;
    let hash = if key.family == FAMILY_IPV4 {
        flow_hash_v4(key.src[0], key.dst[0], key.ports, key.proto, seed)
    } else {
        flow_hash_v6(&key.src, &key.dst, key.ports, key.proto, seed)
    };
    hash & (slots - 1)
}

/// Mixed into the flow-hash seed for the filter, so its slots do not follow Maglev's.
pub const FLOW_FILTER_SEED_SALT: u32 = 0x7f4a_7c15;

/// Entries of `local_macs` (interfaces the program is attached to).
pub const MAX_LOCAL_INTERFACES: u32 = 64;
/// MACs one interface may own in `local_macs` (its own, and its VLAN devices' when they
/// differ).
pub const MAX_LOCAL_MACS: usize = 4;
/// Interfaces whose MACs sit in `local_macs_ix`, the array indexed by ifindex that the
/// packet path reads without hashing a key: ifindex 0 to this − 1. A larger ifindex has its
/// entry in the hash map `local_macs` instead; each interface is in exactly one of the two.
pub const LOCAL_MACS_IX_SLOTS: u32 = 4096;
/// An empty slot of an [`IfindexMacs`]: a MAC word's top two bytes are zero, so this one
/// never equals a frame's destination.
pub const NO_MAC_WORD: u64 = u64::MAX;

/// Key of `fragments`: one IP datagram, as RFC 791/8200 identify it (source, destination,
/// protocol, identification), and the frame's outer VLAN id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// The IPv4 (16-bit) or IPv6 (32-bit) identification, as read from the packet.
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    pub vlan: u16,
}

/// Key of `vips`: a service address (any port, protocol or VLAN), so a later fragment,
/// which has no ports, can tell a VIP's datagram from the host's own.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub addr: [u32; 4],
    pub family: u8,
    pub _pad: [u8; 3],
}

/// Value of `local_macs`, keyed by ifindex: the destination MACs frames addressed to the
/// LB carry on that interface, each as [`mac_word`] makes it (one 8-byte compare on the
/// packet path).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalMacs {
    pub count: u32,
    pub _pad: u32,
    pub macs: [u64; MAX_LOCAL_MACS],
}

/// Value of `local_macs_ix` at an interface's ifindex: as [`LocalMacs`], for the packet
/// path's array read. The agent writes it through an mmap of the map one aligned word at a
/// time, so a frame read during a change sees each word old or new, never torn: a MAC moves
/// only between a slot and [`NO_MAC_WORD`] (never straight to another MAC), and `checked`
/// is set only once every MAC is in its slot and cleared first when the interface goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfindexMacs {
    /// 0: the interface is not registered, and frames there are not checked.
    pub checked: u32,
    pub _pad: u32,
    /// [`mac_word`]s in any slot; the other slots hold [`NO_MAC_WORD`].
    pub macs: [u64; MAX_LOCAL_MACS],
}

/// Bytes one `local_macs_ix` value takes in the map's mmap-ed view (a multiple of 8).
pub const IFINDEX_MACS_STRIDE: usize = core::mem::size_of::<IfindexMacs>();

/// A MAC as the data plane compares it: its six bytes, then two zero bytes, read as a
/// little-endian word (BPF's byte order on every host xdp-lb runs on).
#[inline(always)]
pub fn mac_word(mac: [u8; 6]) -> u64 {
    u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0])
}

/// Map names, shared so the agent and tests never spell them twice.
pub mod map_names {
    pub const SERVICE_BY_VIP: &str = "service_by_vip";
    pub const MAGLEV_TABLES: &str = "maglev_tables";
    pub const BACKENDS: &str = "backends";
    pub const BACKEND_OWNERS: &str = "backend_owners";
    pub const TX_PORTS: &str = "tx_ports";
    pub const SERVICE_STATS: &str = "service_stats";
    pub const BACKEND_STATS: &str = "backend_stats";
    pub const VERDICT_STATS: &str = "verdict_stats";
    pub const FLOWS: &str = "flows";
    /// A port bitmap the data plane no longer has (`vip_filter`, keyed by (VIP, port),
    /// settles what it did): an agent adopting an older one's pins removes its pin.
    pub const RETIRED_SERVICE_PORTS: &str = "service_ports";
    pub const PERSISTENCE: &str = "persistence";
    pub const FLOW_STATS: &str = "flow_stats";
    pub const POOLS: &str = "pools";
    pub const CLIENT_RULES: &str = "client_rules";
    pub const FRAGMENTS: &str = "fragments";
    pub const VIPS: &str = "vips";
    pub const VIP_FILTER: &str = "vip_filter";
    pub const LOCAL_MACS: &str = "local_macs";
    pub const LOCAL_MACS_IX: &str = "local_macs_ix";
    pub const FLOW_EVENTS: &str = "flow_events";
    pub const SYNC_ON: &str = "sync_on";
    pub const FLOW_FILTER: &str = "flow_filter";
    pub const FLOW_FILTER_ON: &str = "flow_filter_on";
    pub const SERVICE_EPOCH: &str = "service_epoch";
}

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "xdp_lb";
/// Name of the global holding the flow-hash seed, set by the agent at load time.
pub const FLOW_HASH_SEED_GLOBAL: &str = "FLOW_HASH_SEED";
/// Globals holding the flow idle timeouts in ns, set by the agent at load time.
pub const FLOW_TCP_TIMEOUT_GLOBAL: &str = "FLOW_TCP_TIMEOUT_NS";
pub const FLOW_UDP_TIMEOUT_GLOBAL: &str = "FLOW_UDP_TIMEOUT_NS";
pub const FLOW_TCP_FIN_TIMEOUT_GLOBAL: &str = "FLOW_TCP_FIN_TIMEOUT_NS";
pub const FLOW_TCP_CLOSE_TIMEOUT_GLOBAL: &str = "FLOW_TCP_CLOSE_TIMEOUT_NS";
/// Global holding the slots of each half of the flow filter, set by the agent at load.
pub const FLOW_FILTER_SLOTS_GLOBAL: &str = "FLOW_FILTER_SLOTS";

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceValue {}
    unsafe impl aya::Pod for BackendValue {}
    unsafe impl aya::Pod for BackendOwner {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for FlowEvent {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowValue {}
    unsafe impl aya::Pod for PersistKey {}
    unsafe impl aya::Pod for ClientRuleKey {}
    unsafe impl aya::Pod for ClientRuleValue {}
    unsafe impl aya::Pod for PoolValue {}
    unsafe impl aya::Pod for FragmentKey {}
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for LocalMacs {}
    unsafe impl aya::Pod for IfindexMacs {}
}

// Every counted slot fits its map.
const _: () = assert!(verdict::COUNT <= VERDICT_STATS_SLOTS);
const _: () = assert!(flow_stat::COUNT <= FLOW_STATS_SLOTS);
