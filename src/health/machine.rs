//! Rise/fall hysteresis: consecutive results turn observations into a state.

use crate::config::InitialState;

/// The state of one endpoint as seen from one vantage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    pub up: bool,
    /// Consecutive successes while down.
    pub ok_streak: u32,
    /// Consecutive failures while up.
    pub fail_streak: u32,
}

impl Machine {
    pub fn new(initial: InitialState) -> Machine {
        Machine {
            up: initial == InitialState::Up,
            ok_streak: 0,
            fail_streak: 0,
        }
    }

    /// Feeds one result; returns whether the state changed. Up goes down
    /// after `fall` consecutive failures, down goes up after `rise`
    /// consecutive successes.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        match (self.up, ok) {
            (true, true) => {
                self.fail_streak = 0;
                false
            }
            (true, false) => {
                self.fail_streak += 1;
                if self.fail_streak >= fall.max(1) {
                    self.up = false;
                    self.fail_streak = 0;
                    self.ok_streak = 0;
                    true
                } else {
                    false
                }
            }
            (false, true) => {
                self.ok_streak += 1;
                if self.ok_streak >= rise.max(1) {
                    self.up = true;
                    self.ok_streak = 0;
                    self.fail_streak = 0;
                    true
                } else {
                    false
                }
            }
            (false, false) => {
                self.ok_streak = 0;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_successes() {
        let mut m = Machine::new(InitialState::Up);
        assert!(!m.observe(false, 2, 3));
        assert!(!m.observe(false, 2, 3));
        assert!(m.up);
        assert!(m.observe(false, 2, 3), "third failure takes it down");
        assert!(!m.up);
        assert!(!m.observe(true, 2, 3));
        assert!(!m.observe(false, 2, 3), "a failure resets the rise streak");
        assert!(!m.observe(true, 2, 3));
        assert!(m.observe(true, 2, 3));
        assert!(m.up);
    }

    #[test]
    fn a_success_resets_the_fall_streak_so_flapping_stays_up() {
        let mut m = Machine::new(InitialState::Up);
        for _ in 0..50 {
            m.observe(false, 2, 3);
            m.observe(false, 2, 3);
            m.observe(true, 2, 3);
        }
        assert!(m.up);
    }

    #[test]
    fn initial_down_needs_rise_successes() {
        let mut m = Machine::new(InitialState::Down);
        assert!(!m.up);
        m.observe(true, 3, 1);
        m.observe(true, 3, 1);
        assert!(!m.up);
        m.observe(true, 3, 1);
        assert!(m.up);
    }
}
