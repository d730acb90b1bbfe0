//! The wire format of flow-state sync between LBs: one UDP datagram per [`Message`],
//! authenticated with HMAC-SHA256 over a shared [`Key`], plus the per-peer replay window
//! ([`ReplayGuard`]) and the rate bound ([`TokenBucket`]) the receiver applies to it.
//!
//! A datagram is `header (32 bytes) | entries (count × 64 bytes) | tag (32 bytes)`, every
//! integer big-endian:
//!
//! ```text
//! header:  magic "XLBS" (4) | version u8 = 1 | kind u8 (1 flows, 2 heartbeat) | count u16
//!          | sender u64 (incarnation: start time, unix ns) | seq u64 (from 1)
//!          | sent_unix_ms u64
//! entry:   family u8 (4/6) | proto u8 (6/17) | vlan u16 (0..=4094, 0 untagged)
//!          | client address [16] | vip address [16] | client port u16 | vip port u16
//!          | backend family u8 (4/6) | flags u8 (bit 0 FIN, bit 1 RST) | reserved u16 (0)
//!          | backend address [16] | age_ms u32
//! tag:     HMAC-SHA256(key, header || entries), all 32 bytes
//! ```
//!
//! An IPv4 address fills the first 4 bytes of its 16-byte field; the other 12 are zero.
//! The encoding is canonical: [`decode`] accepts exactly what [`encode`] produces, so a
//! datagram that decodes re-encodes to the same bytes.
//!
//! Everything here parses untrusted input: no indexing, no unchecked arithmetic, no panics.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The format version this agent writes and the only one it reads.
pub const VERSION: u8 = 1;
/// The most entries one datagram carries.
pub const MAX_ENTRIES: usize = 20;
/// Bytes of the header.
pub const HEADER_BYTES: usize = 32;
/// Bytes of one entry.
pub const ENTRY_BYTES: usize = 64;
/// Bytes of the HMAC-SHA256 tag.
pub const TAG_BYTES: usize = 32;
/// The longest datagram: a full one, 1344 bytes (below a 1400-byte path MTU). Anything
/// longer is rejected unread.
pub const MAX_DATAGRAM: usize = HEADER_BYTES + MAX_ENTRIES * ENTRY_BYTES + TAG_BYTES;
/// Entry flag: the sender saw a FIN of the flow.
pub const FLAG_FIN: u8 = 1;
/// Entry flag: the sender saw an RST of the flow.
pub const FLAG_RST: u8 = 2;

const MAGIC: [u8; 4] = *b"XLBS";
const KIND_FLOWS: u8 = 1;
const KIND_HEARTBEAT: u8 = 2;
const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const MAX_VLAN: u16 = 4094;
const KNOWN_FLAGS: u8 = FLAG_FIN | FLAG_RST;
/// Key length bounds, in bytes.
const MIN_KEY: usize = 32;
const MAX_KEY: usize = 64;
/// How many sequence numbers below the highest one the replay window remembers.
const WINDOW: u64 = 64;

type HmacSha256 = Hmac<Sha256>;

/// One flow's state as the sending LB knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncEntry {
    /// The client's address and port (same family as `vip`; the port is non-zero).
    pub client: SocketAddr,
    /// The VIP's address and port (same family as `client`; the port is non-zero).
    pub vip: SocketAddr,
    /// IP protocol: 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// VLAN id, 0..=4094; 0 means untagged or any.
    pub vlan: u16,
    /// The backend the flow is pinned to (either family).
    pub backend: IpAddr,
    /// [`FLAG_FIN`] and/or [`FLAG_RST`]; no other bits.
    pub flags: u8,
    /// How long ago, in ms, the sender last saw a packet of the flow.
    pub age_ms: u32,
}

/// What a datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Flow entries (possibly none).
    Flows,
    /// A liveness beat; carries no entries.
    Heartbeat,
}

/// One datagram's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Flows or heartbeat.
    pub kind: Kind,
    /// The sending agent's incarnation: its start time in unix ns.
    pub sender: u64,
    /// The datagram's number within the incarnation, starting at 1.
    pub seq: u64,
    /// When the datagram was sent, unix ms.
    pub sent_unix_ms: u64,
    /// The flows; empty for a heartbeat; at most [`MAX_ENTRIES`].
    pub entries: Vec<SyncEntry>,
}

/// The shared key, ready to tag and verify datagrams. Its `Debug` shows only its length.
#[derive(Clone)]
pub struct Key {
    mac: HmacSha256,
    len: usize,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Why a key (or key file) is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key file holds nothing but whitespace.
    #[error("the sync key is empty; it needs 64 to 128 hex digits (32 to 64 bytes)")]
    Empty,
    /// A character that is neither a hex digit nor surrounding whitespace.
    #[error(
        "the sync key has a character that is not a hex digit at position {position} \
         (counting from 1)"
    )]
    NotHex {
        /// 1-based byte position in the text as given (leading whitespace included).
        position: usize,
    },
    /// An odd number of hex digits.
    #[error("the sync key has an odd number of hex digits ({digits}); two digits make a byte")]
    OddLength {
        /// How many hex digits there are.
        digits: usize,
    },
    /// Fewer than 32 bytes.
    #[error("the sync key is too short: {bytes} bytes, at least {MIN_KEY}")]
    TooShort {
        /// The key's length in bytes.
        bytes: usize,
    },
    /// More than 64 bytes.
    #[error("the sync key is too long: {bytes} bytes, at most {MAX_KEY}")]
    TooLong {
        /// The key's length in bytes.
        bytes: usize,
    },
}

impl Key {
    /// From a key file's contents: 64 to 128 hex digits (32 to 64 bytes), upper or lower
    /// case; whitespace (newlines included) before and after is ignored, whitespace
    /// between digits is not. Errors give the position of a bad character, never the
    /// character itself.
    pub fn from_hex(text: &[u8]) -> Result<Key, KeyError> {
        let start = text
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .ok_or(KeyError::Empty)?;
        let end = text
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .ok_or(KeyError::Empty)?;
        let digits = text.get(start..=end).ok_or(KeyError::Empty)?;
        let mut nibbles = Vec::with_capacity(digits.len());
        for (offset, &c) in digits.iter().enumerate() {
            match hex_value(c) {
                Some(v) => nibbles.push(v),
                None => {
                    let position = start.saturating_add(offset).saturating_add(1);
                    return Err(KeyError::NotHex { position });
                }
            }
        }
        if nibbles.len() % 2 != 0 {
            return Err(KeyError::OddLength {
                digits: nibbles.len(),
            });
        }
        let mut bytes: Vec<u8> = nibbles
            .chunks_exact(2)
            .map(|pair| match pair {
                [hi, lo] => (hi << 4) | lo,
                _ => 0,
            })
            .collect();
        let key = Key::from_bytes(&bytes);
        // Best effort: do not leave the key's digits lying around in freed memory.
        nibbles.fill(0);
        bytes.fill(0);
        key
    }

