"""Enqueue a Ferry export intent from Python, in the same transaction as the business change.

Ferry's PostgreSQL migrations (`ferry migrate`) add a function

    ferry_enqueue(workflow text, key text, payload jsonb) RETURNS bigint

that inserts the intent into ferry_outbox and returns its row id. Enqueueing a (workflow, key)
that is already there adds nothing and returns the existing id, so a retried request enqueues
once. Call it inside your own transaction: when the transaction commits, a Ferry relay delivers
the document; when it rolls back, there is no intent either.

Run it (psycopg 3):

    python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
    DATABASE_URL=postgres://user@localhost:5432/shop .venv/bin/python enqueue.py

FERRY_SCHEMA names Ferry's schema when it is not on the connection's search_path. The example
makes a table of its own, example_payments, for the business side; it prints what it did as one
JSON line and exits 1 if the database did not behave as described.
"""

import json
import os
import sys
import uuid

import psycopg
from psycopg.types.json import Jsonb

WORKFLOW = "partner_hoa_don"


class PaymentDeclined(Exception):
    """The business change fails after the intent was enqueued: everything rolls back."""


def record_payment_and_enqueue(conn: psycopg.Connection, bill_code: str, total: int) -> int:
    """Record a payment and enqueue its invoice (hóa đơn) in one transaction; return the outbox id."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO example_payments (bill_code, total) VALUES (%s, %s)",
            (bill_code, total),
        )
        document = {"billCode": bill_code, "customer": "Công ty TNHH Mặt Trời", "total": total}
        (outbox_id,) = conn.execute(
            "SELECT ferry_enqueue(%s, %s, %s)", (WORKFLOW, bill_code, Jsonb(document))
        ).fetchone()
    return outbox_id


def main() -> int:
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("set DATABASE_URL=postgres://…", file=sys.stderr)
        return 2
    schema = os.environ.get("FERRY_SCHEMA")
    options = f"-c search_path={schema}" if schema else None
    # autocommit: each `with conn.transaction()` block is one real BEGIN … COMMIT/ROLLBACK.
    with psycopg.connect(url, autocommit=True, options=options) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS example_payments ("
            " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " bill_code text NOT NULL, total bigint NOT NULL,"
            " paid_at timestamptz NOT NULL DEFAULT now())"
        )
        run = uuid.uuid4().hex[:8]

        # 1. Committed: the payment and its intent.
        paid = f"HD-PY-{run}"
        outbox_id = record_payment_and_enqueue(conn, paid, 150000)

        # 2. The same key again (a retried request): no second row, the same id.
        with conn.transaction():
            (again,) = conn.execute(
                "SELECT ferry_enqueue(%s, %s, %s)", (WORKFLOW, paid, Jsonb({"billCode": paid}))
            ).fetchone()

        # 3. Rolled back: neither the payment nor the intent exists.
        declined = f"HD-PY-{run}-declined"
        try:
            with conn.transaction():
                record_payment_and_enqueue(conn, declined, 990000)
                raise PaymentDeclined(declined)
        except PaymentDeclined:
            pass

        count = lambda sql, key: conn.execute(sql, (key,)).fetchone()[0]  # noqa: E731
        intents = "SELECT count(*) FROM ferry_outbox WHERE workflow = '" + WORKFLOW + "' AND key = %s"
        payments = "SELECT count(*) FROM example_payments WHERE bill_code = %s"
        result = {
            "committed": {"key": paid, "id": outbox_id},
            "duplicate_id": again,
            "rolled_back": {
                "key": declined,
                "intents": count(intents, declined),
                "payments": count(payments, declined),
            },
        }
        print(json.dumps(result))
        ok = (
            again == outbox_id
            and count(intents, paid) == 1
            and count(payments, paid) == 1
            and result["rolled_back"]["intents"] == 0
            and result["rolled_back"]["payments"] == 0
        )
        if not ok:
            print("unexpected result", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
