// The peer schema's field lists are tied to the Msg type at compile time: a
// renamed, retyped, missing or repeated field does not compile. Each case below
// is a copy of the schema with one such defect; `@ts-expect-error` makes the
// build fail if the defect were ever accepted (so this file fails by not
// compiling, the runtime assertions only record that it was built).
import t from 'tap';
import { SCHEMA, type PeerSchema, type SchemaProblems } from '../lib/wire/peer';

type Clean<S extends PeerSchema> = [SchemaProblems<S>] extends [never] ? true : false;

const ballot = ['ballot', 'uint'] as const;

// A field name that `nack` does not have (its field is `promised`).
const renamed = [ballot, ['promise', 'uint']] as const;
// @ts-expect-error the schema names a field the message does not have
const withRenamed: PeerSchema = { ...SCHEMA, nack: { code: 5, fields: renamed } };

// A wire type that cannot carry the field's TypeScript type (a number as a bool).
const retyped = [ballot, ['promised', 'bool']] as const;
// @ts-expect-error the wire type does not fit the field's type
const withRetyped: PeerSchema = { ...SCHEMA, nack: { code: 5, fields: retyped } };

// `promised` left out: it would never reach the wire.
const missing = { ...SCHEMA, nack: { code: 5, fields: [ballot] } } as const;
// @ts-expect-error nack.promised unlisted
const missingIsClean: Clean<typeof missing> = true;

// `ballot` listed twice.
const twice = [ballot, ['promised', 'uint'], ballot] as const;
const repeated = { ...SCHEMA, nack: { code: 5, fields: twice } } as const;
// @ts-expect-error nack.ballot repeated
const repeatedIsClean: Clean<typeof repeated> = true;

const schemaIsClean: Clean<typeof SCHEMA> = true;

t.test(
  'the schema lists every field of every message once, with a fitting wire type',
  async (t) => {
    t.ok(schemaIsClean, 'the real schema type-checks clean');
    t.ok(
      withRenamed && withRetyped && missingIsClean && repeatedIsClean,
      'defects were built only under @ts-expect-error',
    );
  },
);
