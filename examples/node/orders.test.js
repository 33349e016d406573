// The order service against a real cluster and a real eventstore-worker.
// ORDERS_WRITER_DSN connects as a role granted eventstore.grant_writer; ORDERS_READER_DSN as a
// role that may only SELECT order_summary and wait for the worker (scripts/clients_test.sh).
'use strict';

const { test, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { Client } = require('pg');
const orders = require('./orders');

async function connect(variable) {
  const client = new Client({ connectionString: process.env[variable] });
  await client.connect();
  return client;
}

let writer;
let reader;
let orderId;
beforeEach(async () => {
  writer = await connect('ORDERS_WRITER_DSN');
  reader = await connect('ORDERS_READER_DSN');
  orderId = `js-${crypto.randomUUID().slice(0, 12)}`;
});
afterEach(async () => {
  await writer.end();
  await reader.end();
});

async function history(id) {
  const { rows } = await writer.query(
    'SELECT stream_version::int AS v, event_type AS t FROM eventstore.read_stream($1)', [`order-${id}`]);
  return rows.map((r) => [r.v, r.t]);
}

const place = (client, id) => orders.execute(client, id, 'place', { customerId: 'ada', total: '120.50' });

// A beforeAppend hook: a second session appends to the order first, on the attempts given.
function otherWriterAppends(id, type, data, attempts = [1]) {
  return async (attempt) => {
    if (!attempts.includes(attempt)) return;
    const other = await connect('ORDERS_WRITER_DSN');
    try {
      await other.query('SELECT eventstore.append_event($1, $2, $3::jsonb)',
        [`order-${id}`, type, JSON.stringify({ order_id: id, ...data })]);
    } finally {
      await other.end();
    }
  };
}

test('read-your-writes through the whole lifecycle', async () => {
  let { token } = await place(writer, orderId);
  assert.deepEqual(await orders.readSummary(reader, orderId, token), {
    order_id: orderId, customer_id: 'ada', status: 'placed', total: '120.50', paid: '0', event_count: 1,
  });
  ({ token } = await orders.execute(writer, orderId, 'pay'));
  const paid = await orders.readSummary(reader, orderId, token);
  assert.deepEqual([paid.status, paid.paid, paid.event_count], ['paid', '120.50', 2]);
  const shipped = await orders.execute(writer, orderId, 'ship', { carrier: 'DHL' });
  assert.deepEqual([shipped.version, shipped.attempts], [3, 1]);
  assert.equal((await orders.readSummary(reader, orderId, shipped.token)).status, 'shipped');
});

test('the domain refuses and nothing is written', async () => {
  await place(writer, orderId);
  await assert.rejects(orders.execute(writer, orderId, 'ship', { carrier: 'DHL' }),
    (e) => e instanceof orders.Refused && /is placed, cannot ship/.test(e.message));
  await orders.execute(writer, orderId, 'cancel', { reason: 'changed mind' });
  await assert.rejects(orders.execute(writer, orderId, 'pay'),
    (e) => e instanceof orders.Refused && /is cancelled, cannot pay/.test(e.message));
  assert.deepEqual(await history(orderId), [[1, 'OrderPlaced'], [2, 'OrderCancelled']]);
});

test('the reader role cannot append', async () => {
  await assert.rejects(reader.query("SELECT eventstore.append_event($1, 'OrderPlaced', '{}')", [`order-${orderId}`]),
    (e) => e.code === '42501');
});

test('ES001 is retried with a fresh read', async () => {
  await place(writer, orderId);
  // Someone pays between our read and our append: our cancel hits ES001, reads the paid order
  // again, and cancelling a paid order is still allowed.
  const beforeAppend = otherWriterAppends(orderId, 'PaymentCaptured', { customer_id: 'ada', amount: '120.50' });
  const r = await orders.execute(writer, orderId, 'cancel', { reason: 'late', beforeAppend });
  assert.deepEqual([r.version, r.attempts], [3, 2]);
  assert.deepEqual(await history(orderId), [[1, 'OrderPlaced'], [2, 'PaymentCaptured'], [3, 'OrderCancelled']]);
  const s = await orders.readSummary(reader, orderId, r.token);
  assert.deepEqual([s.status, s.paid, s.event_count], ['cancelled', '120.50', 3]);
});

test('a retry can turn into a refusal', async () => {
  await place(writer, orderId);
  const beforeAppend = otherWriterAppends(orderId, 'PaymentCaptured', { customer_id: 'ada', amount: '120.50' });
  await assert.rejects(orders.execute(writer, orderId, 'pay', { beforeAppend }),
    (e) => e instanceof orders.Refused && /is paid, cannot pay/.test(e.message));
  assert.deepEqual(await history(orderId), [[1, 'OrderPlaced'], [2, 'PaymentCaptured']]);
});

test('retries are bounded', async () => {
  await place(writer, orderId);
  const seen = [];
  const beforeAppend = async (attempt) => {
    seen.push(attempt);
    await otherWriterAppends(orderId, 'OrderNoteAdded', { note: `n${attempt}` }, [attempt])(attempt);
  };
  await assert.rejects(orders.execute(writer, orderId, 'cancel', { reason: 'x', maxAttempts: 3, beforeAppend }),
    (e) => e.code === 'ES001');
  assert.deepEqual(seen, [1, 2, 3]);
  assert.deepEqual((await history(orderId)).map(([, t]) => t),
    ['OrderPlaced', 'OrderNoteAdded', 'OrderNoteAdded', 'OrderNoteAdded']);
});

// Runs the commands in separate sessions that all read the order before any of them appends.
async function race(id, commands) {
  let arrived = 0;
  let release;
  const allRead = new Promise((resolve) => { release = resolve; });
  const clients = await Promise.all(commands.map(() => connect('ORDERS_WRITER_DSN')));
  try {
    return await Promise.all(commands.map(([command, args], i) => {
      const beforeAppend = async (attempt) => {
        if (attempt !== 1) return;
        if (++arrived === commands.length) release();
        await allRead;
      };
      return orders.execute(clients[i], id, command, { ...args, beforeAppend }).catch((e) => e);
    }));
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
}

test('two clerks pay the same order at once', async () => {
  await place(writer, orderId);
  const results = await race(orderId, [['pay', {}], ['pay', {}]]);
  const won = results.filter((r) => !(r instanceof Error));
  const lost = results.filter((r) => r instanceof Error);
  // Exactly one wins on its first attempt; the other read again and was refused: paid once.
  assert.equal(won.length, 1);
  assert.deepEqual([won[0].version, won[0].attempts], [2, 1]);
  assert.equal(lost.length, 1);
  assert.ok(lost[0] instanceof orders.Refused && /is paid/.test(lost[0].message), String(lost[0]));
  assert.deepEqual(await history(orderId), [[1, 'OrderPlaced'], [2, 'PaymentCaptured']]);
  assert.equal((await orders.readSummary(reader, orderId, won[0].token)).paid, '120.50');
});

test('pay and cancel race and the loser decides again', async () => {
  await place(writer, orderId);
  const [pay, cancel] = await race(orderId, [['pay', {}], ['cancel', { reason: 'too slow' }]]);
  assert.ok(!(cancel instanceof Error), String(cancel));
  if (!(pay instanceof Error) && pay.attempts === 1) {
    // Payment won; the cancel was re-decided on the paid order and is allowed.
    assert.deepEqual([cancel.version, cancel.attempts], [3, 2]);
    assert.deepEqual(await history(orderId), [[1, 'OrderPlaced'], [2, 'PaymentCaptured'], [3, 'OrderCancelled']]);
  } else {
    // Cancel won; paying a cancelled order is refused.
    assert.deepEqual([cancel.version, cancel.attempts], [2, 1]);
    assert.ok(pay instanceof orders.Refused && /is cancelled/.test(pay.message), String(pay));
    assert.deepEqual(await history(orderId), [[1, 'OrderPlaced'], [2, 'OrderCancelled']]);
  }
  assert.equal((await orders.readSummary(reader, orderId, cancel.token)).status, 'cancelled');
});
