//! How long Maglev table switches take, measured around the balancer calls that make them.
//! Which services switched is told by their generation (`ServiceState::generation`, bumped
//! by every switch); a call that switches several tables is charged to each of them.

use std::{collections::BTreeMap, time::Duration};

use tokio::time::Instant;

use crate::balancer::Balancer;

/// The last measured switch of each service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableSwitches {
    last: BTreeMap<String, Duration>,
}

/// A measurement under way: the generations before the call, and when it started.
#[derive(Debug)]
pub struct Stopwatch {
    generations: BTreeMap<String, u32>,
    started: Instant,
}

impl TableSwitches {
    /// Call right before the balancer call to measure.
    pub fn start(balancer: &Balancer) -> Stopwatch {
        Stopwatch {
            generations: generations(balancer),
            started: Instant::now(),
        }
    }

    /// Call right after it: services whose table switched get the time it took. Services
    /// that no longer exist are forgotten.
    pub fn stop(&mut self, watch: Stopwatch, balancer: &Balancer) {
        let took = watch.started.elapsed();
        let now = generations(balancer);
        for (name, generation) in &now {
            if watch.generations.get(name) != Some(generation) {
                self.last.insert(name.clone(), took);
            }
        }
        self.last.retain(|name, _| now.contains_key(name));
    }

    /// The last measured switch of each service.
    pub fn last(&self) -> &BTreeMap<String, Duration> {
        &self.last
    }
}

fn generations(balancer: &Balancer) -> BTreeMap<String, u32> {
    balancer
        .services()
        .map(|s| (s.config.name.clone(), s.generation))
        .collect()
}
