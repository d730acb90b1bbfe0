//! The lab itself, without the agent: the segment, the backends' nginx (HTTP and RTMP), the
//! LB host's own service, ARP for the VIP, and a teardown that leaves nothing behind. Needs
//! root; without it every test prints a line and passes.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use xdp_lb_tests::{Lab, LabOptions, netns};

fn skip_unless_root() -> bool {
    if xdp_lb_tests::is_root() {
        return false;
    }
    println!("skipping: the lab needs root");
    true
}

/// The lab's namespaces that `ip netns list` still shows.
fn leftovers(id: &str) -> Result<Vec<String>> {
    let prefix = format!("{id}-");
    Ok(netns::list()?
        .into_iter()
        .filter(|ns| ns.starts_with(&prefix))
        .collect())
}

#[test]
fn lab_serves_backends_and_lb_and_tears_down() -> Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let lab = Lab::up(LabOptions::default())?;
    let id = lab.id().to_owned();
    ensure!(
        leftovers(&id)?.len() == 3 + lab.backends(),
        "namespaces: {:?}",
        leftovers(&id)?
    );

    for i in 0..lab.backends() {
        let (addr, name) = (Lab::backend_addr(i), Lab::backend_name(i));
        let body = lab.http_get(&format!("http://{addr}:8080/"), None)?;
        assert_eq!(body, format!("{name}\n"), "GET / from backend {addr}");
        let health = lab.http_get(&format!("http://{addr}:8080/health"), None)?;
        assert_eq!(health, "ok\n", "GET /health from backend {addr}");
        let playlist = lab.http_get(&format!("http://{addr}:8080/live.m3u8"), None)?;
        assert!(playlist.starts_with("#EXTM3U") && playlist.contains(&format!("{name}-seg0.ts")));
    }

    let lb = lab.http_get(
        &format!("http://{}:{}/", Lab::LB_ADDR, Lab::LB_SERVICE_PORT),
        None,
    )?;
    assert_eq!(lb, "lb\n", "the LB host's own service");

    // Only the LB answers ARP for the VIP: the backends hold it on lo with arp_ignore=1.
    lab.exec_ok(lab.ns_client(), &["ping", "-c", "1", "-W", "2", Lab::VIP])?;
    let neigh = lab.exec_ok(
        lab.ns_client(),
        &["ip", "neigh", "show", Lab::VIP, "dev", "eth0"],
    )?;
    let lb_mac = lab.mac(lab.ns_lb(), "eth0")?;
    assert_eq!(lb_mac, Lab::LB_MAC);
    assert!(
        neigh.contains(&lb_mac),
        "client's neighbour entry for the VIP: {neigh:?}"
    );
    for i in 0..lab.backends() {
        assert!(
            !neigh.contains(&Lab::backend_mac(i)),
            "a backend answered ARP for the VIP: {neigh}"
        );
    }

    drop(lab);
    let left = leftovers(&id)?;
    assert!(left.is_empty(), "namespaces left after teardown: {left:?}");
    Ok(())
}

#[test]
fn backends_accept_rtmp_publishes_and_log_them() -> Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let lab = Lab::up(LabOptions {
        backends: 1,
        ..LabOptions::default()
    })?;
    let url = format!(
        "rtmp://{}:{}/live/smoke",
        Lab::backend_addr(0),
        Lab::RTMP_PORT
    );
    let argv = Lab::publish_argv(&url, 1);
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let output = lab.exec_timeout(lab.ns_client(), &args, Duration::from_secs(40))?;
    xdp_lb_tests::check(&args, output).context("publishing straight to backend b1")?;
    assert_eq!(lab.wait_rtmp_publish("smoke", Duration::from_secs(10))?, 0);
    let publishes = lab.rtmp_publishes(0)?;
    assert_eq!(publishes.len(), 1, "publish lines: {publishes:?}");
    Ok(())
}

#[test]
fn labs_run_side_by_side_and_a_panic_leaves_nothing() -> Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let first = Lab::up(LabOptions {
        backends: 1,
        ..LabOptions::default()
    })?;
    let first_id = first.id().to_owned();
    let second_id = std::panic::catch_unwind(|| {
        let second = Lab::up(LabOptions {
            backends: 2,
            ..LabOptions::default()
        })
        .unwrap_or_else(|err| panic!("second lab: {err:#}"));
        let sleeper = second
            .spawn(second.ns_backend(1), &["sleep", "600"])
            .unwrap_or_else(|err| panic!("spawn: {err:#}"));
        std::mem::forget(sleeper); // only the lab's teardown can stop it now
        std::panic::panic_any(second.id().to_owned());
    })
    .err()
    .and_then(|payload| payload.downcast::<String>().ok())
    .context("the second lab's closure did not panic with its id")?;
    assert_ne!(first_id, *second_id);
    assert!(
        leftovers(&second_id)?.is_empty(),
        "left: {:?}",
        leftovers(&second_id)?
    );
    // The first lab is untouched by the second one's teardown.
    let body = first.http_get(&format!("http://{}:8080/", Lab::backend_addr(0)), None)?;
    assert_eq!(body, "b1\n");
    Ok(())
}
