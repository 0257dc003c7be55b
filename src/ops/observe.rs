//! Feeds delivery events into [`Metrics`].

use std::sync::Arc;
use std::time::Duration;

use super::{CircuitGauge, Metrics};
use crate::delivery::circuit::CircuitView;
use crate::delivery::DeliveryObserver;
use crate::outbox::{Claimed, Outcome};

/// A [`DeliveryObserver`] that records into a [`Metrics`] registry.
pub struct MetricsObserver(pub Arc<Metrics>);

impl DeliveryObserver for MetricsObserver {
    fn attempt(&self, row: &Claimed, outcome: &Outcome, status: Option<u16>, duration: Duration) {
        let m = &self.0;
        let label = match outcome {
            Outcome::Done => "done",
            Outcome::Retry { .. } => "retry",
            Outcome::Dead { .. } => "dead",
            Outcome::Release { .. } => "released",
        };
        if !matches!(outcome, Outcome::Release { .. }) {
            m.attempt(&row.workflow, label, status, duration);
        }
        match outcome {
            Outcome::Retry { .. } => m.retry_scheduled(&row.workflow),
            Outcome::Done | Outcome::Dead { .. } => {
                let e2e = (chrono::Utc::now() - row.created_at)
                    .to_std()
                    .unwrap_or(Duration::ZERO);
                m.delivery(&row.workflow, label, e2e);
            }
            Outcome::Release { .. } => {}
        }
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
