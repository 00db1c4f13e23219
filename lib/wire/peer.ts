import { Decoder, Encoder, setSizeLimits } from 'cbor-x';
import type { Cmd, Msg, MsgType, PromiseEntry, Value } from '../core/types';
import { CBOR_ARRAY_ITEMS_MAX, PEER_CBOR_DEPTH_MAX } from '../limits';
import { scanCbor } from './scan';

/*
 * Peer messages on the wire: a CBOR array [fromSid, typeCode, ...fields]. The
 * SCHEMA table below is the one source of truth for codes, field order and
 * field types; encode and validate are both driven by it.
 */

// Hostile sizes must fail fast instead of allocating (see CBOR_ARRAY_ITEMS_MAX).
setSizeLimits({ maxArraySize: CBOR_ARRAY_ITEMS_MAX, maxMapSize: 1_000, maxObjectSize: 1_000 });

type FieldType =
  | 'uint' // non-negative safe integer (ballots, slots, sizes)
  | 'ballotOrChosen' // uint or -1
  | 'bool'
  | 'value' // a batch: [[cid, seq, opBytes], ...]
  | 'values' // [value, ...]
  | 'slots' // [uint, ...]
  | 'promiseEntries' // [[slot, ballotOrChosen, value], ...]
  | 'acceptEntries' // [[slot, value], ...]
  | 'bytes';

type Field = readonly [name: string, type: FieldType];

/** The message variant whose tag is T, and the names of its fields (the tag aside). */
type MsgOf<T extends MsgType> = Extract<Msg, { t: T }>;
type FieldName<T extends MsgType> = Exclude<keyof MsgOf<T>, 't'>;

/** The wire types that can carry a field of TypeScript type V (never: none can). */
type WireTypeOf<V> = [V] extends [boolean]
  ? 'bool'
  : [V] extends [number]
    ? 'uint' | 'ballotOrChosen'
    : [V] extends [Uint8Array]
      ? 'bytes'
      : [V] extends [PromiseEntry[]]
        ? 'promiseEntries'
        : [V] extends [[number, Value][]]
          ? 'acceptEntries'
          : [V] extends [Value[]]
            ? 'values'
            : [V] extends [Value]
              ? 'value'
              : [V] extends [number[]]
                ? 'slots'
                : never;

/** One field of message T: a name T has, with a wire type that fits its TypeScript type. */
type FieldOf<T extends MsgType> = {
  [K in FieldName<T>]: readonly [name: K, type: WireTypeOf<Exclude<MsgOf<T>[K], undefined>>];
}[FieldName<T>];

/**
 * The shape of the schema table: an entry for every message type, whose fields
 * are fields of that message. A renamed or retyped field fails to compile here;
 * a missing or repeated one fails SchemaProblems below.
 */
export type PeerSchema = {
  [T in MsgType]: {
    code: number;
    fields: readonly FieldOf<T>[];
    /**
     * The last `optional` fields may be absent (optional in Msg): added later,
     * so that a message from an older sender still decodes.
     */
    optional?: number;
  };
};

/** Names listed more than once in a field list. */
type Repeated<F, Seen = never> = F extends readonly [readonly [infer N, unknown], ...infer Rest]
  ? (N extends Seen ? N : never) | Repeated<Rest, Seen | N>
  : never;

/**
 * What is wrong with a schema table S (never: nothing): "t.name unlisted" for a
 * field of message t that its entry leaves out (it would never reach the wire),
 * "t.name repeated" for one listed twice. S must keep its literal types (as const).
 */
export type SchemaProblems<S extends PeerSchema> = {
  [T in MsgType]:
    | `${T}.${Exclude<FieldName<T>, S[T]['fields'][number][0]> & string} unlisted`
    | `${T}.${Repeated<S[T]['fields']> & string} repeated`;
}[MsgType];

