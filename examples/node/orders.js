// The order service, command side and query side, over node-postgres.
//
// Command side: load an order by folding its stream with eventstore.aggregate and the built-in
// reducer eventstore.merge, decide, and append with the version the decision was based on. When
// another writer got there first (SQLSTATE ES001) read again and decide again, a bounded number
// of times. Query side: wait until order_summary reflects our own commit, then read it.
'use strict';

const WRONG_EXPECTED_VERSION = 'ES001';

class Refused extends Error {}

// eventstore.merge folds the events' data into one object; each event type leaves its own key
// (OrderPlaced total, PaymentCaptured amount, OrderShipped carrier, OrderCancelled reason).
function statusOf(state) {
  if (!state || Object.keys(state).length === 0) return null;
  if ('reason' in state) return 'cancelled';
  if ('carrier' in state) return 'shipped';
  if ('amount' in state) return 'paid';
  return 'placed';
}

async function load(client, orderId) {
  const { rows } = await client.query(
    "SELECT stream_version, state FROM eventstore.aggregate($1, 'eventstore.merge(jsonb, eventstore.events)'::regprocedure)",
    [`order-${orderId}`],
  );
  const state = rows[0]?.state ?? {};
  return {
    orderId,
    version: Number(rows[0]?.stream_version ?? 0),
    status: statusOf(state),
    customerId: state.customer_id,
    total: state.total,
  };
}

// The rules examples/orders.sql follows: an order is placed once, paid once while placed,
// shipped only when paid, cancelled only before it ships.
function decide(order, command, args = {}) {
  const id = order.orderId;
  if (command === 'place') {
    if (order.version !== 0) throw new Refused(`order ${id} already exists`);
    return ['OrderPlaced', { customer_id: args.customerId, total: args.total }];
  }
  if (order.version === 0) throw new Refused(`order ${id} does not exist`);
  const customer_id = order.customerId;
  switch (command) {
    case 'pay':
      if (order.status !== 'placed') throw new Refused(`order ${id} is ${order.status}, cannot pay`);
      return ['PaymentCaptured', { customer_id, amount: order.total }];
    case 'ship':
      if (order.status !== 'paid') throw new Refused(`order ${id} is ${order.status}, cannot ship`);
      return ['OrderShipped', { customer_id, carrier: args.carrier }];
    case 'cancel':
      if (order.status === 'shipped' || order.status === 'cancelled') {
        throw new Refused(`order ${id} is ${order.status}, cannot cancel`);
      }
      return ['OrderCancelled', { customer_id, reason: args.reason }];
    default:
      throw new Error(`unknown command ${command}`);
  }
}

// Runs a command; resolves to { version, token, attempts }. The token is the WAL position after
// our commit, for waitFor. beforeAppend(attempt) runs between the read and the append (tests).
async function execute(client, orderId, command, { maxAttempts = 3, beforeAppend, ...args } = {}) {
  for (let attempt = 1; ; attempt++) {
    const order = await load(client, orderId);
    const [type, data] = decide(order, command, args);
    if (beforeAppend) await beforeAppend(attempt);
    try {
      // One statement outside a transaction block commits on its own.
      const { rows } = await client.query(
        'SELECT stream_version FROM eventstore.append_event($1, $2, $3::jsonb, expected_version => $4)',
        [`order-${orderId}`, type, JSON.stringify({ order_id: String(orderId), ...data }), order.version],
      );
      const token = (await client.query('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0].lsn;
      return { version: Number(rows[0].stream_version), token, attempts: attempt };
    } catch (e) {
      if (e.code !== WRONG_EXPECTED_VERSION || attempt >= maxAttempts) throw e;
    }
  }
}

async function readSummary(client, orderId, token, timeout = '5s') {
  const { rows } = await client.query(
    "SELECT eventstore_worker.wait_for('order_summary', $1::pg_lsn, $2::interval) AS caught_up",
    [token, timeout],
  );
  if (!rows[0].caught_up) throw new Error(`order_summary did not reach ${token} within ${timeout}`);
  const summary = await client.query(
    'SELECT order_id, customer_id, status, total::text, paid::text, event_count::int FROM order_summary WHERE order_id = $1',
    [String(orderId)],
  );
  return summary.rows[0];
}

module.exports = { Refused, WRONG_EXPECTED_VERSION, decide, execute, load, readSummary, statusOf };
