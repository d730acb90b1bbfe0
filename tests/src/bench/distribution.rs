//! How flows spread over backends, computed with `xdp_lb::simulate` (the data plane's own
//! flow hash over tables from `maglev::build_table`): per-backend shares and imbalance for
//! N = 2 … 10, weights, flows moved when a backend leaves or joins, and two LBs building
//! their tables independently in their own kernels.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Result, anyhow, ensure};
use serde::Serialize;
use xdp_lb::{
    balancer::{Balancer, Forwarding},
    config::{Backend, DEFAULT_FLOW_HASH_SEED, FlowTable, MacAddr, Service},
    dataplane::{Dataplane, LoadOptions, LogLevel},
    simulate::{self, SplitMix64},
};

use super::{service_yaml, services, stats::Summary};

#[derive(Clone, Debug)]
pub struct DistributionOptions {
    pub flows: u32,
    pub runs: usize,
    pub maglev_size: u32,
}

/// N equal backends: each one's share (%) and the max/mean imbalance.
#[derive(Clone, Debug, Serialize)]
pub struct Spread {
    pub backends: u32,
    pub shares_percent: Vec<Summary>,
    pub max_over_mean: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct Weighted {
    pub weights: Vec<u32>,
    pub shares_percent: Vec<Summary>,
    pub ideal_percent: Vec<f64>,
    /// Each backend's flows over the lightest backend's, against weight over its weight.
    pub ratio_to_lightest: Vec<Summary>,
}

/// Flows moved (%) when one of N backends leaves, or an (N+1)-th joins.
#[derive(Clone, Debug, Serialize)]
pub struct Movement {
    pub backends: u32,
    pub removed_percent: Summary,
    pub remove_ideal_percent: f64,
    pub added_percent: Summary,
    pub add_ideal_percent: f64,
}

/// Two LBs, each with its own data plane, given the same backends in different orders.
#[derive(Clone, Debug, Serialize)]
pub struct TwoLbs {
    pub backends: u32,
    pub slots_compared: u64,
    pub slots_differing: u64,
    /// The same after one backend was removed on both.
    pub slots_differing_after_removal: u64,
    /// Random flows the two LBs would send to different backends (%).
    pub flows_differing_percent: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct DistributionResults {
    pub flows: u32,
    pub runs: usize,
    pub maglev_size: u32,
    pub spreads: Vec<Spread>,
    pub weighted: Vec<Weighted>,
    pub movements: Vec<Movement>,
    pub two_lbs: Vec<TwoLbs>,
}

fn addr(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 11 + i as u8))
}

/// Equal-weight `weights.len()` backends 10.0.0.11, .12, ... with these weights, in a
/// service of `maglev_size` slots on 10.0.0.100:8080/tcp.
fn service(weights: &[u32], maglev_size: u32) -> Result<Service> {
    let members: Vec<(IpAddr, u32)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| (addr(i as u32), w))
        .collect();
    let vip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));
    Ok(services(&service_yaml(
        "video-hls",
        vip,
        8080,
        "tcp",
        maglev_size,
        &members,
    ))?
    .remove(0))
}

/// The flow hashes of run `run`'s random flows (each run draws its own sample).
fn sample(service: &Service, opts: &DistributionOptions, run: usize) -> Vec<u32> {
    let mut rng = SplitMix64::new(simulate::DEFAULT_SAMPLE_SEED ^ (run as u64 + 1));
    simulate::random_flow_hashes(service, DEFAULT_FLOW_HASH_SEED, opts.flows, &mut rng)
}

fn shares_percent(weights: &[u32], opts: &DistributionOptions) -> Result<Vec<Vec<f64>>> {
    let svc = service(weights, opts.maglev_size)?;
    Ok((0..opts.runs)
        .map(|run| {
            let hashes = sample(&svc, opts, run);
            let placed = simulate::place(&svc.backends, opts.maglev_size, &hashes);
            let counts = simulate::count(&svc.backends, &placed);
            counts
                .iter()
                .map(|&c| c as f64 * 100.0 / hashes.len() as f64)
                .collect()
        })
        .collect())
}

/// Column `i` of per-run rows, summarised.
fn per_backend(rows: &[Vec<f64>], n: usize) -> Vec<Summary> {
    (0..n)
        .map(|i| Summary::of(&rows.iter().map(|r| r[i]).collect::<Vec<_>>()))
        .collect()
}

