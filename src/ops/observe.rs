//! Feeds relay and delivery events into [`Metrics`].
//!
//! Deliveries and attempts are counted from what the database recorded ([`RelayObserver`]),
//! never when the HTTP exchange ends: a completion refused as stale, or whose `on_done` SQL
//! failed, counts as what it became. The delivery observer only follows circuit changes.

use std::sync::Arc;
use std::time::Duration;

use super::{CircuitGauge, Metrics};
use crate::delivery::circuit::CircuitView;
use crate::delivery::DeliveryObserver;
use crate::outbox::{Claimed, Completion, Outcome, Recorded};
use crate::relay::{RelayObserver, RowInfo};

/// Records into a [`Metrics`] registry: as a [`RelayObserver`] (deliveries, attempts, retries,
/// rows in flight) and as a [`DeliveryObserver`] (circuit state per target).
pub struct MetricsObserver(pub Arc<Metrics>);

/// The `outcome` label of `ferry_deliveries_total` / `ferry_attempts_total` for a recorded
/// completion: `None` when nothing is counted (a release: no attempt was made).
pub fn recorded_label(c: &Completion, r: &Recorded) -> Option<&'static str> {
    Some(match (r, &c.outcome) {
        (Recorded::Stale, _) => "stale",
        (Recorded::Gone, _) => return None,
        (Recorded::OnDoneFailed(_), _) => "dead",
        (Recorded::Accepted, Outcome::Release { .. }) => return None,
        (Recorded::Accepted, o) => o.attempt_label(),
    })
}

impl RelayObserver for MetricsObserver {
    fn recorded(&self, row: &RowInfo, c: &Completion, r: &Recorded) {
        let Some(label) = recorded_label(c, r) else {
            return;
        };
        let m = &self.0;
        if let Some(rec) = &c.record {
            m.attempt(&row.workflow, label, rec.http_status, rec.duration);
        }
        match label {
            "retry" | "aborted" => m.retry_scheduled(&row.workflow),
            "done" | "dead" => {
                let e2e = (chrono::Utc::now() - row.created_at)
                    .to_std()
                    .unwrap_or(Duration::ZERO);
                m.delivery(&row.workflow, label, e2e);
            }
            _ => {}
        }
    }

    fn in_flight(&self, rows: usize) {
        self.0
            .set_relay_in_flight(i64::try_from(rows).unwrap_or(i64::MAX));
    }
}

impl DeliveryObserver for MetricsObserver {
    fn attempt(&self, _row: &Claimed, _outcome: &Outcome, _status: Option<u16>, _d: Duration) {
        // Counted once recorded (see `RelayObserver`), not when the exchange ends.
    }

    fn circuit(&self, target: &str, view: CircuitView) {
        self.0.set_circuit(
            target,
            match view {
                CircuitView::Closed => CircuitGauge::Closed,
                CircuitView::HalfOpen => CircuitGauge::HalfOpen,
                CircuitView::Open => CircuitGauge::Open,
            },
        );
    }
}
