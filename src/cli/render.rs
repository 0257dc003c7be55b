//! How the CLI shows rows, attempts and hints to a person.

use crate::outbox::{AttemptOutcome, State};
use crate::text::{middle_cut, plural, program, table};
use crate::workflow::Unconfigured;

/// A row for `--json`: its payload as the JSON value it is, not a string holding JSON.
pub(super) fn row_json(row: &crate::outbox::OutboxRow) -> serde_json::Value {
    let mut value = serde_json::to_value(row).unwrap_or_default();
    if let Some(payload) = value.get_mut("payload") {
        // The database only holds valid JSON; were it ever not, the text stays a string.
        if let Ok(parsed) = serde_json::from_str::<serde_json::Value>(&row.payload) {
            *payload = parsed;
        }
    }
    value
}

/// A row and its attempts for `--json` (`show`, `export-invoice --wait`).
pub(super) fn detail_json(
    row: &crate::outbox::OutboxRow,
    attempts: &[crate::outbox::AttemptLine],
) -> serde_json::Value {
    serde_json::json!({ "row": row_json(row), "attempts": attempts })
}

/// The command that resets row `id` to pending.
pub(super) fn retry_command(id: i64) -> String {
    format!("{} retry {id}", program())
}

/// For a row found already enqueued: if it is dead, its reason and how to retry it.
pub(super) fn dead_hint(id: i64, state: State, reason: Option<&str>) -> String {
    if state != State::Dead {
        return String::new();
    }
    format!(
        "\nreason: {}\nFix the cause, then retry it: {}",
        reason.unwrap_or("(no reason recorded)"),
        retry_command(id)
    )
}

