//! A circuit breaker per target, so a target that keeps failing does not burn every row's
//! attempts. After `failures` consecutive retryable failures the circuit opens: rows of that
//! target are not claimed, and rows already claimed are handed back without spending an attempt.
//! When the open period ends, exactly one request (the probe) is let through; its success closes
//! the circuit, its failure opens it again for twice as long (up to `max_open_for`).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::workflow::CircuitPolicy;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, open_for: Duration },
    HalfOpen { probing: bool, open_for: Duration },
}

/// What the breaker says about sending a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Send it.
    Go,
    /// Send it as the one probe of a half-open circuit; report with `was_probe = true`.
    Probe,
    /// Do not send; hand the row back to be due after this long.
    Wait(Duration),
}

/// The gauge value for metrics and `ferry status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitView {
    Closed,
    HalfOpen,
    Open,
}

#[derive(Debug)]
pub struct Circuit {
    policy: CircuitPolicy,
    state: Mutex<State>,
}

impl Circuit {
    pub fn new(policy: CircuitPolicy) -> Self {
        Circuit {
            policy,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// May a request go out now?
    pub fn admit(&self) -> Admit {
        let mut s = self.state.lock().expect("circuit lock");
        let now = Instant::now();
        match *s {
            State::Closed { .. } => Admit::Go,
            State::Open { until, open_for } if now >= until => {
                *s = State::HalfOpen {
                    probing: true,
                    open_for,
                };
                Admit::Probe
            }
            State::Open { until, .. } => Admit::Wait(until - now),
            State::HalfOpen {
                probing: false,
                open_for,
            } => {
                *s = State::HalfOpen {
                    probing: true,
                    open_for,
                };
                Admit::Probe
            }
            // A probe is out; the others wait about as long as it may take.
            State::HalfOpen { probing: true, .. } => Admit::Wait(Duration::from_secs(1)),
        }
    }

    /// Report a request's result. `failed` means a retryable failure (5xx, timeout, connection
    /// failure); a 2xx or a non-retryable 4xx shows the target is up.
    /// Returns the state change, if any, for logging.
    pub fn record(&self, failed: bool, was_probe: bool) -> Option<CircuitView> {
        let mut s = self.state.lock().expect("circuit lock");
        let now = Instant::now();
        match (*s, failed) {
            (State::Closed { .. }, false) => {
                *s = State::Closed { failures: 0 };
                None
            }
            (State::Closed { failures }, true) => {
                let failures = failures + 1;
                if failures >= self.policy.failures {
                    *s = State::Open {
                        until: now + self.policy.open_for,
                        open_for: self.policy.open_for,
                    };
                    Some(CircuitView::Open)
                } else {
                    *s = State::Closed { failures };
                    None
                }
            }
            (State::HalfOpen { .. }, false) if was_probe => {
                *s = State::Closed { failures: 0 };
                Some(CircuitView::Closed)
            }
            (State::HalfOpen { open_for, .. }, true) if was_probe => {
                let open_for = (open_for * 2).min(self.policy.max_open_for);
                *s = State::Open {
                    until: now + open_for,
                    open_for,
                };
                Some(CircuitView::Open)
            }
            // Late results of requests sent before the circuit opened change nothing.
            _ => None,
        }
    }

    /// Should rows of this target be left unclaimed right now?
    pub fn paused(&self) -> bool {
        let s = self.state.lock().expect("circuit lock");
        match *s {
            State::Closed { .. } => false,
            State::Open { until, .. } => Instant::now() < until,
            State::HalfOpen { probing, .. } => probing,
        }
    }

    pub fn view(&self) -> CircuitView {
        match *self.state.lock().expect("circuit lock") {
            State::Closed { .. } => CircuitView::Closed,
            State::Open { .. } => CircuitView::Open,
            State::HalfOpen { .. } => CircuitView::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CircuitPolicy {
        CircuitPolicy {
            failures: 3,
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(25),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_probes_once() {
        let c = Circuit::new(policy());
        assert_eq!(c.record(true, false), None);
        assert_eq!(c.record(false, false), None); // a success resets the count
        assert_eq!(c.record(true, false), None);
        assert_eq!(c.record(true, false), None);
        assert_eq!(c.record(true, false), Some(CircuitView::Open));
        assert!(c.paused());
        assert!(matches!(c.admit(), Admit::Wait(d) if d <= Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!c.paused());
        assert_eq!(c.admit(), Admit::Probe);
        assert!(c.paused(), "no claims while the probe is out");
        assert!(matches!(c.admit(), Admit::Wait(_)));
        // The probe fails: open twice as long, capped.
        assert_eq!(c.record(true, true), Some(CircuitView::Open));
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(c.paused());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(c.admit(), Admit::Probe);
        assert_eq!(c.record(false, true), Some(CircuitView::Closed));
        assert_eq!(c.admit(), Admit::Go);
        assert!(!c.paused());
    }
}