export const SCHEMA = {
  prepare: {
    code: 1,
    fields: [
      ['ballot', 'uint'],
      ['from', 'uint'],
      ['handoff', 'bool'],
      ['of', 'uint'],
      ['until', 'uint'],
    ],
    optional: 3,
  },
  handoff: {
    code: 16,
    fields: [
      ['ballot', 'uint'],
      ['chosen', 'uint'],
      ['tick', 'uint'],
      ['until', 'uint'],
      ['echoLife', 'uint'],
      ['echoTick', 'uint'],
    ],
  },
  promise: {
    code: 2,
    fields: [
      ['ballot', 'uint'],
      ['from', 'uint'],
      ['lo', 'uint'],
      ['hi', 'uint'],
      ['base', 'uint'],
      ['entries', 'promiseEntries'],
      ['incs', 'slots'],
    ],
  },
  accept: {
    code: 3,
    fields: [
      ['ballot', 'uint'],
      ['entries', 'acceptEntries'],
      ['commit', 'uint'],
    ],
  },
  accepted: {
    code: 4,
    fields: [
      ['ballot', 'uint'],
      ['slots', 'slots'],
      ['incs', 'slots'],
    ],
  },
  nack: {
    code: 5,
    fields: [
      ['ballot', 'uint'],
      ['promised', 'uint'],
    ],
  },
  commit: {
    code: 6,
    fields: [
      ['ballot', 'uint'],
      ['through', 'uint'],
    ],
  },
  heartbeat: {
    code: 7,
    fields: [
      ['promised', 'uint'],
      ['leading', 'bool'],
      ['chosen', 'uint'],
      ['next', 'uint'],
      ['eligible', 'bool'],
      ['voter', 'bool'],
      ['heard', 'slots'],
      ['leader', 'uint'],
      ['tick', 'uint'],
      ['hashSlot', 'uint'],
      ['hash', 'bytes'],
      ['life', 'uint'],
      ['echoLife', 'uint'],
      ['echoTick', 'uint'],
    ],
    optional: 5,
  },
  rejoinReq: {
    code: 14,
    fields: [
      ['nonce', 'uint'],
      ['inc', 'uint'],
      ['act', 'bool'],
    ],
    optional: 1,
  },
  rejoinResp: {
    code: 15,
    fields: [
      ['nonce', 'uint'],
      ['inc', 'uint'],
      ['known', 'uint'],
      ['promised', 'uint'],
      ['next', 'uint'],
      ['incs', 'slots'],
      ['act', 'bool'],
      ['res', 'slots'],
    ],
    optional: 2,
  },
  confirm: {
    code: 12,
    fields: [
      ['ballot', 'uint'],
      ['round', 'uint'],
    ],
  },
  confirmed: {
    code: 13,
    fields: [
      ['ballot', 'uint'],
      ['round', 'uint'],
    ],
  },
  settled: {
    code: 17,
    fields: [['slot', 'uint']],
  },
  catchupReq: {
    code: 8,
    fields: [
      ['from', 'uint'],
      ['to', 'uint'],
    ],
  },
  catchupResp: {
    code: 9,
    fields: [
      ['from', 'uint'],
      ['entries', 'values'],
      ['snapshot', 'uint'],
      ['snapshotBytes', 'uint'],
    ],
  },
  snapshotReq: {
    code: 10,
    fields: [
      ['slot', 'uint'],
      ['offset', 'uint'],
    ],
  },
  snapshotResp: {
    code: 11,
    fields: [
      ['slot', 'uint'],
      ['offset', 'uint'],
      ['total', 'uint'],
      ['data', 'bytes'],
    ],
  },
} as const satisfies PeerSchema;

// Fails to compile, naming the problem, unless every field of every message is
// listed exactly once.
const schemaComplete: [SchemaProblems<typeof SCHEMA>] extends [never]
  ? true
  : SchemaProblems<typeof SCHEMA> = true;
void schemaComplete;

const BY_CODE = new Map<number, { t: MsgType; fields: readonly Field[]; optional: number }>();
for (const [t, s] of Object.entries(SCHEMA))
  BY_CODE.set(s.code, {
    t: t as MsgType,
    fields: s.fields,
    optional: 'optional' in s ? s.optional : 0,
  });

const encoder = new Encoder({ useRecords: false, tagUint8Array: false });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: false });

/** A batch as CBOR-ready arrays (ops stay the bytes they arrived as). */
export function encodeValue(v: Value): unknown[] {
  const out = new Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = [v[i].cid, v[i].seq, asBuffer(v[i].op)];
  return out;
}

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.length);
}

function encodeField(type: FieldType, v: unknown): unknown {
  switch (type) {
    case 'value':
      return encodeValue(v as Value);
    case 'values':
      return (v as Value[]).map(encodeValue);
    case 'promiseEntries':
      return (v as [number, number, Value][]).map(([s, b, val]) => [s, b, encodeValue(val)]);
    case 'acceptEntries':
      return (v as [number, Value][]).map(([s, val]) => [s, encodeValue(val)]);
    case 'bytes':
      return asBuffer(v as Uint8Array);
    default:
      return v;
  }
}

