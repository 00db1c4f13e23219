// lib/limits.ts: the relations between the cross-layer limits hold, and each
// one is checked (a broken value is named, and the module would refuse to load).
import t from 'tap';
import { SID_LIMIT } from '../lib/core/ballot';
import { LIMITS, limitViolations, PAYLOAD_BYTES_MAX, SID_MAX } from '../lib/limits';

t.test('the limits in force break no relation', async (t) => {
  t.same(limitViolations(LIMITS), []);
  t.ok(SID_MAX < SID_LIMIT, 'every sid packs into a ballot without carrying into the round');
  t.equal(
    PAYLOAD_BYTES_MAX,
    60_000,
    'the config bound for batch/value/catch-up bytes is unchanged',
  );
});

t.test('each relation is checked', async (t) => {
  // Each change breaks the relations named (one, or two that a single value cannot separate).
  const cases: [Partial<typeof LIMITS>, string | string[]][] = [
    [
      { datagramBytesMax: 65_508, cborArrayItemsMax: 70_000 },
      'DATAGRAM_BYTES_MAX <= UDP_IPV4_PAYLOAD_BYTES_MAX',
    ],
    [{ payloadBytesMax: 0 }, 'PAYLOAD_BYTES_MAX > 0'],
    [
      { payloadBytesMax: LIMITS.datagramBytesMax },
      ['PAYLOAD_BYTES_MAX < DATAGRAM_BYTES_MAX', 'PAYLOAD_BYTES_MAX <= OP_BYTES_MAX'],
    ],
    [
      { cborArrayItemsMax: LIMITS.datagramBytesMax - 1 },
      'CBOR_ARRAY_ITEMS_MAX >= DATAGRAM_BYTES_MAX',
    ],
    [{ recordBytesMax: LIMITS.datagramBytesMax - 1 }, 'RECORD_BYTES_MAX >= DATAGRAM_BYTES_MAX'],
    [{ opBytesMax: LIMITS.datagramBytesMax }, 'OP_BYTES_MAX < DATAGRAM_BYTES_MAX'],
    [{ opBytesMax: LIMITS.payloadBytesMax - 1 }, 'PAYLOAD_BYTES_MAX <= OP_BYTES_MAX'],
    [{ keyBytesMax: LIMITS.opBytesMax }, 'KEY_BYTES_MAX < OP_BYTES_MAX'],
    [{ batchOpsMax: LIMITS.cborArrayItemsMax + 1 }, 'BATCH_OPS_MAX <= CBOR_ARRAY_ITEMS_MAX'],
    [{ sidMin: -1 }, '0 <= SID_MIN <= SID_MAX'],
    [{ sidMax: SID_LIMIT, serversMax: 1 }, 'SID_MAX < SID_LIMIT'],
    [{ serversMax: LIMITS.sidMax + 2 }, 'SERVERS_MAX <= SID_MAX - SID_MIN + 1'],
  ];
  for (const [change, relation] of cases) {
    const named = [relation].flat();
    t.same(limitViolations({ ...LIMITS, ...change }), named, named.join('; '));
  }
});
