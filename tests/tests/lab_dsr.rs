//! End to end in the network-namespace lab (root only): a client, the LB running the agent,
//! three LVS/DR backends running real nginx with the RTMP module.

mod support;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use support::predict::lab_owner;
use support::{
    frames,
    raw::{parse_mac, send_raw},
};
use xdp_lb_tests::{Lab, LabOptions, LabProcess, is_root};

fn lab_with_agent() -> Lab {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    Lab::up(LabOptions {
        lb_agent: true,
        ..LabOptions::default()
    })
    .expect("bringing the lab up")
}

/// Which backend (0-based) the data plane sends a client flow to (see `support::predict`).
fn predicted_backend(lab: &Lab, client_port: u16, service_port: u16) -> usize {
    let backends: Vec<(IpAddr, u32)> = (0..lab.backends())
        .map(|i| (Lab::backend_addr(i).parse().unwrap(), 1))
        .collect();
    let owner = lab_owner(&backends, client_port, service_port).expect("backends");
    backends.iter().position(|(a, _)| *a == owner).unwrap()
}

/// tcpdump in a namespace writing to a file; stopped (and flushed) by `finish`.
struct Capture {
    process: LabProcess,
    file: std::path::PathBuf,
    ns: String,
}

impl Capture {
    fn start(lab: &Lab, ns: &str, name: &str, filter: &str) -> Capture {
        let file = lab.dir().join(format!("{name}.pcap"));
        let file_str = file.to_string_lossy().into_owned();
        // -Z root: tcpdump otherwise drops to its own user, which cannot write the lab directory.
        let mut args = vec![
            "tcpdump",
            "-Z",
            "root",
            "--immediate-mode",
            "-i",
            "eth0",
            "-n",
            "-U",
            "-w",
            &file_str,
        ];
        args.extend(filter.split_whitespace());
        let process = lab.spawn(ns, &args).expect("starting tcpdump");
        // tcpdump prints "listening on" to stderr once the capture is live.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(process.stderr() + &process.stdout()).contains("listening on")
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        Capture {
            process,
            file,
            ns: ns.to_owned(),
        }
    }

    /// Stops the capture; its packets as `tcpdump -e -n -r` lines.
    fn finish(mut self, lab: &Lab) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.process.signal(libc::SIGINT);
        let _ = self.process.wait_with_timeout(Duration::from_secs(10));
        let file = self.file.to_string_lossy().into_owned();
        lab.exec_ok(&self.ns, &["tcpdump", "-e", "-n", "-r", &file])
            .expect("reading the capture")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn http_through_the_vip_lands_on_the_backend_userspace_predicts_and_covers_all_backends() {
    let lab = lab_with_agent();
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for port in 41000..41030u16 {
        let body = lab
            .http_get_via_vip_from_port("/", port)
            .expect("a request through the VIP is answered");
        let expected = Lab::backend_name(predicted_backend(&lab, port, Lab::HTTP_PORT));
        assert_eq!(body.trim(), expected, "client port {port}");
        *answered.entry(body.trim().to_owned()).or_default() += 1;
    }
    assert_eq!(
        answered.len(),
        3,
        "every backend answered some requests: {answered:?}"
    );
}

#[test]
fn replies_go_from_the_backends_straight_to_the_client() {
    let lab = lab_with_agent();
    let lb_capture = Capture::start(&lab, lab.ns_lb(), "lb", &format!("host {}", Lab::VIP));
    let client_capture = Capture::start(
        &lab,
        lab.ns_client(),
        "client",
        &format!("src host {} and tcp", Lab::VIP),
    );
    for port in 42000..42010u16 {
        lab.http_get_via_vip_from_port("/", port)
            .expect("request through the VIP");
    }
    let at_lb = lb_capture.finish(&lab);
    let at_client = client_capture.finish(&lab);

    let vip_src = format!(" {}.8080 >", Lab::VIP);
    let from_vip_at_lb: Vec<&String> = at_lb.iter().filter(|l| l.contains(&vip_src)).collect();
    assert!(
        from_vip_at_lb.is_empty(),
        "the LB saw replies from the VIP (it should never carry them): {from_vip_at_lb:?}"
    );
    // The client got replies from the VIP, each in a frame whose source MAC is a backend's.
    let replies: Vec<&String> = at_client.iter().filter(|l| l.contains(&vip_src)).collect();
    assert!(replies.len() >= 10, "the client saw replies: {at_client:?}");
    let backend_macs: Vec<String> = (0..3).map(Lab::backend_mac).collect();
    for reply in replies {
        let src_mac = reply.split_whitespace().nth(1).unwrap_or_default();
        assert!(
            backend_macs.iter().any(|m| m == src_mac),
            "reply not from a backend's MAC: {reply}"
        );
        assert_ne!(src_mac, Lab::LB_MAC, "reply relayed by the LB: {reply}");
    }
}

#[test]
fn an_rtmp_publish_through_the_vip_lands_on_exactly_one_nginx_rtmp_backend() {
    let lab = lab_with_agent();
    lab.rtmp_publish_ok(3, "dsrtest")
        .expect("ffmpeg publishes through the VIP");
    let backend = lab
        .wait_rtmp_publish("dsrtest", Duration::from_secs(15))
        .expect("one backend logged the publish");
    assert!(backend < 3);
}

#[test]
fn the_lb_hosts_own_services_keep_working_while_balancing() {
    let lab = lab_with_agent();
    let own = lab
        .http_get(
            &format!("http://{}:{}/", Lab::LB_ADDR, Lab::LB_SERVICE_PORT),
            None,
        )
        .expect("the LB's own web service");
    assert_eq!(own.trim(), "lb");
    lab.exec_ok(
        lab.ns_client(),
        &["ping", "-c", "2", "-W", "2", Lab::LB_ADDR],
    )
    .expect("ping the LB");
    lab.exec_ok(lab.ns_client(), &["ping", "-c", "2", "-W", "2", Lab::VIP])
        .expect("ping the VIP (answered by the LB)");
    // A port of the VIP with no service is the LB host's own business: refused by its stack.
    let refused = lab
        .exec(
            lab.ns_client(),
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                &format!("http://{}:9999/", Lab::VIP),
            ],
        )
        .expect("curl");
    assert_eq!(
        refused.status.code(),
        Some(7),
        "curl: could not connect (reset by the LB's stack): {refused:?}"
    );
    // And balancing still works.
    lab.http_get_via_vip("/").expect("request through the VIP");
}

