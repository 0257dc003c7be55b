// Enqueue a Ferry export intent from Node.js, in the same transaction as the business change.
//
// Ferry's PostgreSQL migrations (`ferry migrate`) add a function
//
//   ferry_enqueue(workflow text, key text, payload jsonb) RETURNS bigint
//
// that inserts the intent into ferry_outbox and returns its row id. Enqueueing a (workflow, key)
// that is already there adds nothing and returns the existing id, so a retried request enqueues
// once. Call it inside your own transaction: when the transaction commits, a Ferry relay delivers
// the document; when it rolls back, there is no intent either.
//
// Run it (node-postgres):
//
//   npm ci
//   DATABASE_URL=postgres://user@localhost:5432/shop node enqueue.mjs
//
// FERRY_SCHEMA names Ferry's schema when it is not on the connection's search_path. The example
// makes a table of its own, example_payments, for the business side; it prints what it did as one
// JSON line and exits 1 if the database did not behave as described.

import { randomUUID } from "node:crypto";
import pg from "pg";

const WORKFLOW = "partner_hoa_don";

class PaymentDeclined extends Error {}

/** Run `work(client)` in one transaction: COMMIT if it returns, ROLLBACK if it throws. */
async function inTransaction(client, work) {
  await client.query("BEGIN");
  try {
    const result = await work(client);
    await client.query("COMMIT");
    return result;
  } catch (e) {
    await client.query("ROLLBACK");
    throw e;
  }
}

/** Record a payment and enqueue its invoice (hóa đơn) in the caller's transaction; the outbox id. */
async function recordPaymentAndEnqueue(client, billCode, total) {
  await client.query("INSERT INTO example_payments (bill_code, total) VALUES ($1, $2)", [billCode, total]);
  const document = { billCode, customer: "Công ty TNHH Mặt Trời", total };
  // node-postgres sends a string parameter as text; the cast makes it jsonb. The id comes back
  // as a string (bigint), so it is converted.
  const { rows } = await client.query("SELECT ferry_enqueue($1, $2, $3::jsonb) AS id", [
    WORKFLOW,
    billCode,
    JSON.stringify(document),
  ]);
  return Number(rows[0].id);
}

async function main() {
  const url = process.env.DATABASE_URL;
  if (!url) {
    console.error("set DATABASE_URL=postgres://…");
    return 2;
  }
  const schema = process.env.FERRY_SCHEMA;
  const client = new pg.Client({
    connectionString: url,
    options: schema ? `-c search_path=${schema}` : undefined,
  });
  await client.connect();
  try {
    await client.query(
      "CREATE TABLE IF NOT EXISTS example_payments (" +
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY," +
        " bill_code text NOT NULL, total bigint NOT NULL," +
        " paid_at timestamptz NOT NULL DEFAULT now())",
    );
    const run = randomUUID().slice(0, 8);

    // 1. Committed: the payment and its intent.
    const paid = `HD-JS-${run}`;
    const outboxId = await inTransaction(client, (c) => recordPaymentAndEnqueue(c, paid, 150000));

    // 2. The same key again (a retried request): no second row, the same id.
    const again = await inTransaction(client, async (c) => {
      const { rows } = await c.query("SELECT ferry_enqueue($1, $2, $3::jsonb) AS id", [
        WORKFLOW,
        paid,
        JSON.stringify({ billCode: paid }),
      ]);
      return Number(rows[0].id);
    });

    // 3. Rolled back: neither the payment nor the intent exists.
    const declined = `HD-JS-${run}-declined`;
    try {
      await inTransaction(client, async (c) => {
        await recordPaymentAndEnqueue(c, declined, 990000);
        throw new PaymentDeclined(declined);
      });
    } catch (e) {
      if (!(e instanceof PaymentDeclined)) throw e;
    }

    const count = async (sql, key) => Number((await client.query(sql, [key])).rows[0].n);
    const intents = `SELECT count(*) AS n FROM ferry_outbox WHERE workflow = '${WORKFLOW}' AND key = $1`;
    const payments = "SELECT count(*) AS n FROM example_payments WHERE bill_code = $1";
    const result = {
      committed: { key: paid, id: outboxId },
      duplicate_id: again,
      rolled_back: {
        key: declined,
        intents: await count(intents, declined),
        payments: await count(payments, declined),
      },
    };
    console.log(JSON.stringify(result));
    const ok =
      again === outboxId &&
      (await count(intents, paid)) === 1 &&
      (await count(payments, paid)) === 1 &&
      result.rolled_back.intents === 0 &&
      result.rolled_back.payments === 0;
    if (!ok) {
      console.error("unexpected result");
      return 1;
    }
    return 0;
  } finally {
    await client.end();
  }
}

process.exitCode = await main();