pub fn spread(n: u32, opts: &DistributionOptions) -> Result<Spread> {
    let rows = shares_percent(&vec![1; n as usize], opts)?;
    let imbalance: Vec<f64> = rows
        .iter()
        .map(|r| {
            let mean = r.iter().sum::<f64>() / r.len() as f64;
            r.iter().copied().fold(0.0, f64::max) / mean
        })
        .collect();
    Ok(Spread {
        backends: n,
        shares_percent: per_backend(&rows, n as usize),
        max_over_mean: Summary::of(&imbalance),
    })
}

pub fn weighted(weights: &[u32], opts: &DistributionOptions) -> Result<Weighted> {
    let rows = shares_percent(weights, opts)?;
    let svc = service(weights, opts.maglev_size)?;
    let lightest = (0..weights.len()).min_by_key(|&i| weights[i]).unwrap_or(0);
    let ratios: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.iter().map(|s| s / r[lightest]).collect())
        .collect();
    Ok(Weighted {
        weights: weights.to_vec(),
        shares_percent: per_backend(&rows, weights.len()),
        ideal_percent: simulate::ideal_shares(&svc.backends)
            .iter()
            .map(|s| s * 100.0)
            .collect(),
        ratio_to_lightest: per_backend(&ratios, weights.len()),
    })
}

pub fn movement(n: u32, opts: &DistributionOptions) -> Result<Movement> {
    let all = service(&vec![1; n as usize + 1], opts.maglev_size)?.backends;
    let base = all[..n as usize].to_vec();
    let svc = service(&vec![1; n as usize], opts.maglev_size)?;
    let mut removed = Vec::new();
    let mut added = Vec::new();
    for run in 0..opts.runs {
        let hashes = sample(&svc, opts, run);
        let before = simulate::place(&base, opts.maglev_size, &hashes);
        // Each run takes out another backend, so the figure is not one backend's luck.
        let mut fewer = base.clone();
        fewer.remove(run % n as usize);
        let after_remove = simulate::place(&fewer, opts.maglev_size, &hashes);
        removed.push(simulate::moved_share(&before, &after_remove) * 100.0);
        let after_add = simulate::place(&all, opts.maglev_size, &hashes);
        added.push(simulate::moved_share(&before, &after_add) * 100.0);
    }
    Ok(Movement {
        backends: n,
        removed_percent: Summary::of(&removed),
        remove_ideal_percent: 100.0 / f64::from(n),
        added_percent: Summary::of(&added),
        add_ideal_percent: 100.0 / f64::from(n + 1),
    })
}

fn loopback(b: &Backend) -> Option<Forwarding> {
    let last = match b.address {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    };
    Some(Forwarding {
        mac: MacAddr([0x02, 0xbe, 0, 0, 0, last]),
        src_mac: MacAddr([0x02, 0x1b, 0, 0, 0, 1]),
        ifindex: 1,
    })
}

/// An LB: its own data plane and balancer. `other_first` makes it load another service
/// first, so its backend ids and table regions differ from a plain LB's.
fn lb(maglev_size: u32, other_first: bool) -> Result<Balancer> {
    let dataplane = Dataplane::load(&LoadOptions {
        flow_hash_seed: DEFAULT_FLOW_HASH_SEED,
        maglev_table_slots: 4 * maglev_size,
        flow_table: FlowTable {
            size: 1024,
            ..FlowTable::default()
        },
        log_level: LogLevel::Error,
    })?;
    let mut balancer = Balancer::new(dataplane, DEFAULT_FLOW_HASH_SEED);
    if other_first {
        let members: Vec<(IpAddr, u32)> = (1..=3)
            .map(|i| (IpAddr::V4(Ipv4Addr::new(10, 9, 9, i)), 1))
            .collect();
        let vip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));
        let other = services(&service_yaml(
            "other",
            vip,
            1935,
            "tcp",
            maglev_size,
            &members,
        ))?;
        balancer.add_service(&other[0], &loopback)?;
    }
    Ok(balancer)
}

/// The kernel's live table of `name` on `balancer`, as backend addresses.
fn kernel_table(balancer: &Balancer, name: &str) -> Result<Vec<IpAddr>> {
    let state = balancer
        .service(name)
        .ok_or_else(|| anyhow!("no service {name}"))?;
    balancer
        .live_table(name)?
        .iter()
        .map(|id| {
            state
                .backends
                .values()
                .find(|b| b.id == *id)
                .map(|b| b.config.address)
                .ok_or_else(|| anyhow!("slot names unknown backend id {id}"))
        })
        .collect()
}

fn differing(a: &[IpAddr], b: &[IpAddr]) -> u64 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as u64 + a.len().abs_diff(b.len()) as u64
}

