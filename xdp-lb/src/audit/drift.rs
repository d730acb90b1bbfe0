//! One difference between what the kernel's maps hold and what the agent means them to.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A difference the audit found. Ordered (subject first) so a report lists a service's
/// differences together, and comparable so the agent logs each one once.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Drift {
    /// What it is about, as an operator names it: `service video-rtmp 10.77.0.100:1935/tcp`,
    /// `backend 10.77.0.11 of video-rtmp (id 3)`, `interface eth0`.
    pub subject: String,
    /// Where the kernel differs: a map's name, or `xdp` / `links` for the attachment.
    pub map: String,
    /// How it differs (the agent's value in parentheses).
    pub problem: String,
}

impl Drift {
    pub fn new(subject: impl Into<String>, map: &str, problem: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            map: map.to_owned(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.problem)
    }
}