/// Unconfigured workflows, one line each: name, file, the unset variables.
pub(super) fn unconfigured_lines(list: &[Unconfigured]) -> String {
    list.iter()
        .map(|u| {
            format!(
                "  {:<20} {} not set (read by {})",
                u.name,
                u.missing.join(", "),
                u.file.display()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The due time of a waiting row, the lease expiry of a `sending` one, `-` for finished rows
/// (their `due_at` means nothing any more).
pub(super) fn due_or_lease(row: &crate::outbox::OutboxRow) -> String {
    match row.state {
        State::Done | State::Dead => "-".into(),
        _ => crate::outbox::time_text(row.due_at),
    }
}

/// Which attempt budget each attempt (in the order given) belongs to, from 1: an operator reset
/// gives a row a fresh budget whose attempts are numbered from 1 again. Attempts recorded stale
/// (their relay had lost the row) never start a budget.
pub(super) fn budgets(attempts: &[&crate::outbox::AttemptLine]) -> Vec<u32> {
    let mut budget = 1;
    let mut last: Option<i32> = None;
    attempts
        .iter()
        .map(|a| {
            if !a.is_stale() {
                if last.is_some_and(|prev| a.attempt <= prev) {
                    budget += 1;
                }
                last = Some(a.attempt);
            }
            budget
        })
        .collect()
}

/// `ferry show`: the row, then every request ever made for it. Errors are shown whole.
pub fn render_show(
    row: &crate::outbox::OutboxRow,
    attempts: &[crate::outbox::AttemptLine],
) -> String {
    // Oldest first by start time: a stale attempt is recorded late but started early.
    let mut history: Vec<&crate::outbox::AttemptLine> = attempts.iter().collect();
    history.sort_by_key(|a| a.started_at);
    let budget_of = budgets(&history);
    let last_budget = budget_of.last().copied().unwrap_or(0);
    // Requests of the current budget: the last budget in the history, unless the row was reset
    // after it (then its attempt count is below that budget's numbers, or zero).
    let last_numbers: Vec<i32> = history
        .iter()
        .zip(&budget_of)
        .filter(|(_, b)| **b == last_budget)
        .map(|(a, _)| a.attempt)
        .collect();
    let current_is_last = row.attempts > 0
        && last_numbers
            .iter()
            .max()
            .is_some_and(|max| *max <= row.attempts);
    let sent_now = if current_is_last {
        last_numbers.len() as i32
    } else {
        0
    };
    let in_flight = i32::from(row.state == State::Sending);
    let unsent = (row.attempts - sent_now - in_flight).max(0);
    let last_is_fatal_request = current_is_last
        && history
            .last()
            .is_some_and(|a| a.outcome == AttemptOutcome::Dead);
    let dead_without_request = row.state == State::Dead && !last_is_fatal_request;

    let state = if dead_without_request {
        "dead (no request was sent for this outcome: see the last error)".to_string()
    } else {
        row.state.to_string()
    };
    let mut notes = Vec::new();
    if row.attempts > 0 && sent_now == 0 && in_flight == 0 {
        notes.push("no request was sent".to_string());
    } else {
        if unsent > 0 {
            notes.push(format!(
                "{} sent, {unsent} without a request (refused before sending, or its relay stopped)",
                plural(sent_now, "request", "requests")
            ));
        }
        if in_flight > 0 {
            notes.push("one in flight now".into());
        }
    }
    let budgets_in_all = last_budget + u32::from(!current_is_last && !history.is_empty());
    if history.len() > sent_now as usize {
        notes.push(format!(
            "{} in all, over {}",
            plural(history.len(), "request", "requests"),
            plural(budgets_in_all, "budget", "budgets")
        ));
    }
    let mut attempts_line = format!("{} in the current budget", row.attempts);
    if !notes.is_empty() {
        attempts_line.push_str(&format!(" ({})", notes.join("; ")));
    }
    let mut s = format!(
        "outbox row {}\n  workflow    {}\n  key         {}\n  state       {}\n  attempts    {}\n  due/lease   {}\n  created     {}\n  updated     {}\n  done        {}\n  last status {}\n  last error  {}\n  payload     {}\n",
        row.id,
        row.workflow,
        row.key,
        state,
        attempts_line,
        due_or_lease(row),
        crate::outbox::time_text(row.created_at),
        crate::outbox::time_text(row.updated_at),
        row.done_at
            .map(crate::outbox::time_text)
            .unwrap_or_else(|| "-".into()),
        row.last_status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into()),
        row.last_error.clone().unwrap_or_else(|| "-".into()),
        crate::outbox::excerpt(&row.payload, 2000),
    );
    if history.is_empty() {
        s.push_str("attempt history (0): no request has been sent for this row\n");
        return s;
    }
    s.push_str(&format!("attempt history ({}):", history.len()));
    if last_budget > 1 {
        s.push_str(&format!(
            " {} budgets (an operator reset gives a fresh budget, numbered from 1 again); # counts every request",
            last_budget
        ));
    }
    s.push('\n');
    s.push_str(&table(
        &[
            "#",
            "BUDGET",
            "TRY",
            "STARTED",
            "MS",
            "OUTCOME",
            "STATUS",
            "ERROR / RESPONSE",
        ],
        history
            .iter()
            .zip(&budget_of)
            .enumerate()
            .map(|(i, (a, budget))| {
                let detail = match (&a.error, &a.response_excerpt) {
                    (Some(e), _) => e.replace(['\n', '\r'], " "),
                    (None, Some(r)) => middle_cut(r, 300),
                    (None, None) => String::new(),
                };
                vec![
                    (i + 1).to_string(),
                    budget.to_string(),
                    a.attempt.to_string(),
                    crate::outbox::time_text(a.started_at),
                    format!("{:.1}", a.duration_ms),
                    a.outcome.to_string(),
                    a.http_status.map(|s| s.to_string()).unwrap_or_default(),
                    detail,
                ]
            })
            .collect(),
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{AttemptLine, OutboxRow};
    use crate::text::{shell_quote, shell_quote_sql};

    fn time(text: &str) -> chrono::DateTime<chrono::Utc> {
        text.parse().unwrap()
    }

    fn row(state: &str, attempts: i32, last_error: Option<&str>) -> OutboxRow {
        OutboxRow {
            id: 7,
            workflow: "partner_phieu_nhap".into(),
            key: "PN-BROKEN".into(),
            state: state.parse().unwrap(),
            attempts,
            due_at: time("2026-12-01T10:00:00.000Z"),
            last_error: last_error.map(str::to_string),
            last_status: None,
            created_at: time("2026-12-01T09:59:59.000Z"),
            updated_at: time("2026-12-01T10:00:00.000Z"),
            done_at: None,
            payload: "{}".into(),
        }
    }

    fn attempt(n: i32, at: &str, outcome: &str, error: Option<&str>) -> AttemptLine {
        AttemptLine {
            attempt: n,
            started_at: time(&format!("2026-12-01T10:00:{at}.000Z")),
            duration_ms: 1.0,
            outcome: outcome.parse().unwrap(),
            http_status: Some(503),
            error: error.map(str::to_string),
            response_excerpt: None,
        }
    }

    #[test]
    fn plural_and_quoting() {
        assert_eq!(plural(1, "dead row", "dead rows"), "1 dead row");
        assert_eq!(plural(0, "dead row", "dead rows"), "0 dead rows");
        assert_eq!(shell_quote("ferry-demo.db"), "ferry-demo.db");
        assert_eq!(shell_quote("my demo.db"), "'my demo.db'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote_sql("SELECT 1"), "'SELECT 1'");
        assert_eq!(
            shell_quote_sql("SELECT 1 WHERE x <> 'done'"),
            "\"SELECT 1 WHERE x <> 'done'\""
        );
        assert_eq!(shell_quote_sql("SELECT '$x'"), r"'SELECT '\''$x'\'''");
    }

    #[test]
    fn middle_cut_keeps_the_end() {
        let e = format!("{} no such table: orders", "x".repeat(200));
        let cut = middle_cut(&e, 60);
        assert_eq!(cut.chars().count(), 60);
        assert!(cut.ends_with("no such table: orders"), "{cut}");
        assert_eq!(middle_cut("short\nline", 60), "short line");
    }

    #[test]
    fn refused_document_says_no_request_was_sent() {
        let r = row(
            "dead",
            1,
            Some("invalid partner_phieu_nhap document: invoiceCode: missing required field"),
        );
        let text = render_show(&r, &[]);
        assert!(text.contains("no request was sent"), "{text}");
        assert!(
            text.contains("attempt history (0): no request has been sent"),
            "{text}"
        );
        assert!(text.contains("due/lease   -"), "{text}");
        assert!(
            text.contains("invoiceCode: missing required field"),
            "{text}"
        );
    }

    #[test]
    fn budgets_are_told_apart_after_a_reset() {
        let history = [
            attempt(1, "01", "retry", None),
            attempt(2, "02", "dead", Some("HTTP 503")),
            attempt(1, "03", "retry", None),
            attempt(2, "04", "retry", None),
        ];
        let r = row("retry_wait", 2, Some("HTTP 503"));
        let text = render_show(&r, &history);
        assert!(text.contains("attempt history (4): 2 budgets"), "{text}");
        let lines: Vec<&str> = text.lines().skip_while(|l| !l.starts_with('#')).collect();
        let firsts: Vec<Vec<&str>> = lines[1..]
            .iter()
            .map(|l| l.split_whitespace().take(3).collect())
            .collect();
        assert_eq!(
            firsts,
            [
                ["1", "1", "1"],
                ["2", "1", "2"],
                ["3", "2", "1"],
                ["4", "2", "2"]
            ]
        );
        assert!(
            text.contains("2 in the current budget (4 requests in all, over 2 budgets)"),
            "{text}"
        );
        // A stale attempt recorded late does not open a budget.
        let stale = [
            attempt(
                1,
                "01",
                "retry",
                Some("HTTP 503 (stale: the lease was lost)"),
            ),
            attempt(2, "02", "done", None),
        ];
        let ordered: Vec<&AttemptLine> = stale.iter().rev().collect();
        assert_eq!(budgets(&ordered), [1, 1]);
    }

    #[test]
    fn long_errors_are_shown_whole() {
        let reason = format!(
            "delivered (HTTP 201), but the workflow's on_done SQL failed: {} relation \"orders\" does not exist",
            "context ".repeat(30)
        );
        let history = [attempt(1, "01", "dead", Some(&reason))];
        let text = render_show(&row("dead", 1, Some(&reason)), &history);
        assert!(
            text.lines()
                .any(|l| l.starts_with("1 ") && l.ends_with("relation \"orders\" does not exist")),
            "{text}"
        );
        assert!(!text.contains("bytes cut"), "{text}");
        assert!(text.contains("state       dead\n"), "{text}");
    }
}