pub fn two_lbs(n: u32, opts: &DistributionOptions) -> Result<TwoLbs> {
    let svc_a = service(&vec![1; n as usize], opts.maglev_size)?;
    let mut svc_b = svc_a.clone();
    svc_b.backends.reverse();
    let set = svc_a.backends.clone();
    let mut a = lb(opts.maglev_size, false)?;
    let mut b = lb(opts.maglev_size, true)?;
    a.add_service(&svc_a, &loopback)?;
    b.add_service(&svc_b, &loopback)?;
    let (table_a, table_b) = (
        kernel_table(&a, &svc_a.name)?,
        kernel_table(&b, &svc_b.name)?,
    );
    ensure!(
        table_a.len() == opts.maglev_size as usize,
        "LB A's table has {} slots",
        table_a.len()
    );
    let mut flows_differing = Vec::new();
    for run in 0..opts.runs {
        let hashes = sample(&svc_a, opts, run);
        let m = opts.maglev_size;
        let pick = |t: &[IpAddr], h: u32| t.get((h % m) as usize).copied();
        let differ = hashes
            .iter()
            .filter(|&&h| pick(&table_a, h) != pick(&table_b, h))
            .count();
        flows_differing.push(differ as f64 * 100.0 / hashes.len() as f64);
    }
    let slots_differing = differing(&table_a, &table_b);
    let leaving = set[(n / 2) as usize].address;
    a.remove_backend(&svc_a.name, leaving)?;
    b.remove_backend(&svc_b.name, leaving)?;
    let after = differing(
        &kernel_table(&a, &svc_a.name)?,
        &kernel_table(&b, &svc_b.name)?,
    );
    Ok(TwoLbs {
        backends: n,
        slots_compared: table_a.len() as u64,
        slots_differing,
        slots_differing_after_removal: after,
        flows_differing_percent: Summary::of(&flows_differing),
    })
}

pub fn run(opts: &DistributionOptions) -> Result<DistributionResults> {
    let ns: Vec<u32> = (2..=10).collect();
    let spreads = ns.iter().map(|&n| spread(n, opts)).collect::<Result<_>>()?;
    let weighted = [vec![2, 1], vec![1, 2, 3, 4], vec![10, 1, 1]]
        .iter()
        .map(|w| weighted(w, opts))
        .collect::<Result<_>>()?;
    let movements = ns
        .iter()
        .map(|&n| movement(n, opts))
        .collect::<Result<_>>()?;
    let two_lbs = [3, 10]
        .iter()
        .map(|&n| two_lbs(n, opts))
        .collect::<Result<Vec<_>>>()?;
    Ok(DistributionResults {
        flows: opts.flows,
        runs: opts.runs,
        maglev_size: opts.maglev_size,
        spreads,
        weighted,
        movements,
        two_lbs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> DistributionOptions {
        DistributionOptions {
            flows: 20_000,
            runs: 5,
            maglev_size: 4099,
        }
    }

    #[test]
    fn every_run_shares_all_its_flows_and_the_imbalance_is_max_over_mean() {
        let s = spread(4, &opts()).unwrap();
        assert_eq!(s.shares_percent.len(), 4);
        for run in 0..5 {
            let shares: Vec<f64> = s.shares_percent.iter().map(|b| b.samples[run]).collect();
            assert!(
                (shares.iter().sum::<f64>() - 100.0).abs() < 1e-9,
                "{shares:?}"
            );
            let max = shares.iter().copied().fold(0.0, f64::max);
            assert!((s.max_over_mean.samples[run] - max / 25.0).abs() < 1e-12);
        }
        // Each run draws its own flows.
        assert_ne!(
            s.shares_percent[0].samples[0],
            s.shares_percent[0].samples[1]
        );
    }

    #[test]
    fn moved_shares_sit_next_to_their_ideals() {
        let m = movement(4, &opts()).unwrap();
        assert_eq!((m.remove_ideal_percent, m.add_ideal_percent), (25.0, 20.0));
        assert_eq!(m.removed_percent.samples.len(), 5);
        assert!((m.removed_percent.median - 25.0).abs() < 3.0, "{m:?}");
        assert!((m.added_percent.median - 20.0).abs() < 3.0, "{m:?}");
    }

    #[test]
    fn two_to_one_weights_give_about_two_to_one_flows() {
        let w = weighted(&[2, 1], &opts()).unwrap();
        assert_eq!(w.ideal_percent.len(), 2);
        assert!((w.ideal_percent[0] - 200.0 / 3.0).abs() < 1e-9);
        assert!((w.ratio_to_lightest[0].median - 2.0).abs() < 0.15, "{w:?}");
        assert_eq!(w.ratio_to_lightest[1].median, 1.0);
    }
}
