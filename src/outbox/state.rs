//! The state machine of an outbox row: the one place that says which states exist, which moves
//! between them are legal, and which state an attempt's outcome leads to.
//!
//! ```text
//!   pending ──claim──▶ sending ──2xx──────────────▶ done
//!                        │  ▲ └──failed for good───▶ dead
//!                        │  │
//!         retryable failure  claim (when due)
//!                        ▼  │
//!                     retry_wait
//! ```
//! A `sending` row whose lease expired is claimed again (`sending -> sending`); `pending` and
//! `retry_wait` rows may be cancelled to `dead` by an operator; `dead`, `retry_wait` and `sending`
//! rows may be reset to `pending` by an operator. `done` is final.
//!
//! The SQL side mirrors this table: a CHECK constraint refuses unknown states and a trigger
//! refuses the transitions below that are not listed (see `migrations/*/0001_outbox.sql`); the
//! test `transitions_match_migrations` keeps the two lists identical.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The persisted state of an outbox row (column `ferry_outbox.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Committed, waiting for its first attempt.
    Pending,
    /// Claimed by a relay that holds a lease on it.
    Sending,
    /// An attempt failed retryably; due again at `due_at`.
    RetryWait,
    /// Delivered. Final.
    Done,
    /// Failed for good (or cancelled); `last_error` says why.
    Dead,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 5] = [
        State::Pending,
        State::Sending,
        State::RetryWait,
        State::Done,
        State::Dead,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Sending => "sending",
            State::RetryWait => "retry_wait",
            State::Done => "done",
            State::Dead => "dead",
        }
    }

    /// Whether `self -> to` is a move of the state machine (same-state updates are not moves,
    /// except `sending -> sending`, the take-over of an expired lease).
    pub fn can_move_to(self, to: State) -> bool {
        TRANSITIONS.iter().any(|t| t.from == self && t.to == to)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`State::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state '{0}' (expected one of pending, sending, retry_wait, done, dead)")]
pub struct UnknownState(pub String);

impl FromStr for State {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// Who makes a move, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A relay claiming a due row or recording an attempt's outcome.
    Relay,
    /// An operator (SQL or the CLI) cancelling or resetting a row.
    Operator,
}

/// One legal move.
#[derive(Debug, Clone, Copy)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub by: Actor,
}

const fn t(from: State, to: State, by: Actor) -> Transition {
    Transition { from, to, by }
}

/// Every legal move. The migrations' transition guard lists exactly these pairs.
pub const TRANSITIONS: &[Transition] = &[
    t(State::Pending, State::Sending, Actor::Relay),
    t(State::Sending, State::Sending, Actor::Relay),
    t(State::Sending, State::Done, Actor::Relay),
    t(State::Sending, State::RetryWait, Actor::Relay),
    t(State::Sending, State::Dead, Actor::Relay),
    t(State::RetryWait, State::Sending, Actor::Relay),
    t(State::Pending, State::Dead, Actor::Operator),
    t(State::RetryWait, State::Dead, Actor::Operator),
    t(State::Dead, State::Pending, Actor::Operator),
    t(State::RetryWait, State::Pending, Actor::Operator),
    t(State::Sending, State::Pending, Actor::Operator),
];

/// What happened to one claimed row; decides the row's next state.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The target accepted the document.
    Done,
    /// A retryable failure: try again after `after` (measured on the database's clock).
    Retry { after: Duration, reason: String },
    /// A failure that retrying cannot fix, or the attempt budget is spent.
    Dead { reason: String },
    /// The row was not attempted (its target's circuit is open, or the relay is shutting down):
    /// hand it back, refund the attempt the claim counted, due again after `after`.
    Release { after: Duration },
    /// The request was cut off when the relay's shutdown grace period ended: the target may or
    /// may not have received it. The attempt counts (restarts cannot give unlimited attempts) and
    /// the row is due again at once; its attempt history says `aborted`.
    Aborted { reason: String },
}

impl Outcome {
    /// The state this outcome moves a `sending` row to.
    pub fn next_state(&self) -> State {
        match self {
            Outcome::Done => State::Done,
            Outcome::Retry { .. } | Outcome::Release { .. } | Outcome::Aborted { .. } => {
                State::RetryWait
            }
            Outcome::Dead { .. } => State::Dead,
        }
    }

    /// Wait before the row is due again, for outcomes that leave it live.
    pub fn wait(&self) -> Option<Duration> {
        match self {
            Outcome::Retry { after, .. } | Outcome::Release { after } => Some(*after),
            Outcome::Aborted { .. } => Some(Duration::ZERO),
            _ => None,
        }
    }

    /// Whether the claim's attempt is given back (the row was never attempted).
    pub fn refunds_attempt(&self) -> bool {
        matches!(self, Outcome::Release { .. })
    }

    /// The error text recorded in `last_error`, if any.
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Retry { reason, .. }
            | Outcome::Dead { reason }
            | Outcome::Aborted { reason } => Some(reason),
            _ => None,
        }
    }

    /// The value of `ferry_attempts.outcome` for an attempt with this result.
    pub fn attempt_label(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Retry { .. } | Outcome::Release { .. } => "retry",
            Outcome::Dead { .. } => "dead",
            Outcome::Aborted { .. } => "aborted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in State::ALL {
            assert_eq!(s.as_str().parse::<State>().unwrap(), s);
        }
        assert!("paused".parse::<State>().is_err());
    }

    #[test]
    fn done_is_final() {
        for s in State::ALL {
            assert!(!State::Done.can_move_to(s), "done -> {s} must be illegal");
        }
    }

    #[test]
    fn outcomes_lead_out_of_sending_only_legally() {
        let outcomes = [
            Outcome::Done,
            Outcome::Retry {
                after: Duration::from_secs(1),
                reason: "x".into(),
            },
            Outcome::Dead { reason: "x".into() },
            Outcome::Release {
                after: Duration::ZERO,
            },
            Outcome::Aborted { reason: "x".into() },
        ];
        for o in outcomes {
            assert!(State::Sending.can_move_to(o.next_state()), "{o:?}");
        }
    }

    /// The trigger in each migration must allow exactly the moves of [`TRANSITIONS`] that change
    /// the state (same-state updates are always allowed by the trigger).
    #[test]
    fn transitions_match_migrations() {
        let mut expected: Vec<String> = TRANSITIONS
            .iter()
            .filter(|t| t.from != t.to)
            .map(|t| format!("'{}>{}'", t.from, t.to))
            .collect();
        expected.sort();
        for sql in [
            include_str!("../../migrations/postgres/0001_outbox.sql"),
            include_str!("../../migrations/sqlite/0001_outbox.sql"),
        ] {
            let start = sql.find("NOT IN (").expect("guard list") + "NOT IN (".len();
            let end = start + sql[start..].find(')').unwrap();
            let mut listed: Vec<String> = sql[start..end]
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            listed.sort();
            assert_eq!(listed, expected);
        }
    }
}