#[test]
fn garbage_frames_sent_at_the_lb_change_nothing() {
    let mut lab = lab_with_agent();
    let before = lab
        .http_get_via_vip_from_port("/", 43000)
        .expect("request before");
    assert_eq!(
        before.trim(),
        Lab::backend_name(predicted_backend(&lab, 43000, Lab::HTTP_PORT))
    );
    let lb_mac: [u8; 6] = parse_mac(Lab::LB_MAC);
    let mut frames_sent = Vec::new();
    for seed in 1..=300u64 {
        let mut frame = frames::garbage(seed, 14 + (seed as usize * 13) % 400);
        frame[0..6].copy_from_slice(&lb_mac);
        // A third claim IPv4 and a third IPv6, so the parser's bounds checks are exercised.
        match seed % 3 {
            0 => frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes()),
            1 => frame[12..14].copy_from_slice(&0x86ddu16.to_be_bytes()),
            _ => {}
        }
        frames_sent.push(frame);
    }
    // Truncated and lying headers aimed at the services.
    for len in [14, 20, 34, 40, 54] {
        let mut f =
            frames::Ipv4Frame::tcp(Lab::CLIENT_ADDR, 43001, Lab::VIP, Lab::HTTP_PORT).build();
        f[0..6].copy_from_slice(&lb_mac);
        f.truncate(len);
        frames_sent.push(f);
    }
    send_raw(lab.ns_client(), "eth0", frames_sent).expect("sending raw frames from the client");

    // (Port 43000 itself is in TIME_WAIT now; the next one is as predictable.)
    let after = lab
        .http_get_via_vip_from_port("/", 43002)
        .expect("request after");
    assert_eq!(
        after.trim(),
        Lab::backend_name(predicted_backend(&lab, 43002, Lab::HTTP_PORT)),
        "flows still land where the tables say"
    );
    let own = lab
        .http_get(
            &format!("http://{}:{}/", Lab::LB_ADDR, Lab::LB_SERVICE_PORT),
            None,
        )
        .expect("LB service");
    assert_eq!(own.trim(), "lb");
    assert!(
        lab.agent().expect("agent").is_running(),
        "the agent survived"
    );
}

#[test]
fn sigterm_detaches_the_program_and_the_agent_exits_cleanly() {
    let mut lab = lab_with_agent();
    let link = lab
        .exec_ok(lab.ns_lb(), &["ip", "link", "show", "eth0"])
        .expect("ip link");
    assert!(link.contains("xdp"), "attached while running: {link}");
    let agent = lab.agent().expect("agent");
    agent.signal(libc::SIGTERM).expect("SIGTERM");
    let output = agent
        .wait_with_timeout(Duration::from_secs(15))
        .expect("the agent exits");
    assert!(output.status.success(), "exit status {:?}", output.status);
    let link = lab
        .exec_ok(lab.ns_lb(), &["ip", "link", "show", "eth0"])
        .expect("ip link");
    assert!(!link.contains("xdp"), "detached after SIGTERM: {link}");
    assert!(lab.agent_log().contains("detached"), "{}", lab.agent_log());
}

#[test]
fn an_invalid_config_is_refused_before_anything_is_attached() {
    let lab = Lab::up(LabOptions::default()).expect("lab");
    let bad = lab.dir().join("bad.yaml");
    std::fs::write(&bad, lab.lab_config().replace("port: 8080", "port: 0")).unwrap();
    let binary = Lab::locate_agent_binary().expect("agent binary");
    let bad_str = bad.to_string_lossy().into_owned();
    let bin = binary.to_string_lossy().into_owned();
    let out = lab
        .exec(lab.ns_lb(), &[&bin, "--config", &bad_str])
        .expect("run the agent");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml:") && stderr.contains("port"),
        "{stderr}"
    );
    let link = lab
        .exec_ok(lab.ns_lb(), &["ip", "link", "show", "eth0"])
        .expect("ip link");
    assert!(!link.contains("xdp"), "nothing attached: {link}");
}
