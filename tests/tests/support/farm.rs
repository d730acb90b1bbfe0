//! The video farm as the transition tests edit it: the RTMP service (its name, backends,
//! table size, a pool for the lab's client), an optional HLS service, and the checks that
//! the running agent is that config: `status` names it, new sessions land where it says.

#![allow(dead_code)]

use std::{collections::BTreeSet, fmt::Write as _, path::Path};

use xdp_lb_tests::Lab;

use super::{
    sessions::{Ports, http_session_lands_on, maglev_choice, new_sessions_follow, status},
    stream::named_rtmp_config,
};

/// The table size a service gets when its YAML says none.
pub const DEFAULT_MAGLEV_SIZE: u32 = 65537;

#[derive(Clone, Debug)]
pub struct Farm {
    /// The RTMP service's name.
    pub rtmp_name: &'static str,
    /// Its own backends: (backend index, weight).
    pub rtmp: Vec<(usize, u32)>,
    /// Its `maglev_size`, when the YAML gives one.
    pub maglev_size: Option<u32>,
    /// A pool `blue` of this one backend, with a rule sending the lab's client there.
    pub blue_pool: Option<usize>,
    /// The backends of service video-hls (the VIP's HTTP port), when there is one.
    pub hls: Option<Vec<usize>>,
    /// `flow_table.size`, when the YAML gives one (a restart changes it).
    pub flow_table_size: Option<u32>,
}

impl Farm {
    /// The config, with no `maglev_table_slots`: the agent sizes the table space itself.
    pub fn yaml(&self) -> String {
        let mut extra = String::new();
        if let Some(size) = self.maglev_size {
            let _ = writeln!(extra, "    maglev_size: {size}");
        }
        if let Some(b) = self.blue_pool {
            let _ = write!(
                extra,
                "    pools:\n      blue:\n        backends: [{{address: {}}}]\n    clients:\n      - {{prefix: {}/32, pool: blue}}\n",
                Lab::backend_addr(b),
                Lab::CLIENT_ADDR
            );
        }
        let mut yaml = named_rtmp_config(self.rtmp_name, &self.rtmp, &extra);
        if let Some(size) = self.flow_table_size {
            yaml = format!("flow_table:\n  size: {size}\n{yaml}");
        }
        if let Some(hls) = &self.hls {
            let _ = write!(
                yaml,
                "  - name: video-hls\n    vip: {}\n    port: {}\n    protocol: tcp\n    backends:\n",
                Lab::VIP,
                Lab::HTTP_PORT
            );
            for i in hls {
                let _ = writeln!(yaml, "      - address: {}", Lab::backend_addr(*i));
            }
        }
        yaml
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.yaml()).expect("writing the config");
    }

    /// Backend `i` of the RTMP service at weight `weight`.
    pub fn set_weight(&mut self, i: usize, weight: u32) {
        match self.rtmp.iter_mut().find(|(b, _)| *b == i) {
            Some(entry) => entry.1 = weight,
            None => self.rtmp.push((i, weight)),
        }
    }

    /// Where a new RTMP session from the client's `port` goes under this config.
    pub fn rtmp_choice(&self, port: u16) -> usize {
        match self.blue_pool {
            Some(b) => b,
            None => maglev_choice(
                &self.rtmp,
                self.maglev_size.unwrap_or(DEFAULT_MAGLEV_SIZE),
                port,
                Lab::RTMP_PORT,
            ),
        }
    }

    /// Where a new HLS session from the client's `port` goes under this config.
    pub fn hls_choice(&self, port: u16) -> usize {
        let hls: Vec<(usize, u32)> = self
            .hls
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|i| (*i, 1))
            .collect();
        maglev_choice(&hls, DEFAULT_MAGLEV_SIZE, port, Lab::HTTP_PORT)
    }

    /// Asserts that the running agent is this config (`after` names the change, for
    /// messages): `status` lists exactly its services with the RTMP table size; new RTMP
    /// sessions land where it says, and so do HLS sessions, or none is balanced when there
    /// is no HLS service.
    #[track_caller]
    pub fn assert_running(&self, lab: &Lab, binary: &Path, ports: &mut Ports, after: &str) {
        let report = status(lab, binary);
        assert!(
            report.drift.is_empty(),
            "after {after}: the kernel's maps differ from the agent's intent: {:?}",
            report.drift
        );
        let names: BTreeSet<&str> = report.services.iter().map(|s| s.name.as_str()).collect();
        let mut wanted = BTreeSet::from([self.rtmp_name]);
        if self.hls.is_some() {
            wanted.insert("video-hls");
        }
        assert_eq!(names, wanted, "after {after}: the services `status` shows");
        let rtmp = report
            .services
            .iter()
            .find(|s| s.name == self.rtmp_name)
            .expect("the RTMP service");
        assert_eq!(
            rtmp.maglev_size,
            self.maglev_size.unwrap_or(DEFAULT_MAGLEV_SIZE),
            "after {after}: {}'s table size",
            self.rtmp_name
        );
        new_sessions_follow(lab, binary, ports, 2, Lab::RTMP_PORT, after, &|p| {
            self.rtmp_choice(p)
        });
        if self.hls.is_some() {
            new_sessions_follow(lab, binary, ports, 2, Lab::HTTP_PORT, after, &|p| {
                self.hls_choice(p)
            });
        } else {
            let port = ports.next();
            assert!(
                http_session_lands_on(lab, port).is_err(),
                "after {after}: with no HLS service the VIP's HTTP port is balanced to no backend"
            );
        }
    }
}