    /// From raw key bytes (32 to 64 of them). For tests and benchmarks.
    pub fn from_bytes(bytes: &[u8]) -> Result<Key, KeyError> {
        let len = bytes.len();
        if len < MIN_KEY {
            return Err(KeyError::TooShort { bytes: len });
        }
        if len > MAX_KEY {
            return Err(KeyError::TooLong { bytes: len });
        }
        // HMAC takes keys of any length, so this cannot fail; TooLong keeps it total.
        let mac = <HmacSha256 as Mac>::new_from_slice(bytes)
            .map_err(|_| KeyError::TooLong { bytes: len })?;
        Ok(Key { mac, len })
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => c.checked_sub(b'0'),
        b'a'..=b'f' => c.checked_sub(b'a' - 10),
        b'A'..=b'F' => c.checked_sub(b'A' - 10),
        _ => None,
    }
}

/// Why a message cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// More than [`MAX_ENTRIES`] entries.
    #[error("{count} entries do not fit one sync datagram (at most {MAX_ENTRIES})")]
    TooManyEntries {
        /// How many entries the message has.
        count: usize,
    },
    /// A heartbeat with entries.
    #[error("a heartbeat carries no entries, this one has {count}")]
    HeartbeatWithEntries {
        /// How many entries the message has.
        count: usize,
    },
    /// An entry's client and VIP are of different address families.
    #[error("entry {index}: client and VIP are of different address families")]
    FamilyMismatch {
        /// The entry's index in the message.
        index: usize,
    },
    /// An IPv6 client or VIP with a flow label or scope id, which the format cannot carry.
    #[error("entry {index}: an IPv6 client or VIP has a flow label or scope id")]
    Ipv6Extras {
        /// The entry's index in the message.
        index: usize,
    },
    /// A VLAN id above 4094.
    #[error("entry {index}: VLAN {vlan} is out of range (0..=4094)")]
    Vlan {
        /// The entry's index in the message.
        index: usize,
        /// The VLAN id.
        vlan: u16,
    },
    /// A protocol other than TCP (6) and UDP (17).
    #[error("entry {index}: protocol {proto} is neither TCP (6) nor UDP (17)")]
    Proto {
        /// The entry's index in the message.
        index: usize,
        /// The protocol number.
        proto: u8,
    },
    /// A client or VIP port of 0.
    #[error("entry {index}: the client or VIP port is 0")]
    Port {
        /// The entry's index in the message.
        index: usize,
    },
    /// Flag bits other than FIN and RST.
    #[error("entry {index}: unknown flag bits in {flags:#04x} (only FIN 0x01 and RST 0x02)")]
    Flags {
        /// The entry's index in the message.
        index: usize,
        /// The flags.
        flags: u8,
    },
}

/// Why a datagram was rejected; [`DecodeError::reason`] is the metric label.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than a header and a tag.
    #[error("sync datagram of {len} bytes is too short (at least {} bytes)", HEADER_BYTES + TAG_BYTES)]
    Short {
        /// The datagram's length.
        len: usize,
    },
    /// Longer than [`MAX_DATAGRAM`].
    #[error("sync datagram of {len} bytes is too long (at most {MAX_DATAGRAM} bytes)")]
    Long {
        /// The datagram's length.
        len: usize,
    },
    /// Not starting with `XLBS`.
    #[error("not a sync datagram (bad magic)")]
    Magic,
    /// A format version other than [`VERSION`].
    #[error("sync datagram of format version {0}, this agent speaks version {VERSION}")]
    Version(u8),
    /// The length does not match the entry count, or the count is above [`MAX_ENTRIES`].
    #[error("sync datagram of {len} bytes does not match its entry count {count}")]
    Length {
        /// The datagram's length.
        len: usize,
        /// The entry count in its header.
        count: u16,
    },
    /// The tag does not verify: another key, or the datagram was altered.
    #[error("sync datagram fails authentication (another key, or altered in transit)")]
    Auth,
    /// An unknown kind, or a heartbeat with entries.
    #[error(
        "sync datagram of kind {kind} with {count} entries (want 1, flows, or 2, a heartbeat \
         without entries)"
    )]
    Kind {
        /// The kind byte.
        kind: u8,
        /// The entry count.
        count: u16,
    },
    /// An invalid entry; the whole datagram is rejected.
    #[error("sync datagram entry {index} is invalid: {why}")]
    Entry {
        /// The entry's index in the datagram.
        index: usize,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl DecodeError {
    /// A stable label for metrics: "short", "long", "magic", "version", "length", "auth",
    /// "kind" or "entry".
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Short { .. } => "short",
            DecodeError::Long { .. } => "long",
            DecodeError::Magic => "magic",
            DecodeError::Version(_) => "version",
            DecodeError::Length { .. } => "length",
            DecodeError::Auth => "auth",
            DecodeError::Kind { .. } => "kind",
            DecodeError::Entry { .. } => "entry",
        }
    }
}

/// Encodes and tags a message as one datagram of `32 + 64 × entries + 32` bytes.
pub fn encode(key: &Key, message: &Message) -> Result<Vec<u8>, EncodeError> {
    let count = message.entries.len();
    if count > MAX_ENTRIES {
        return Err(EncodeError::TooManyEntries { count });
    }
    let kind = match message.kind {
        Kind::Flows => KIND_FLOWS,
        Kind::Heartbeat if count == 0 => KIND_HEARTBEAT,
        Kind::Heartbeat => return Err(EncodeError::HeartbeatWithEntries { count }),
    };
    let count16 = u16::try_from(count).map_err(|_| EncodeError::TooManyEntries { count })?;
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&count16.to_be_bytes());
    out.extend_from_slice(&message.sender.to_be_bytes());
    out.extend_from_slice(&message.seq.to_be_bytes());
    out.extend_from_slice(&message.sent_unix_ms.to_be_bytes());
    for (index, entry) in message.entries.iter().enumerate() {
        encode_entry(&mut out, index, entry)?;
    }
    let mut mac = key.mac.clone();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    Ok(out)
}

