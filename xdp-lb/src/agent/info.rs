//! What the agent reports of itself: version, start time, the configuration in force (by
//! hash) and how its reloads went.

use std::{path::Path, time::SystemTime};

use crate::control::protocol::AgentInfo;

/// FNV-1a, 64 bits: a stable hash of the configuration's bytes (not a security measure:
/// it tells operators whether two LBs run the same file).
pub fn config_hash(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The hash of the file at `path` as it is now (empty when it cannot be read).
fn file_hash(path: &Path) -> String {
    std::fs::read(path).map_or_else(|_| String::new(), |bytes| config_hash(&bytes))
}

pub fn started(config: &Path) -> AgentInfo {
    AgentInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at_s: now_s(),
        config_hash: file_hash(config),
        ..AgentInfo::default()
    }
}

/// Counts a reload by its outcome (`Err` texts saying "refused" changed nothing).
pub fn record_reload<T>(info: &mut AgentInfo, outcome: &Result<T, String>, config: &Path) {
    let result = match outcome {
        Ok(_) => {
            info.last_reload_success_s = Some(now_s());
            info.config_hash = file_hash(config);
            "applied"
        }
        Err(why) if why.contains("refused") => "refused",
        Err(_) => "failed",
    };
    *info.reloads.entry(result.to_owned()).or_insert(0) += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_hash_is_fnv_1a_and_stable() {
        // FNV-1a 64 of "" and "a", the reference values.
        assert_eq!(config_hash(b""), "cbf29ce484222325");
        assert_eq!(config_hash(b"a"), "af63dc4c8601ec8c");
    }

    #[test]
    fn reloads_are_counted_by_outcome_and_only_an_applied_one_moves_the_success_time() {
        let mut info = AgentInfo::default();
        let path = Path::new("/nonexistent/xdp-lb.yaml");
        record_reload::<()>(
            &mut info,
            &Err("reload refused, nothing changed".into()),
            path,
        );
        assert_eq!(info.last_reload_success_s, None);
        record_reload::<()>(
            &mut info,
            &Err("reload applied with 1 failed change(s)".into()),
            path,
        );
        record_reload(&mut info, &Ok(()), path);
        assert_eq!(
            info.reloads,
            [
                ("applied".to_owned(), 1),
                ("failed".to_owned(), 1),
                ("refused".to_owned(), 1)
            ]
            .into()
        );
        assert!(info.last_reload_success_s.is_some());
    }
}
