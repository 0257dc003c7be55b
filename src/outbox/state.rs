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
///
/// Read from and written to the database as its name ([`State::as_str`]) in a TEXT column, on
/// either backend; serialised as the same snake_case name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
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

    /// Whether `self -> to` is a move `by` may make (an operator's cancel or reset, or a relay's
    /// claim or outcome).
    pub fn can_move_by(self, to: State, by: Actor) -> bool {
        TRANSITIONS
            .iter()
            .any(|t| t.from == self && t.to == to && t.by == by)
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
    pub fn attempt_outcome(&self) -> AttemptOutcome {
        match self {
            Outcome::Done => AttemptOutcome::Done,
            Outcome::Retry { .. } | Outcome::Release { .. } => AttemptOutcome::Retry,
            Outcome::Dead { .. } => AttemptOutcome::Dead,
            Outcome::Aborted { .. } => AttemptOutcome::Aborted,
        }
    }

    /// [`Outcome::attempt_outcome`] by name (the `outcome` label of the attempt metrics).
    pub fn attempt_label(&self) -> &'static str {
        self.attempt_outcome().as_str()
    }
}

/// How one attempt ended, as recorded in `ferry_attempts.outcome` (a CHECK constraint in the
/// migrations lists the same names).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The target accepted the document (the row went `done`).
    Done,
    /// A retryable failure (the row went `retry_wait`).
    Retry,
    /// Failed for good (the row went `dead`), or delivered but its on-done SQL failed.
    Dead,
    /// The request was cut off when the relay's shutdown grace period ended.
    Aborted,
}

impl AttemptOutcome {
    /// Every outcome.
    pub const ALL: [AttemptOutcome; 4] = [
        AttemptOutcome::Done,
        AttemptOutcome::Retry,
        AttemptOutcome::Dead,
        AttemptOutcome::Aborted,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Done => "done",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Dead => "dead",
            AttemptOutcome::Aborted => "aborted",
        }
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attempt outcome name that is not one of [`AttemptOutcome::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown attempt outcome '{0}' (expected one of done, retry, dead, aborted)")]
pub struct UnknownOutcome(pub String);

impl FromStr for AttemptOutcome {
    type Err = UnknownOutcome;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttemptOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownOutcome(s.to_string()))
    }
}

/// `sqlx` encoding of a name enum as TEXT, for every database whose `&str` is TEXT (both
/// backends): decoding reads the text and parses it, so an unknown name is a decode error that
/// names it, never a silently wrong value.
macro_rules! sqlx_text_enum {
    ($ty:ty) => {
        impl<DB: sqlx::Database> sqlx::Type<DB> for $ty
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $ty
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(<&'r str as sqlx::Decode<'r, DB>>::decode(value)?.parse::<$ty>()?)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $ty
        where
            &'q str: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&'q str as sqlx::Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }
    };
}

sqlx_text_enum!(State);
sqlx_text_enum!(AttemptOutcome);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in State::ALL {
            assert_eq!(s.as_str().parse::<State>().unwrap(), s);
        }
        assert!("paused".parse::<State>().is_err());
        for o in AttemptOutcome::ALL {
            assert_eq!(o.as_str().parse::<AttemptOutcome>().unwrap(), o);
        }
        assert!("stale".parse::<AttemptOutcome>().is_err());
    }

    #[test]
    fn names_serialise_as_stored() {
        for s in State::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for o in AttemptOutcome::ALL {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
    }

    /// The CHECK constraint on `ferry_attempts.outcome` (its latest form) lists exactly
    /// [`AttemptOutcome::ALL`].
    #[test]
    fn attempt_outcomes_match_migrations() {
        let mut expected: Vec<String> = AttemptOutcome::ALL
            .iter()
            .map(|o| format!("'{o}'"))
            .collect();
        expected.sort();
        for sql in [
            include_str!("../../migrations/postgres/0002_guards.sql"),
            include_str!("../../migrations/sqlite/0002_guards.sql"),
        ] {
            let start = sql.rfind("outcome IN (").expect("outcome check") + "outcome IN (".len();
            let end = start + sql[start..].find(')').unwrap();
            let mut listed: Vec<String> = sql[start..end]
                .split(',')
                .map(|s| s.trim().to_string())
                .collect();
            listed.sort();
            assert_eq!(listed, expected);
        }
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