fn encode_entry(out: &mut Vec<u8>, index: usize, e: &SyncEntry) -> Result<(), EncodeError> {
    let family = match (e.client, e.vip) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => FAMILY_V4,
        (SocketAddr::V6(c), SocketAddr::V6(v)) => {
            if c.flowinfo() != 0 || c.scope_id() != 0 || v.flowinfo() != 0 || v.scope_id() != 0 {
                return Err(EncodeError::Ipv6Extras { index });
            }
            FAMILY_V6
        }
        _ => return Err(EncodeError::FamilyMismatch { index }),
    };
    if e.proto != PROTO_TCP && e.proto != PROTO_UDP {
        return Err(EncodeError::Proto {
            index,
            proto: e.proto,
        });
    }
    if e.vlan > MAX_VLAN {
        return Err(EncodeError::Vlan {
            index,
            vlan: e.vlan,
        });
    }
    if e.client.port() == 0 || e.vip.port() == 0 {
        return Err(EncodeError::Port { index });
    }
    if e.flags & !KNOWN_FLAGS != 0 {
        return Err(EncodeError::Flags {
            index,
            flags: e.flags,
        });
    }
    let (backend_family, backend) = address_field(e.backend);
    out.push(family);
    out.push(e.proto);
    out.extend_from_slice(&e.vlan.to_be_bytes());
    out.extend_from_slice(&address_field(e.client.ip()).1);
    out.extend_from_slice(&address_field(e.vip.ip()).1);
    out.extend_from_slice(&e.client.port().to_be_bytes());
    out.extend_from_slice(&e.vip.port().to_be_bytes());
    out.push(backend_family);
    out.push(e.flags);
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&backend);
    out.extend_from_slice(&e.age_ms.to_be_bytes());
    Ok(())
}

/// An address's family byte and 16-byte field (IPv4 in the first 4 bytes, then zeros).
fn address_field(ip: IpAddr) -> (u8, [u8; 16]) {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            (FAMILY_V4, [a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        }
        IpAddr::V6(v6) => (FAMILY_V6, v6.octets()),
    }
}

/// Checks and decodes a datagram. The tag is verified (in constant time) before any entry
/// is looked at; one invalid entry rejects the whole datagram.
pub fn decode(key: &Key, datagram: &[u8]) -> Result<Message, DecodeError> {
    let len = datagram.len();
    if len < HEADER_BYTES.saturating_add(TAG_BYTES) {
        return Err(DecodeError::Short { len });
    }
    if len > MAX_DATAGRAM {
        return Err(DecodeError::Long { len });
    }
    let short = DecodeError::Short { len };
    let mut header = Reader::new(datagram);
    if header.array::<4>() != Some(MAGIC) {
        return Err(DecodeError::Magic);
    }
    let version = header.u8().ok_or(short.clone())?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let kind = header.u8().ok_or(short.clone())?;
    let count = header.u16().ok_or(short.clone())?;
    let sender = header.u64().ok_or(short.clone())?;
    let seq = header.u64().ok_or(short.clone())?;
    let sent_unix_ms = header.u64().ok_or(short)?;

    let length = DecodeError::Length { len, count };
    let body_len = usize::from(count)
        .checked_mul(ENTRY_BYTES)
        .and_then(|entries| entries.checked_add(HEADER_BYTES))
        .ok_or(length.clone())?;
    if body_len.checked_add(TAG_BYTES) != Some(len) {
        return Err(length);
    }
    let (body, tag) = datagram.split_at_checked(body_len).ok_or(length.clone())?;
    let mut mac = key.mac.clone();
    mac.update(body);
    mac.verify_slice(tag).map_err(|_| DecodeError::Auth)?;

    let kind = match (kind, count) {
        (KIND_FLOWS, _) => Kind::Flows,
        (KIND_HEARTBEAT, 0) => Kind::Heartbeat,
        _ => return Err(DecodeError::Kind { kind, count }),
    };
    if usize::from(count) > MAX_ENTRIES {
        return Err(length);
    }
    let entry_bytes = body.get(HEADER_BYTES..).ok_or(length)?;
    let entries = entry_bytes
        .chunks_exact(ENTRY_BYTES)
        .enumerate()
        .map(|(index, bytes)| decode_entry(bytes).map_err(|why| DecodeError::Entry { index, why }))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Message {
        kind,
        sender,
        seq,
        sent_unix_ms,
        entries,
    })
}

fn decode_entry(bytes: &[u8]) -> Result<SyncEntry, &'static str> {
    const TRUNCATED: &str = "truncated";
    let mut r = Reader::new(bytes);
    let family = r.u8().ok_or(TRUNCATED)?;
    let proto = r.u8().ok_or(TRUNCATED)?;
    let vlan = r.u16().ok_or(TRUNCATED)?;
    let client = r.array::<16>().ok_or(TRUNCATED)?;
    let vip = r.array::<16>().ok_or(TRUNCATED)?;
    let client_port = r.u16().ok_or(TRUNCATED)?;
    let vip_port = r.u16().ok_or(TRUNCATED)?;
    let backend_family = r.u8().ok_or(TRUNCATED)?;
    let flags = r.u8().ok_or(TRUNCATED)?;
    let reserved = r.u16().ok_or(TRUNCATED)?;
    let backend = r.array::<16>().ok_or(TRUNCATED)?;
    let age_ms = r.u32().ok_or(TRUNCATED)?;

    if family != FAMILY_V4 && family != FAMILY_V6 {
        return Err("client/VIP address family is neither 4 nor 6");
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err("protocol is neither TCP (6) nor UDP (17)");
    }
    if vlan > MAX_VLAN {
        return Err("VLAN above 4094");
    }
    if client_port == 0 {
        return Err("client port 0");
    }
    if vip_port == 0 {
        return Err("VIP port 0");
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err("unknown flag bits");
    }
    if reserved != 0 {
        return Err("reserved bytes not zero");
    }
    let client = parse_address(family, client).ok_or("client IPv4 address padding not zero")?;
    let vip = parse_address(family, vip).ok_or("VIP IPv4 address padding not zero")?;
    if backend_family != FAMILY_V4 && backend_family != FAMILY_V6 {
        return Err("backend address family is neither 4 nor 6");
    }
    let backend =
        parse_address(backend_family, backend).ok_or("backend IPv4 address padding not zero")?;
    Ok(SyncEntry {
        client: SocketAddr::new(client, client_port),
        vip: SocketAddr::new(vip, vip_port),
        proto,
        vlan,
        backend,
        flags,
        age_ms,
    })
}

/// A 16-byte address field of a (checked) family; `None` if an IPv4 field's padding is not
/// zero.
fn parse_address(family: u8, field: [u8; 16]) -> Option<IpAddr> {
    if family == FAMILY_V6 {
        return Some(IpAddr::V6(Ipv6Addr::from(field)));
    }
    match field {
        [a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] => {
            Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
        }
        _ => None,
    }
}