/** CBOR body of a peer message (without the envelope). */
export function encodePeerBody(from: number, msg: Msg): Buffer {
  const s = BY_CODE.get(SCHEMA[msg.t].code)!;
  const arr: unknown[] = [from, SCHEMA[msg.t].code];
  const rec = msg as unknown as Record<string, unknown>;
  const firstOptional = s.fields.length - s.optional;
  // Absent optional fields at the end are left off (an older receiver's count);
  // one absent before a present one is sent as null (a heartbeat without a state
  // hash still carries its freshness fields).
  let end = s.fields.length;
  while (end > firstOptional && rec[s.fields[end - 1][0]] === undefined) end--;
  for (let i = 0; i < end; i++) {
    const [name, type] = s.fields[i];
    if (rec[name] === undefined && i >= firstOptional) arr.push(null);
    else arr.push(encodeField(type, rec[name]));
  }
  return encoder.encode(arr);
}

/**
 * Thrown inside validation; `message` is the drop reason. Deliberately not an
 * Error: hostile input is common, and capturing a stack per drop is costly.
 */
class Invalid {
  constructor(readonly message: string) {}
}

function uint(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new Invalid(what);
  return v;
}

function arr(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new Invalid(what);
  return v;
}

function bytes(v: unknown, what: string): Buffer {
  if (!Buffer.isBuffer(v)) throw new Invalid(what);
  return v;
}

/** Validate a decoded batch; throws on any bad field. */
export function value(v: unknown): Value {
  const a = arr(v, 'value');
  const out: Cmd[] = new Array(a.length);
  for (let i = 0; i < a.length; i++) {
    const c = arr(a[i], 'command');
    if (c.length !== 3) throw new Invalid('command');
    out[i] = { cid: uint(c[0], 'cid'), seq: uint(c[1], 'seq'), op: bytes(c[2], 'op') };
  }
  return out;
}

function field(type: FieldType, v: unknown, name: string): unknown {
  switch (type) {
    case 'uint':
      return uint(v, name);
    case 'ballotOrChosen':
      if (v === -1) return -1;
      return uint(v, name);
    case 'bool':
      if (typeof v !== 'boolean') throw new Invalid(name);
      return v;
    case 'value':
      return value(v);
    case 'values':
      return arr(v, name).map(value);
    case 'slots':
      return arr(v, name).map((x) => uint(x, name));
    case 'promiseEntries':
      return arr(v, name).map((e) => {
        const a = arr(e, name);
        if (a.length !== 3) throw new Invalid(name);
        return [uint(a[0], 'slot'), field('ballotOrChosen', a[1], 'ballot'), value(a[2])];
      });
    case 'acceptEntries':
      return arr(v, name).map((e) => {
        const a = arr(e, name);
        if (a.length !== 2) throw new Invalid(name);
        return [uint(a[0], 'slot'), value(a[1])];
      });
    case 'bytes':
      return bytes(v, name);
  }
}

export type DecodedPeer = { from: number; msg: Msg } | { error: string };

/**
 * Decode and validate an (already authenticated) peer body. Never throws: any
 * problem becomes a drop reason naming the field.
 */
export function decodePeerBody(body: Uint8Array): DecodedPeer {
  const refused = scanCbor(body, PEER_CBOR_DEPTH_MAX);
  if (refused) return { error: `cbor_${refused}` };
  let raw: unknown;
  try {
    raw = decoder.decode(body);
  } catch {
    return { error: 'cbor' };
  }
  try {
    const a = arr(raw, 'envelope');
    const from = uint(a[0], 'from');
    const code = uint(a[1], 'type');
    const s = BY_CODE.get(code);
    if (!s) return { error: 'unknown_type' };
    const n = a.length - 2;
    if (n > s.fields.length || n < s.fields.length - s.optional)
      return { error: `field_count:${s.t}` };
    // A null-prototype object: no field name can reach Object.prototype.
    const msg = Object.create(null) as Record<string, unknown>;
    msg.t = s.t;
    for (let i = 0; i < n; i++) {
      const [name, type] = s.fields[i];
      // null: an optional field absent before a present one (see encodePeerBody).
      if (a[i + 2] === null && i >= s.fields.length - s.optional) continue;
      msg[name] = field(type, a[i + 2], name);
    }
    return { from, msg: msg as unknown as Msg };
  } catch (e) {
    if (e instanceof Invalid) return { error: `field:${e.message}` };
    return { error: 'invalid' };
  }
}
