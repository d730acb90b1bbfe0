//! keepalived's rise and fall: a server's state flips only after `fall` bad checks in a
//! row (up to down) or `rise` good checks in a row (down to up). A result that agrees with
//! the state resets the count, so one lost check among good ones never flips anything.

use crate::config::HealthState;

/// One server's state and the run of results against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hysteresis {
    state: HealthState,
    /// Results in a row that disagree with `state`.
    against: u32,
    rise: u32,
    fall: u32,
}

/// A change of state, and how many checks in a row made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flip {
    pub from: HealthState,
    pub to: HealthState,
    pub checks: u32,
}

impl Hysteresis {
    /// Starts in `state`. `rise` and `fall` below 1 count as 1.
    pub fn new(state: HealthState, rise: u32, fall: u32) -> Self {
        Self {
            state,
            against: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Records one check's result; the flip it completes, if any.
    pub fn record(&mut self, good: bool) -> Option<Flip> {
        let (agrees, needed, other) = match self.state {
            HealthState::Up => (good, self.fall, HealthState::Down),
            HealthState::Down => (!good, self.rise, HealthState::Up),
        };
        if agrees {
            self.against = 0;
            return None;
        }
        self.against += 1;
        if self.against < needed {
            return None;
        }
        let flip = Flip {
            from: self.state,
            to: other,
            checks: self.against,
        };
        self.state = other;
        self.against = 0;
        Some(flip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthState::{Down, Up};

    /// Feeds `results` ('+' good, '-' bad); the index and flip of every change.
    fn run(mut h: Hysteresis, results: &str) -> Vec<(usize, Flip)> {
        results
            .chars()
            .enumerate()
            .filter_map(|(i, c)| h.record(c == '+').map(|f| (i, f)))
            .collect()
    }

    #[test]
    fn an_up_server_goes_down_after_fall_bad_checks_in_a_row() {
        let flips = run(Hysteresis::new(Up, 3, 2), "++--");
        assert_eq!(
            flips,
            [(
                3,
                Flip {
                    from: Up,
                    to: Down,
                    checks: 2
                }
            )]
        );
    }

    #[test]
    fn one_lost_check_never_flips_a_state() {
        assert_eq!(run(Hysteresis::new(Up, 3, 2), "+-+-+-+-+"), []);
        assert_eq!(run(Hysteresis::new(Down, 2, 2), "-+-+-+-"), []);
    }

    #[test]
    fn a_down_server_comes_back_after_rise_good_checks_in_a_row() {
        let flips = run(Hysteresis::new(Down, 3, 2), "++-+++");
        assert_eq!(
            flips,
            [(
                5,
                Flip {
                    from: Down,
                    to: Up,
                    checks: 3
                }
            )]
        );
    }

    #[test]
    fn a_server_that_dies_and_recovers_flips_twice() {
        let mut h = Hysteresis::new(Up, 3, 2);
        let flips = run(h.clone(), "+---+++-");
        assert_eq!(
            flips,
            [
                (
                    2,
                    Flip {
                        from: Up,
                        to: Down,
                        checks: 2
                    }
                ),
                (
                    6,
                    Flip {
                        from: Down,
                        to: Up,
                        checks: 3
                    }
                )
            ]
        );
        h.record(false);
        h.record(false);
        assert_eq!(h.state(), Down);
    }

    #[test]
    fn rise_one_brings_a_server_back_at_its_first_good_check() {
        assert_eq!(
            run(Hysteresis::new(Down, 1, 2), "-+"),
            [(
                1,
                Flip {
                    from: Down,
                    to: Up,
                    checks: 1
                }
            )]
        );
    }

    #[test]
    fn a_server_starting_down_needs_rise_good_checks_and_never_flips_on_failures() {
        assert_eq!(run(Hysteresis::new(Down, 3, 2), "------"), []);
        assert_eq!(
            run(Hysteresis::new(Down, 3, 2), "+++"),
            [(
                2,
                Flip {
                    from: Down,
                    to: Up,
                    checks: 3
                }
            )]
        );
    }
}