/// Reads big-endian fields off the front of a slice; `None` once it runs out.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(u8::from_be_bytes)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
}

/// Why [`ReplayGuard::check`] refused a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Replay {
    /// Sent too long ago, or too far in the future (clock skew).
    #[error(
        "sync datagram sent at {sent_unix_ms} ms, received at {now_unix_ms} ms: more than \
         {max_skew_ms} ms apart"
    )]
    Stale {
        /// The datagram's send time, unix ms.
        sent_unix_ms: u64,
        /// The receiver's clock, unix ms.
        now_unix_ms: u64,
        /// The largest difference accepted.
        max_skew_ms: u64,
    },
    /// From an older incarnation of the peer than one already heard from.
    #[error("sync datagram from an older incarnation of the peer")]
    OldIncarnation,
    /// A sequence number already accepted, or too far behind to tell.
    #[error("sync datagram replayed (sequence number already seen or too old)")]
    Duplicate,
}

impl Replay {
    /// A stable label for metrics: "stale", "old_incarnation" or "replay".
    pub fn reason(&self) -> &'static str {
        match self {
            Replay::Stale { .. } => "stale",
            Replay::OldIncarnation => "old_incarnation",
            Replay::Duplicate => "replay",
        }
    }
}

/// Per-peer replay state: the newest incarnation heard from, its highest sequence number,
/// and which of the 64 numbers below that were seen.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    window: Option<Window>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    sender: u64,
    highest: u64,
    /// Bit `i` set: `highest - i` was accepted (bit 0 is `highest` itself).
    seen: u64,
}

