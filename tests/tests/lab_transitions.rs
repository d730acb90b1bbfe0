//! Nothing an operator does to the config loses a stream (root only). With a config that
//! leaves `maglev_table_slots` to the agent, adding and removing a service, renaming one,
//! changing a table size and adding and removing a client pool each take effect, through
//! a reload and through a flow-keeping restart (SIGQUIT, edit, new agent; also with the
//! agent's snapshot gone, with another connection-table size, and after a kill -9 in the
//! middle of a burst of run-time changes), while a live RTMP publish runs on: it ends as one uninterrupted session on
//! the server it started on, and every new session lands where the new config says.
//!
//! The publish's server is drained first, so from then on Maglev would send its flow
//! elsewhere: only the connection table keeps it where it is.

mod support;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use support::{
    farm::Farm,
    sessions::{Ports, backend_index, status},
    stream::{
        assert_one_uninterrupted_publish, assert_publish_still_on, backend_holding_the_stream,
        publish_port, start_publish, wait_for,
    },
};
use xdp_lb::{
    config::{self, HostFacts},
    runtime::RuntimeChanges,
};
use xdp_lb_tests::{Lab, LabOptions, LabProcess, is_root};

const STREAM_SECONDS: u32 = 30;
const BACKENDS: usize = 4;

/// An edit of the config: what it does, for messages, and doing it.
type Edit = (&'static str, fn(&mut Farm));

/// The edits both walks make, in order, each from the config the one before left.
const EDITS: [Edit; 6] = [
    ("adding service video-hls", |f| f.hls = Some(vec![1, 2, 3])),
    ("renaming video-rtmp to video-live", |f| {
        f.rtmp_name = "video-live"
    }),
    ("changing maglev_size to 251", |f| f.maglev_size = Some(251)),
    ("adding pool blue (b1) for the client", |f| {
        f.blue_pool = Some(0)
    }),
    ("removing pool blue", |f| f.blue_pool = None),
    ("removing service video-hls", |f| f.hls = None),
];

/// The farm before any edit: video-rtmp on b2, b3 and b4; b1 spare.
fn first_farm() -> Farm {
    Farm {
        rtmp_name: "video-rtmp",
        rtmp: vec![(1, 1), (2, 1), (3, 1)],
        maglev_size: None,
        blue_pool: None,
        hls: None,
        flow_table_size: None,
    }
}

/// A lab running an agent on `farm`, a live publish, its client port and its server.
struct Live {
    lab: Lab,
    binary: PathBuf,
    config: PathBuf,
    agent: LabProcess,
    ffmpeg: LabProcess,
    port: u16,
    holder: usize,
}

fn live(farm: &Farm, stream: &str) -> Live {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    let lab = Lab::up(LabOptions {
        backends: BACKENDS,
        ..LabOptions::default()
    })
    .expect("lab");
    let config = lab.dir().join("xdp-lb.yaml");
    farm.write(&config);
    let binary = Lab::locate_agent_binary().expect("agent binary");
    let agent = lab.start_agent(&binary, &config).expect("agent");
    let ffmpeg = start_publish(&lab, stream, STREAM_SECONDS);
    let port =
        wait_for(Duration::from_secs(15), || publish_port(&lab)).expect("the publish connected");
    let holder = wait_for(Duration::from_secs(5), || {
        backend_holding_the_stream(&lab, BACKENDS)
    })
    .expect("a backend holds the publish");
    Live {
        lab,
        binary,
        config,
        agent,
        ffmpeg,
        port,
        holder,
    }
}

impl Live {
    /// Writes `farm` and has the agent reload it; panics with the agent's refusal.
    #[track_caller]
    fn reload(&self, farm: &Farm, what: &str) {
        farm.write(&self.config);
        let out = self
            .lab
            .agent_command(&self.binary, &["reload"])
            .expect("xdp-lb reload");
        assert!(
            out.status.success(),
            "{what} is applied by a reload: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// SIGQUIT (the agent leaves the data plane running), `farm` written, a new agent.
    #[track_caller]
    fn restart_keeping_flows(&mut self, farm: &Farm, forget_snapshot: bool) {
        self.agent.signal(libc::SIGQUIT).expect("SIGQUIT");
        self.agent
            .wait_with_timeout(Duration::from_secs(15))
            .expect("the agent exits on SIGQUIT");
        farm.write(&self.config);
        if forget_snapshot {
            let state = self.lab.agent_state_path();
            assert!(state.exists(), "the agent kept a snapshot");
            std::fs::remove_file(&state).expect("deleting the snapshot");
        }
        self.agent = self.start_next_agent();
    }

    #[track_caller]
    fn start_next_agent(&self) -> LabProcess {
        let agent = self
            .lab
            .start_agent(&self.binary, &self.config)
            .unwrap_or_else(|e| panic!("the next agent starts: {e:#}"));
        assert!(
            self.lab.agent_log().contains("adopted the data plane"),
            "the next agent adopts the running data plane:\n{}",
            self.lab.agent_log()
        );
        agent
    }

    #[track_caller]
    fn assert_publish_still_on_its_server(&mut self, what: &str) {
        assert_publish_still_on(&self.lab, &mut self.ffmpeg, self.holder, self.port, what);
    }

    /// Drains the publish's server in the YAML (a reload any agent applies).
    fn drain_the_publishs_server(&mut self, farm: &mut Farm) {
        farm.set_weight(self.holder, 0);
        self.reload(farm, "draining the publish's server");
        self.assert_publish_still_on_its_server("draining its server");
    }

    fn finish(mut self, stream: &str) {
        assert_one_uninterrupted_publish(
            &self.lab,
            &mut self.ffmpeg,
            stream,
            STREAM_SECONDS,
            self.holder,
            BACKENDS,
        );
        assert!(self.agent.is_running(), "{}", self.lab.agent_log());
    }
}

#[test]
fn reloads_that_add_remove_and_rename_services_resize_tables_and_add_and_remove_pools_keep_a_live_publish_and_steer_new_sessions()
 {
    let mut farm = first_farm();
    let mut live = live(&farm, "through-reloads");
    let mut ports = Ports(41000);
    live.drain_the_publishs_server(&mut farm);

    for (what, edit) in EDITS {
        edit(&mut farm);
        live.reload(&farm, what);
        live.assert_publish_still_on_its_server(what);
        farm.assert_running(&live.lab, &live.binary, &mut ports, what);
    }
    live.finish("through-reloads");
}

#[test]
fn flow_keeping_restarts_through_every_kind_of_edit_without_the_snapshot_and_after_kill_9_mid_burst_keep_a_live_publish()
 {
    let mut farm = first_farm();
    let mut live = live(&farm, "through-restarts");
    let mut ports = Ports(42000);
    live.drain_the_publishs_server(&mut farm);

    for (what, edit) in EDITS {
        edit(&mut farm);
        let what = format!("a restart {what}");
        live.restart_keeping_flows(&farm, false);
        live.assert_publish_still_on_its_server(&what);
        farm.assert_running(&live.lab, &live.binary, &mut ports, &what);
    }

    // A connection table of another size cannot be adopted as it is: the next agent moves
    // the live flows into a new one (the publish's own among them: its server is drained,
    // so Maglev would send it elsewhere).
    let what = "a restart with flow_table.size changed to 4096";
    farm.flow_table_size = Some(4096);
    live.restart_keeping_flows(&farm, false);
    assert!(
        live.lab
            .agent_log()
            .contains("from the pinned connection table (262144 entries, flags 0x0) into a new one (4096 entries, flags 0x0)"),
        "the next agent moved the live flows into a table of 4096:\n{}",
        live.lab.agent_log()
    );
    live.assert_publish_still_on_its_server(what);
    farm.assert_running(&live.lab, &live.binary, &mut ports, what);

    // b1 joins the default pool, and the new agent has no snapshot: it cannot reuse the
    // earlier agent's backend ids, and b1 sorts first.
    let what = "a restart without the snapshot, b1 added";
    farm.set_weight(0, 1);
    live.restart_keeping_flows(&farm, true);
    live.assert_publish_still_on_its_server(what);
    farm.assert_running(&live.lab, &live.binary, &mut ports, what);

    // kill -9 while run-time changes to the other servers come in.
    let what = "kill -9 in a burst of run-time changes";
    let others: Vec<usize> = (0..BACKENDS).filter(|i| *i != live.holder).collect();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let burst = s.spawn(|| burst_of_changes(&live.lab, &live.binary, &farm, &others, &stop));
        thread::sleep(Duration::from_millis(1500));
        live.agent.signal(libc::SIGKILL).expect("kill -9");
        stop.store(true, Ordering::Relaxed);
        let applied = burst.join().expect("the burst");
        assert!(
            applied >= 3,
            "the agent took {applied} changes before it died"
        );
    });
    live.agent
        .wait_with_timeout(Duration::from_secs(10))
        .expect("the agent died");
    live.agent = live.start_next_agent();
    live.assert_publish_still_on_its_server(what);
    let farm = farm_with_runtime_changes(&live.lab, &live.config, &farm);
    assert_status_weights_are(&live, &farm, what);
    farm.assert_running(&live.lab, &live.binary, &mut ports, what);

    live.finish("through-restarts");
}

/// `xdp-lb backend weight|drain|enable|remove|add` on the servers `others` in a loop until
/// `stop`; how many the agent accepted.
fn burst_of_changes(
    lab: &Lab,
    binary: &Path,
    farm: &Farm,
    others: &[usize],
    stop: &AtomicBool,
) -> usize {
    let service = farm.rtmp_name;
    let addr = |i: usize| Lab::backend_addr(others[i]);
    let mut accepted = 0;
    for round in 1u32.. {
        let weight = (round % 5 + 1).to_string();
        let steps: [Vec<String>; 5] = [
            vec!["weight".into(), addr(0), weight],
            vec!["drain".into(), addr(1)],
            vec!["remove".into(), addr(2)],
            vec!["enable".into(), addr(1)],
            vec!["add".into(), addr(2), "--weight".into(), "2".into()],
        ];
        for step in steps {
            if stop.load(Ordering::Relaxed) {
                return accepted;
            }
            let mut args = vec!["backend", step[0].as_str(), service];
            args.extend(step[1..].iter().map(String::as_str));
            if lab
                .agent_command(binary, &args)
                .is_ok_and(|out| out.status.success())
            {
                accepted += 1;
            }
        }
    }
    accepted
}

/// Validation on the test host, which has no `eth0` of the lab's LB.
struct AnyInterface;

impl HostFacts for AnyInterface {
    fn interface_exists(&self, _name: &str) -> bool {
        true
    }
}

/// `farm` with the RTMP backends the YAML at `config` and the lab's run-time changes file
/// make together.
fn farm_with_runtime_changes(lab: &Lab, config: &Path, farm: &Farm) -> Farm {
    let yaml = config::load(config, &AnyInterface).expect("the YAML loads");
    // Applying may drop changes from the file: work on a copy.
    let copy = lab.dir().join("runtime-changes.expected.json");
    std::fs::copy(lab.runtime_file_path(), &copy).expect("the run-time changes file");
    let (effective, _) = RuntimeChanges::load(&copy)
        .and_then(|mut changes| changes.apply(&yaml))
        .expect("the run-time changes apply");
    let service = effective
        .services
        .iter()
        .find(|s| s.name == farm.rtmp_name)
        .expect("the RTMP service");
    let rtmp = service
        .backends
        .iter()
        .map(|b| {
            let i = backend_index(&b.address.to_string()).expect("lab backend");
            (i, b.weight)
        })
        .collect();
    Farm {
        rtmp,
        ..farm.clone()
    }
}

/// `status` shows the RTMP service's backends with exactly `farm`'s weights.
fn assert_status_weights_are(live: &Live, farm: &Farm, what: &str) {
    let report = status(&live.lab, &live.binary);
    let service = report
        .services
        .iter()
        .find(|s| s.name == farm.rtmp_name)
        .expect("the RTMP service in status");
    let mut shown: Vec<(String, u32)> = service
        .backends
        .iter()
        .filter(|b| b.pool == "default")
        .map(|b| (b.address.to_string(), b.weight))
        .collect();
    let mut wanted: Vec<(String, u32)> = farm
        .rtmp
        .iter()
        .map(|(i, w)| (Lab::backend_addr(*i), *w))
        .collect();
    shown.sort();
    wanted.sort();
    let changes = std::fs::read_to_string(live.lab.runtime_file_path()).unwrap_or_default();
    assert_eq!(
        shown, wanted,
        "after {what}: status shows the YAML with the run-time changes file applied:\n{changes}"
    );
}
