//! The quorum state machine fed instant by instant: warm-up, min_healthy, restore_after,
//! a detached data plane, and an inherited announcement.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    time::{Duration, Instant},
};

use super::{Quorums, ServiceQuorum, VipServices};
use crate::config::Announce;

const VIP: &str = "10.0.0.100";

fn vip() -> IpAddr {
    VIP.parse().unwrap()
}

fn settings(warm_up: u64, restore_after: u64) -> Announce {
    Announce {
        table: 100,
        min_healthy: 1,
        service_min_healthy: Default::default(),
        restore_after: Duration::from_secs(restore_after),
        warm_up: Duration::from_secs(warm_up),
        stop_grace: Duration::ZERO,
    }
}

/// One VIP with two services: rtmp (needs 2) and hls (needs 1).
fn vips(rtmp_healthy: u32, hls_healthy: u32) -> VipServices {
    let service = |name: &str, healthy, needed| ServiceQuorum {
        name: name.to_owned(),
        healthy,
        needed,
    };
    [(
        vip(),
        vec![
            service("video-rtmp", rtmp_healthy, 2),
            service("video-hls", hls_healthy, 1),
        ],
    )]
    .into_iter()
    .collect()
}

struct Clock {
    start: Instant,
    quorums: Quorums,
    settings: Announce,
}

impl Clock {
    fn new(settings: Announce, inherited: bool) -> Self {
        let start = Instant::now();
        let inherited = if inherited {
            BTreeSet::from([vip()])
        } else {
            BTreeSet::new()
        };
        Self {
            start,
            quorums: Quorums::new(start, inherited),
            settings,
        }
    }

    /// The verdict at `secs` after the start with these figures: (announced, reason).
    fn at(
        &mut self,
        secs: f64,
        figures: VipServices,
        attached: Result<(), &str>,
    ) -> (bool, String) {
        let now = self.start + Duration::from_secs_f64(secs);
        self.quorums.update(now, &self.settings, attached, &figures);
        let (_, verdict) = self.quorums.verdicts().next().unwrap();
        (verdict.announce, verdict.reason.clone())
    }
}

#[test]
fn a_vip_is_announced_only_after_the_warm_up_and_while_every_service_has_its_quorum() {
    let mut clock = Clock::new(settings(10, 5), false);
    let (up, why) = clock.at(0.0, vips(3, 3), Ok(()));
    assert!(!up);
    assert_eq!(why, "warming up: announced in 10.0s");
    assert_eq!(
        clock.quorums.next_deadline(&clock.settings),
        Some(clock.start + Duration::from_secs(10))
    );
    assert!(!clock.at(9.9, vips(3, 3), Ok(())).0);
    assert!(clock.at(10.0, vips(3, 3), Ok(())).0);
    assert_eq!(clock.quorums.announced(), BTreeSet::from([vip()]));
    // One service below its min_healthy withdraws the whole VIP at once.
    let (up, why) = clock.at(11.0, vips(1, 3), Ok(()));
    assert!(!up);
    assert_eq!(
        why,
        "service video-rtmp has 1 of the 2 backend(s) min_healthy asks for"
    );
    assert!(clock.quorums.announced().is_empty());
}

#[test]
fn a_vip_that_lost_its_quorum_comes_back_only_after_holding_it_for_restore_after() {
    let mut clock = Clock::new(settings(0, 5), false);
    assert!(clock.at(0.0, vips(2, 1), Ok(())).0);
    assert!(!clock.at(1.0, vips(2, 0), Ok(())).0);
    // Back at 2 s: held 0 s of 5 s.
    let (up, why) = clock.at(2.0, vips(2, 1), Ok(()));
    assert!(!up);
    assert_eq!(why, "quorum back for 0.0s of the 5s restore_after asks for");
    assert_eq!(
        clock.quorums.next_deadline(&clock.settings),
        Some(clock.start + Duration::from_secs(7))
    );
    // A flap in the wait starts it again.
    assert!(!clock.at(4.0, vips(2, 0), Ok(())).0);
    assert!(!clock.at(5.0, vips(2, 1), Ok(())).0);
    assert!(!clock.at(9.9, vips(2, 1), Ok(())).0);
    assert!(clock.at(10.0, vips(2, 1), Ok(())).0);
    // Announced, it stays while the quorum holds.
    assert!(clock.at(100.0, vips(2, 1), Ok(())).0);
}

#[test]
fn a_detached_data_plane_withdraws_at_once_and_reattached_announces_at_once() {
    let mut clock = Clock::new(settings(0, 5), false);
    assert!(clock.at(0.0, vips(2, 1), Ok(())).0);
    let (up, why) = clock.at(1.0, vips(2, 1), Err("no XDP program on eth0"));
    assert!(!up);
    assert_eq!(
        why,
        "the data plane is not attached: no XDP program on eth0"
    );
    // The quorum never went: no restore_after wait.
    assert!(clock.at(1.5, vips(2, 1), Ok(())).0);
}

#[test]
fn an_inherited_announcement_skips_the_warm_up_but_not_the_quorum() {
    let mut clock = Clock::new(settings(60, 5), true);
    assert!(clock.at(0.0, vips(2, 1), Ok(())).0);
    let mut cold = Clock::new(settings(60, 5), true);
    assert!(!cold.at(0.0, vips(0, 1), Ok(())).0);
}

#[test]
fn min_healthy_zero_announces_a_vip_whose_backends_are_all_down() {
    let mut clock = Clock::new(settings(0, 5), false);
    let zero: VipServices = [(
        vip(),
        vec![ServiceQuorum {
            name: "video-hls".into(),
            healthy: 0,
            needed: 0,
        }],
    )]
    .into_iter()
    .collect();
    assert!(clock.at(0.0, zero, Ok(())).0);
}

#[test]
fn a_vip_no_longer_configured_is_forgotten() {
    let mut clock = Clock::new(settings(0, 5), false);
    assert!(clock.at(0.0, vips(2, 1), Ok(())).0);
    clock
        .quorums
        .update(clock.start, &clock.settings, Ok(()), &VipServices::new());
    assert!(clock.quorums.announced().is_empty());
    assert_eq!(clock.quorums.verdicts().count(), 0);
}