impl ReplayGuard {
    /// Accepts an (already authenticated) message once. Its sent time must be within
    /// `max_skew_ms` of `now_unix_ms` in either direction, else [`Replay::Stale`]. A sender
    /// incarnation older than the newest seen is [`Replay::OldIncarnation`]; a newer one
    /// starts a fresh window. Within one incarnation a seq above the highest seen is
    /// accepted, one of the 64 below it is accepted once, anything older or already seen is
    /// [`Replay::Duplicate`]. The state changes only when the message is accepted.
    pub fn check(
        &mut self,
        sender: u64,
        seq: u64,
        sent_unix_ms: u64,
        now_unix_ms: u64,
        max_skew_ms: u64,
    ) -> Result<(), Replay> {
        if sent_unix_ms.abs_diff(now_unix_ms) > max_skew_ms {
            return Err(Replay::Stale {
                sent_unix_ms,
                now_unix_ms,
                max_skew_ms,
            });
        }
        let fresh = Window {
            sender,
            highest: seq,
            seen: 1,
        };
        let next = match self.window {
            None => fresh,
            Some(w) if sender < w.sender => return Err(Replay::OldIncarnation),
            Some(w) if sender > w.sender => fresh,
            Some(w) if seq > w.highest => {
                let ahead = seq.saturating_sub(w.highest);
                let shifted = if ahead >= WINDOW {
                    0
                } else {
                    u32::try_from(ahead)
                        .ok()
                        .and_then(|s| w.seen.checked_shl(s))
                        .unwrap_or(0)
                };
                Window {
                    sender,
                    highest: seq,
                    seen: shifted | 1,
                }
            }
            Some(w) => {
                let behind = w.highest.saturating_sub(seq);
                if behind >= WINDOW {
                    return Err(Replay::Duplicate);
                }
                let bit = u32::try_from(behind)
                    .ok()
                    .and_then(|s| 1u64.checked_shl(s))
                    .ok_or(Replay::Duplicate)?;
                if w.seen & bit != 0 {
                    return Err(Replay::Duplicate);
                }
                Window {
                    seen: w.seen | bit,
                    ..w
                }
            }
        };
        self.window = Some(next);
        Ok(())
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` saved. Integer arithmetic in
/// nano-tokens, so slow refills do not lose fractions.
#[derive(Debug)]
pub struct TokenBucket {
    rate: u32,
    /// In nano-tokens (1 token = 1e9).
    capacity: u128,
    /// In nano-tokens.
    tokens: u128,
    /// The latest time seen; never moves backwards.
    last: Instant,
}

const NANO: u128 = 1_000_000_000;

impl TokenBucket {
    /// A bucket that refills at `rate` tokens per second up to `burst`, starting full.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let capacity = u128::from(burst).saturating_mul(NANO);
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes up to `n` tokens; returns how many it took (0..=n). A `now` earlier than one
    /// seen before adds nothing.
    #[must_use = "the tokens taken are gone whether used or not"]
    pub fn take(&mut self, n: u32, now: Instant) -> u32 {
        let took = self.available(now).min(n);
        self.tokens = self
            .tokens
            .saturating_sub(u128::from(took).saturating_mul(NANO));
        took
    }

    /// How many whole tokens [`take`](Self::take) could take at `now`, taking none. A `now`
    /// earlier than one seen before adds nothing.
    pub fn available(&mut self, now: Instant) -> u32 {
        if let Some(elapsed) = now.checked_duration_since(self.last) {
            let added = elapsed.as_nanos().saturating_mul(u128::from(self.rate));
            self.tokens = self.tokens.saturating_add(added).min(self.capacity);
            self.last = now;
        }
        let whole = self.tokens.checked_div(NANO).unwrap_or(0);
        u32::try_from(whole).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]
mod tests {
    use super::*;
    use std::net::{SocketAddrV4, SocketAddrV6};
    use std::time::Duration;

    fn key() -> Key {
        Key::from_bytes(&[0x5a; 32]).unwrap()
    }

    fn v4_entry(i: u8) -> SyncEntry {
        SyncEntry {
            client: SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(198, 51, 100, 7),
                40000 + u16::from(i),
            )),
            vip: "203.0.113.10:443".parse().unwrap(),
            proto: PROTO_TCP,
            vlan: u16::from(i) * 100,
            backend: IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)),
            flags: i % 4,
            age_ms: u32::from(i) * 1000 + 7,
        }
    }

    fn v6_entry() -> SyncEntry {
        SyncEntry {
            client: "[2001:db8::1]:5353".parse().unwrap(),
            vip: "[2001:db8:ffff::10]:53".parse().unwrap(),
            proto: PROTO_UDP,
            vlan: MAX_VLAN,
            backend: "fd00::42".parse().unwrap(),
            flags: FLAG_FIN | FLAG_RST,
            age_ms: u32::MAX,
        }
    }

    fn flows(entries: Vec<SyncEntry>) -> Message {
        Message {
            kind: Kind::Flows,
            sender: 1_700_000_000_123_456_789,
            seq: 42,
            sent_unix_ms: 1_700_000_000_123,
            entries,
        }
    }

    fn full_message() -> Message {
        let mut entries: Vec<SyncEntry> = (0..19).map(v4_entry).collect();
        entries.push(v6_entry());
        flows(entries)
    }

    /// Appends a valid tag to an arbitrary header+entries body.
    fn seal(key: &Key, body: &[u8]) -> Vec<u8> {
        let mut mac = key.mac.clone();
        mac.update(body);
        let mut out = body.to_vec();
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    fn body(datagram: &[u8]) -> &[u8] {
        &datagram[..datagram.len() - TAG_BYTES]
    }

    #[test]
    fn sizes() {
        assert_eq!(MAX_DATAGRAM, 1344);
        const { assert!(MAX_DATAGRAM <= 1400) };
    }

    #[test]
    fn round_trips() {
        let k = key();
        let mixed_backend = SyncEntry {
            backend: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            ..v6_entry()
        };
        let messages = [
            flows(vec![]),
            flows(vec![v4_entry(1)]),
            flows(vec![v6_entry()]),
            flows(vec![v4_entry(3), v6_entry(), mixed_backend]),
            full_message(),
            Message {
                kind: Kind::Heartbeat,
                sender: u64::MAX,
                seq: u64::MAX,
                sent_unix_ms: 0,
                entries: vec![],
            },
        ];
        for m in messages {
            let d = encode(&k, &m).unwrap();
            assert_eq!(
                d.len(),
                HEADER_BYTES + ENTRY_BYTES * m.entries.len() + TAG_BYTES
            );
            assert_eq!(decode(&k, &d).unwrap(), m);
        }
        assert_eq!(encode(&k, &full_message()).unwrap().len(), MAX_DATAGRAM);
    }

    /// The layout, byte by byte, independent of `encode`.
    #[test]
    fn layout() {
        let k = key();
        let mut d = Vec::new();
        d.extend_from_slice(b"XLBS");
        d.extend_from_slice(&[1, 1, 0, 1]);
        d.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        d.extend_from_slice(&9u64.to_be_bytes());
        d.extend_from_slice(&1234u64.to_be_bytes());
        d.extend_from_slice(&[4, 6, 0x00, 0x0c]); // family, TCP, vlan 12
        d.extend_from_slice(&[192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        d.extend_from_slice(&[192, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        d.extend_from_slice(&[0x12, 0x34, 0x00, 0x50]); // ports 4660, 80
        d.extend_from_slice(&[6, FLAG_RST, 0, 0]); // backend family, flags, reserved
        d.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        d.extend_from_slice(&[0, 0, 0x01, 0x00]); // age 256
        assert_eq!(d.len(), HEADER_BYTES + ENTRY_BYTES);
        let d = seal(&k, &d);
        let m = Message {
            kind: Kind::Flows,
            sender: 0x0102_0304_0506_0708,
            seq: 9,
            sent_unix_ms: 1234,
            entries: vec![SyncEntry {
                client: "192.0.2.1:4660".parse().unwrap(),
                vip: "192.0.2.2:80".parse().unwrap(),
                proto: 6,
                vlan: 12,
                backend: "fd00::1".parse().unwrap(),
                flags: FLAG_RST,
                age_ms: 256,
            }],
        };
        assert_eq!(decode(&k, &d).unwrap(), m);
        assert_eq!(encode(&k, &m).unwrap(), d);
    }

    #[test]
    fn encode_errors() {
        let k = key();
        let too_many = flows((0..21).map(|_| v4_entry(1)).collect());
        assert_eq!(
            encode(&k, &too_many),
            Err(EncodeError::TooManyEntries { count: 21 })
        );
        let beat = Message {
            kind: Kind::Heartbeat,
            ..flows(vec![v4_entry(1)])
        };
        assert_eq!(
            encode(&k, &beat),
            Err(EncodeError::HeartbeatWithEntries { count: 1 })
        );
        let bad = |e: SyncEntry| encode(&k, &flows(vec![v4_entry(0), e])).unwrap_err();
        let mismatch = SyncEntry {
            vip: v6_entry().vip,
            ..v4_entry(1)
        };
        assert_eq!(bad(mismatch), EncodeError::FamilyMismatch { index: 1 });
        let scoped = SyncEntry {
            client: SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 9, 0, 3)),
            ..v6_entry()
        };
        assert_eq!(bad(scoped), EncodeError::Ipv6Extras { index: 1 });
        let labelled = SyncEntry {
            vip: SocketAddr::V6(SocketAddrV6::new("2001:db8::2".parse().unwrap(), 9, 7, 0)),
            ..v6_entry()
        };
        assert_eq!(bad(labelled), EncodeError::Ipv6Extras { index: 1 });
        let vlan = SyncEntry {
            vlan: 4095,
            ..v4_entry(1)
        };
        assert_eq!(
            bad(vlan),
            EncodeError::Vlan {
                index: 1,
                vlan: 4095
            }
        );
        let proto = SyncEntry {
            proto: 1,
            ..v4_entry(1)
        };
        assert_eq!(bad(proto), EncodeError::Proto { index: 1, proto: 1 });
        let client_port = SyncEntry {
            client: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)),
            ..v4_entry(1)
        };
        assert_eq!(bad(client_port), EncodeError::Port { index: 1 });
        let vip_port = SyncEntry {
            vip: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)),
            ..v4_entry(1)
        };
        assert_eq!(bad(vip_port), EncodeError::Port { index: 1 });
        let flags = SyncEntry {
            flags: 4,
            ..v4_entry(1)
        };
        assert_eq!(bad(flags), EncodeError::Flags { index: 1, flags: 4 });
        for e in [
            EncodeError::TooManyEntries { count: 21 },
            EncodeError::Flags { index: 1, flags: 4 },
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    fn reason(k: &Key, d: &[u8]) -> &'static str {
        decode(k, d).unwrap_err().reason()
    }

    #[test]
    fn decode_errors_and_reasons() {
        let k = key();
        let good = encode(&k, &flows(vec![v4_entry(1), v6_entry()])).unwrap();

        assert_eq!(decode(&k, &[]), Err(DecodeError::Short { len: 0 }));
        assert_eq!(reason(&k, &good[..63]), "short");
        assert_eq!(
            decode(&k, &vec![0; MAX_DATAGRAM + 1]),
            Err(DecodeError::Long {
                len: MAX_DATAGRAM + 1
            })
        );
        assert_eq!(reason(&k, &vec![0; 65536]), "long");

        let mut magic = good.clone();
        magic[0] = b'x';
        assert_eq!(decode(&k, &magic), Err(DecodeError::Magic));
        assert_eq!(DecodeError::Magic.reason(), "magic");

        let mut version = good.clone();
        version[4] = 2;
        assert_eq!(decode(&k, &version), Err(DecodeError::Version(2)));
        assert_eq!(reason(&k, &version), "version");
        let text = DecodeError::Version(2).to_string();
        assert!(text.contains('2') && text.contains('1'), "{text}");

        let mut length = good.clone();
        length.push(0);
        assert_eq!(
            decode(&k, &length),
            Err(DecodeError::Length {
                len: good.len() + 1,
                count: 2
            })
        );
        let mut count = good.clone();
        count[7] = 3;
        assert_eq!(reason(&k, &count), "length");
        // A count above MAX_ENTRIES is too long before it can be the wrong length.
        let mut big = good.clone();
        big[6] = 0xff;
        assert_eq!(reason(&k, &big), "length");

        let mut auth = good.clone();
        auth[40] ^= 1;
        assert_eq!(decode(&k, &auth), Err(DecodeError::Auth));
        let mut tag = good.clone();
        *tag.last_mut().unwrap() ^= 0x80;
        assert_eq!(reason(&k, &tag), "auth");

        let mut kind = body(&good).to_vec();
        kind[5] = 3;
        assert_eq!(
            decode(&k, &seal(&k, &kind)),
            Err(DecodeError::Kind { kind: 3, count: 2 })
        );
        kind[5] = 0;
        assert_eq!(reason(&k, &seal(&k, &kind)), "kind");
        kind[5] = KIND_HEARTBEAT;
        assert_eq!(
            decode(&k, &seal(&k, &kind)),
            Err(DecodeError::Kind {
                kind: KIND_HEARTBEAT,
                count: 2
            })
        );

        let mut entry = body(&good).to_vec();
        entry[HEADER_BYTES + ENTRY_BYTES] = 5;
        let err = decode(&k, &seal(&k, &entry)).unwrap_err();
        assert!(matches!(err, DecodeError::Entry { index: 1, .. }), "{err}");
        assert_eq!(err.reason(), "entry");
    }

    /// Every way an entry can be invalid, at each of its offsets.
    #[test]
    fn entry_errors() {
        let k = key();
        let good = encode(&k, &flows(vec![v4_entry(1)])).unwrap();
        let cases: &[(usize, u8, &str)] = &[
            (0, 0, "family"),
            (0, 5, "family"),
            (1, 1, "protocol"),
            (2, 0x10, "VLAN"),
            (2, 0xff, "VLAN"),
            (4 + 4, 1, "client IPv4"),
            (4 + 15, 1, "client IPv4"),
            (20 + 4, 1, "VIP IPv4"),
            (20 + 15, 1, "VIP IPv4"),
            (36, 0, "client port"),
            (38, 0, "VIP port"),
            (40, 5, "backend address family"),
            (41, 4, "flag"),
            (41, 0x80, "flag"),
            (42, 1, "reserved"),
            (43, 1, "reserved"),
            (44 + 4, 1, "backend IPv4"),
            (44 + 15, 1, "backend IPv4"),
        ];
        for &(offset, value, what) in cases {
            let mut b = body(&good).to_vec();
            let at = HEADER_BYTES + offset;
            if offset == 36 || offset == 38 {
                b[at] = 0;
                b[at + 1] = 0;
            } else {
                b[at] = value;
            }
            match decode(&k, &seal(&k, &b)) {
                Err(DecodeError::Entry { index: 0, why }) => {
                    assert!(why.contains(what), "offset {offset}: {why}")
                }
                other => panic!("offset {offset}: {other:?}"),
            }
        }
    }

    #[test]
    fn wrong_key_is_auth() {
        let d = encode(&key(), &full_message()).unwrap();
        let other = Key::from_bytes(&[0x5b; 32]).unwrap();
        assert_eq!(decode(&other, &d), Err(DecodeError::Auth));
        let longer = Key::from_bytes(&[0x5a; 33]).unwrap();
        assert_eq!(decode(&longer, &d), Err(DecodeError::Auth));
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let k = key();
        for m in [full_message(), flows(vec![]), flows(vec![v6_entry()])] {
            let good = encode(&k, &m).unwrap();
            for i in 0..good.len() {
                for bit in 0..8 {
                    let mut d = good.clone();
                    d[i] ^= 1 << bit;
                    assert!(decode(&k, &d).is_err(), "byte {i} bit {bit}");
                }
                let mut d = good.clone();
                d[i] ^= 0xff;
                assert!(decode(&k, &d).is_err(), "byte {i}");
            }
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        let k = key();
        let good = encode(&k, &full_message()).unwrap();
        for len in 0..good.len() {
            assert!(decode(&k, &good[..len]).is_err(), "length {len}");
            assert!(
                decode(&k, &good[good.len() - len..]).is_err(),
                "suffix {len}"
            );
        }
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn byte(&mut self) -> u8 {
            self.next() as u8
        }
    }

    #[test]
    fn random_datagrams_never_panic_or_pass() {
        let k = key();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let originals: Vec<Vec<u8>> = [
            full_message(),
            flows(vec![v4_entry(2)]),
            flows(vec![]),
            Message {
                kind: Kind::Heartbeat,
                ..flows(vec![])
            },
        ]
        .iter()
        .map(|m| encode(&k, m).unwrap())
        .collect();
        let mut resealed_ok = 0;
        for round in 0..20_000 {
            let original = &originals[rng.below(originals.len())];
            let mut d = original.clone();
            match round % 5 {
                // Random bytes, random length.
                0 => {
                    let len = rng.below(MAX_DATAGRAM + 100);
                    d = (0..len).map(|_| rng.byte()).collect();
                }
                // A plausible header (gets as far as the tag), random rest.
                1 => {
                    let count = rng.below(MAX_ENTRIES + 1);
                    let len = HEADER_BYTES + count * ENTRY_BYTES + TAG_BYTES;
                    d = (0..len).map(|_| rng.byte()).collect();
                    d[..4].copy_from_slice(b"XLBS");
                    d[4] = VERSION;
                    d[5] = 1 + rng.byte() % 2;
                    d[6..8].copy_from_slice(&(count as u16).to_be_bytes());
                }
                // A few bytes of a valid datagram changed.
                2 => {
                    for _ in 0..1 + rng.below(4) {
                        let i = rng.below(d.len());
                        d[i] = rng.byte();
                    }
                }
                // Cut, extended or spliced.
                3 => {
                    let cut = rng.below(d.len() + 1);
                    d.truncate(cut);
                    for _ in 0..rng.below(3) * rng.below(70) {
                        d.push(rng.byte());
                    }
                }
                // Body changed and resealed with the right key: exercises the entry
                // checks; whatever decodes must re-encode to the same bytes.
                _ => {
                    let mut b = body(original).to_vec();
                    for _ in 0..1 + rng.below(3) {
                        let i = rng.below(b.len());
                        b[i] = rng.byte();
                    }
                    let d = seal(&k, &b);
                    if let Ok(m) = decode(&k, &d) {
                        assert_eq!(encode(&k, &m).unwrap(), d, "not canonical");
                        resealed_ok += 1;
                    }
                    continue;
                }
            }
            let result = decode(&k, &d);
            if d == *original {
                assert!(result.is_ok(), "round {round}");
            } else {
                assert!(result.is_err(), "round {round}: {result:?}");
            }
        }
        assert!(resealed_ok > 0);
    }

    const HEX64: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    #[test]
    fn key_from_hex() {
        let bytes: Vec<u8> = (0..2).flat_map(|_| (0..16u8).map(|i| i * 0x11)).collect();
        let reference = Key::from_bytes(&bytes).unwrap();
        let m = full_message();
        let tag = encode(&reference, &m).unwrap();
        for text in [
            HEX64.to_string(),
            format!("{HEX64}\n"),
            format!("  \t{HEX64}\r\n\n"),
            HEX64.to_lowercase(),
            HEX64.to_uppercase(),
        ] {
            let k = Key::from_hex(text.as_bytes()).unwrap();
            assert_eq!(encode(&k, &m).unwrap(), tag, "{text:?}");
        }
        assert!(Key::from_hex("ab".repeat(64).as_bytes()).is_ok());

        assert_eq!(Key::from_hex(b"").err(), Some(KeyError::Empty));
        assert_eq!(Key::from_hex(b" \n\t ").err(), Some(KeyError::Empty));
        assert_eq!(
            Key::from_hex(&HEX64.as_bytes()[..63]).err(),
            Some(KeyError::OddLength { digits: 63 })
        );
        assert_eq!(
            Key::from_hex(&HEX64.as_bytes()[..62]).err(),
            Some(KeyError::TooShort { bytes: 31 })
        );
        assert_eq!(
            Key::from_hex("ab".repeat(65).as_bytes()).err(),
            Some(KeyError::TooLong { bytes: 65 })
        );
        let mut bad = format!("\n {HEX64}").into_bytes();
        bad[12] = b'g';
        assert_eq!(
            Key::from_hex(&bad).err(),
            Some(KeyError::NotHex { position: 13 })
        );
        let spaced = format!("{} {}", &HEX64[..32], &HEX64[32..]);
        assert_eq!(
            Key::from_hex(spaced.as_bytes()).err(),
            Some(KeyError::NotHex { position: 33 })
        );
        assert_eq!(
            Key::from_hex("é".repeat(40).as_bytes()).err(),
            Some(KeyError::NotHex { position: 1 })
        );
        let err = KeyError::NotHex { position: 13 }.to_string();
        assert!(err.contains("13"), "{err}");
        let err = KeyError::TooShort { bytes: 31 }.to_string();
        assert!(err.contains("31 bytes") && err.contains("32"), "{err}");
    }

    #[test]
    fn key_from_bytes() {
        assert_eq!(
            Key::from_bytes(&[1; 31]).unwrap_err(),
            KeyError::TooShort { bytes: 31 }
        );
        assert_eq!(
            Key::from_bytes(&[1; 65]).unwrap_err(),
            KeyError::TooLong { bytes: 65 }
        );
        assert!(Key::from_bytes(&[1; 32]).is_ok());
        assert!(Key::from_bytes(&[1; 64]).is_ok());
    }

    #[test]
    fn key_debug_hides_bytes() {
        let k = Key::from_hex("a5".repeat(48).as_bytes()).unwrap();
        let shown = format!("{k:?} {k:#?}");
        for secret in ["a5", "A5", "165"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("48"), "{shown}");
    }

    const NOW: u64 = 1_700_000_000_000;
    const SKEW: u64 = 30_000;

    fn check(g: &mut ReplayGuard, sender: u64, seq: u64) -> Result<(), Replay> {
        g.check(sender, seq, NOW, NOW, SKEW)
    }

    #[test]
    fn replay_in_order_and_duplicates() {
        let mut g = ReplayGuard::default();
        for seq in 1..=200 {
            assert_eq!(check(&mut g, 7, seq), Ok(()));
            assert_eq!(check(&mut g, 7, seq), Err(Replay::Duplicate));
        }
        assert_eq!(check(&mut g, 7, 150), Err(Replay::Duplicate));
        assert_eq!(Replay::Duplicate.reason(), "replay");
    }

    #[test]
    fn replay_reordered_within_window() {
        let mut g = ReplayGuard::default();
        assert_eq!(check(&mut g, 7, 100), Ok(()));
        // The 63 below the highest are accepted once, in any order.
        let shuffled = (37..100)
            .rev()
            .filter(|s| s % 2 == 1)
            .chain((37..100).filter(|s| s % 2 == 0));
        for seq in shuffled {
            assert_eq!(check(&mut g, 7, seq), Ok(()), "{seq}");
            assert_eq!(check(&mut g, 7, seq), Err(Replay::Duplicate), "{seq}");
        }
        for seq in 37..=100 {
            assert_eq!(check(&mut g, 7, seq), Err(Replay::Duplicate), "{seq}");
        }
        // Older than the window: rejected though never seen.
        assert_eq!(check(&mut g, 7, 36), Err(Replay::Duplicate));
        assert_eq!(check(&mut g, 7, 1), Err(Replay::Duplicate));

        // Jumping ahead keeps the part of the window still in range.
        let mut g = ReplayGuard::default();
        assert_eq!(check(&mut g, 7, 10), Ok(()));
        assert_eq!(check(&mut g, 7, 8), Ok(()));
        assert_eq!(check(&mut g, 7, 20), Ok(()));
        assert_eq!(check(&mut g, 7, 8), Err(Replay::Duplicate));
        assert_eq!(check(&mut g, 7, 10), Err(Replay::Duplicate));
        assert_eq!(check(&mut g, 7, 9), Ok(()));
        assert_eq!(check(&mut g, 7, 200), Ok(()));
        assert_eq!(check(&mut g, 7, 137), Ok(()));
        assert_eq!(check(&mut g, 7, 136), Err(Replay::Duplicate));
        assert_eq!(check(&mut g, 7, 20), Err(Replay::Duplicate));
    }

    #[test]
    fn replay_each_in_window_exactly_once() {
        let mut g = ReplayGuard::default();
        assert_eq!(check(&mut g, 1, 1000), Ok(()));
        for seq in (1000 - 63..1000).rev() {
            assert_eq!(check(&mut g, 1, seq), Ok(()), "{seq}");
        }
        for seq in 1000 - 64..=1000 {
            assert_eq!(check(&mut g, 1, seq), Err(Replay::Duplicate), "{seq}");
        }
    }

    #[test]
    fn replay_incarnations() {
        let mut g = ReplayGuard::default();
        assert_eq!(check(&mut g, 100, 500), Ok(()));
        // A restarted peer starts over at 1.
        assert_eq!(check(&mut g, 200, 1), Ok(()));
        assert_eq!(check(&mut g, 200, 1), Err(Replay::Duplicate));
        assert_eq!(check(&mut g, 200, 2), Ok(()));
        assert_eq!(check(&mut g, 100, 501), Err(Replay::OldIncarnation));
        assert_eq!(Replay::OldIncarnation.reason(), "old_incarnation");
        // Rejections left the state alone.
        assert_eq!(check(&mut g, 200, 3), Ok(()));
        assert_eq!(check(&mut g, u64::MAX, 0), Ok(()));
        assert_eq!(check(&mut g, u64::MAX - 1, 9), Err(Replay::OldIncarnation));
    }

    #[test]
    fn replay_stale_both_directions() {
        let mut g = ReplayGuard::default();
        let stale = g.check(1, 1, NOW - SKEW - 1, NOW, SKEW);
        assert!(matches!(stale, Err(Replay::Stale { .. })), "{stale:?}");
        assert_eq!(stale.unwrap_err().reason(), "stale");
        assert!(matches!(
            g.check(1, 1, NOW + SKEW + 1, NOW, SKEW),
            Err(Replay::Stale { .. })
        ));
        assert!(matches!(
            g.check(1, 1, u64::MAX, 0, SKEW),
            Err(Replay::Stale { .. })
        ));
        assert!(matches!(
            g.check(1, 1, 0, u64::MAX, u64::MAX - 1),
            Err(Replay::Stale { .. })
        ));
        // Stale datagrams were not recorded: seq 1 is still fresh.
        assert_eq!(g.check(1, 1, NOW - SKEW, NOW, SKEW), Ok(()));
        assert_eq!(g.check(1, 2, NOW + SKEW, NOW, SKEW), Ok(()));
        assert_eq!(g.check(1, 3, 0, u64::MAX, u64::MAX), Ok(()));
    }

    #[test]
    fn replay_seq_extremes() {
        let mut g = ReplayGuard::default();
        assert_eq!(check(&mut g, 1, 1), Ok(()));
        assert_eq!(check(&mut g, 1, u64::MAX), Ok(()));
        assert_eq!(check(&mut g, 1, u64::MAX), Err(Replay::Duplicate));
        assert_eq!(check(&mut g, 1, u64::MAX - 1), Ok(()));
        assert_eq!(check(&mut g, 1, u64::MAX - 63), Ok(()));
        assert_eq!(check(&mut g, 1, u64::MAX - 64), Err(Replay::Duplicate));
        assert_eq!(check(&mut g, 1, 1), Err(Replay::Duplicate));
        assert_eq!(check(&mut g, 1, 0), Err(Replay::Duplicate));

        let mut g = ReplayGuard::default();
        assert_eq!(check(&mut g, 1, u64::MAX), Ok(()));
        assert_eq!(check(&mut g, 1, 0), Err(Replay::Duplicate));
        let mut g = ReplayGuard::default();
        assert_eq!(check(&mut g, 1, 0), Ok(()));
        assert_eq!(check(&mut g, 1, 0), Err(Replay::Duplicate));
        assert_eq!(check(&mut g, 1, 63), Ok(()));
        assert_eq!(check(&mut g, 1, 64), Ok(()));
    }

    #[test]
    fn bucket_burst_then_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        assert_eq!(b.take(3, t0), 3);
        assert_eq!(b.take(100, t0), 2);
        assert_eq!(b.take(1, t0), 0);
        // 10 per second: one every 100 ms, fractions kept.
        assert_eq!(b.take(1, t0 + Duration::from_millis(50)), 0);
        assert_eq!(b.take(1, t0 + Duration::from_millis(100)), 1);
        assert_eq!(b.take(5, t0 + Duration::from_millis(350)), 2);
        assert_eq!(b.take(5, t0 + Duration::from_millis(400)), 1);
        // Never more than the burst, however long it rests.
        assert_eq!(b.take(100, t0 + Duration::from_secs(3600)), 5);
        assert_eq!(b.take(0, t0 + Duration::from_secs(7200)), 0);
        assert_eq!(b.take(100, t0 + Duration::from_secs(7200)), 5);
        // `available` refills and reports, but takes nothing.
        let t = t0 + Duration::from_secs(7200) + Duration::from_millis(200);
        assert_eq!(b.available(t), 2);
        assert_eq!(b.available(t), 2);
        assert_eq!(b.take(1, t), 1);
        assert_eq!(b.available(t), 1);
        assert_eq!(b.available(t0), 1);
    }

    #[test]
    fn bucket_time_going_backwards() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut b = TokenBucket::new(10, 100, t1);
        assert_eq!(b.take(100, t1), 100);
        // Earlier than seen: nothing added, nothing lost.
        assert_eq!(b.take(10, t0), 0);
        // Refill counts from the latest time seen, not from the earlier one.
        assert_eq!(b.take(100, t1 + Duration::from_millis(500)), 5);
        assert_eq!(b.take(100, t0), 0);
        assert_eq!(b.take(100, t1 + Duration::from_millis(600)), 1);
    }

    #[test]
    fn bucket_extremes() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(u32::MAX, u32::MAX, t0);
        assert_eq!(b.take(u32::MAX, t0), u32::MAX);
        assert_eq!(b.take(u32::MAX, t0), 0);
        if let Some(later) = t0.checked_add(Duration::from_secs(1 << 32)) {
            assert_eq!(b.take(u32::MAX, later), u32::MAX);
        }
        let mut none = TokenBucket::new(0, 0, t0);
        assert_eq!(none.take(1, t0 + Duration::from_secs(10)), 0);
        let mut never = TokenBucket::new(0, 3, t0);
        assert_eq!(never.take(5, t0), 3);
        assert_eq!(never.take(5, t0 + Duration::from_secs(1000)), 0);
    }
}
