// The membership table and its wire forms (issue 13): what a `member add` with
// an address does, what it refuses, and what a snapshot keeps. Every check here
// is replicated state: every node must decide alike.
import { Decoder, Encoder } from 'cbor-x';
import t from 'tap';
import { MembershipTable } from '../lib/sm/membership';
import {
  encodeMember,
  encodeRegister,
  KvStateMachine,
  parseCommand,
  REGISTER_NONCE_MIN,
} from '../lib/sm/kv';

// The state machine's own CBOR settings (lib/sm/kv.ts), to build raw commands and snapshots.
const encoder = new Encoder({ useRecords: false });
const decoder = new Decoder({ mapsAsObjects: false, useRecords: false });
const kvEncode = (x: unknown): Uint8Array => encoder.encode(x);
const kvDecode = (b: Uint8Array): unknown => decoder.decode(b);
const voters = (...sids: number[]) => sids.map((sid) => ({ sid, voter: true }));
const addr = (peerPort: number, clientPort = peerPort + 1000) => ({
  host: '10.0.0.9',
  peerPort,
  clientPort,
});

function table(): MembershipTable {
  const m = new MembershipTable();
  m.bootstrap(voters(1, 2, 3), 4, [1, 2, 3]);
  return m;
}

t.test('a sid outside the servers list needs its address', async (t) => {
  const m = table();
  const r = m.apply(10, { kind: 'member', action: 'add', sid: 9 });
  t.equal(r.result.ok, false, 'refused without an address');
  t.match(r.result.err, /not in the servers list: give its address/);
  t.equal(m.configurations().length, 1, 'nothing changed');
  const ok = m.apply(11, { kind: 'member', action: 'add', sid: 9, addr: addr(7009) });
  t.equal(ok.result.ok, true, 'taken with an address');
  t.same(m.configurations().at(-1)!.members.at(-1), { sid: 9, voter: false, addr: addr(7009) });
  t.match(ok.text, /member add 9 at 10\.0\.0\.9:7009\/8009/);
  const p = m.apply(20, { kind: 'member', action: 'promote', sid: 9 });
  t.equal(p.result.ok, true);
  t.same(m.configurations().at(-1)!.members.at(-1), { sid: 9, voter: true, addr: addr(7009) });
});

t.test('two members at one address are refused', async (t) => {
  const m = table();
  t.equal(m.apply(10, { kind: 'member', action: 'add', sid: 9, addr: addr(7009) }).result.ok, true);
  const peer = m.apply(20, { kind: 'member', action: 'add', sid: 10, addr: addr(7009, 9999) });
  t.equal(peer.result.ok, false, 'same host and peer port');
  t.match(peer.result.err, /sid 9 listens at 10\.0\.0\.9/);
  const client = m.apply(20, { kind: 'member', action: 'add', sid: 10, addr: addr(7777, 8009) });
  t.equal(client.result.ok, false, 'same host and client port');
  t.equal(
    m.apply(20, { kind: 'member', action: 'add', sid: 10, addr: addr(7010) }).result.ok,
    true,
  );
});

t.test('member add with an address: encoded, parsed, checked', async (t) => {
  t.same(parseCommand(encodeMember('add', 9, addr(7009))), {
    kind: 'member',
    action: 'add',
    sid: 9,
    addr: addr(7009),
  });
  t.same(parseCommand(encodeMember('promote', 9)), { kind: 'member', action: 'promote', sid: 9 });
  const bad = (x: unknown[]) => parseCommand(new Uint8Array(kvEncode(['member', 'add', 9, ...x])));
  t.match(bad(['', 7009, 8009]), { message: /host/ }, 'empty host');
  t.match(bad(['a b', 7009, 8009]), { message: /not a name or an IP address/ }, 'space in host');
  t.match(bad(['h', 0, 8009]), { message: /ports/ }, 'port 0');
  t.match(bad(['h', 7009, 70000]), { message: /ports/ }, 'port above 65535');
  t.match(bad(['h', 7009, 7009]), { message: /must differ/ }, 'one port for both');
  t.match(bad(['h', 7009]), { message: /member takes/ }, 'a missing port');
  const promoteWithAddr = parseCommand(
    new Uint8Array(kvEncode(['member', 'promote', 9, 'h', 7009, 8009])),
  );
  t.match(promoteWithAddr, { message: /member takes/ }, 'only add takes an address');
});

t.test('snapshots keep members addresses (format 7) and still read format 6', async (t) => {
  const a = new KvStateMachine();
  a.bootstrapMembers(voters(1, 2, 3), 4, [1, 2, 3]);
  a.apply(1, [{ cid: REGISTER_NONCE_MIN, seq: 1, op: encodeRegister() }]);
  a.apply(5, [{ cid: 1, seq: 1, op: encodeMember('add', 9, addr(7009)) }]);
  t.equal(a.configurations().length, 2, 'the add was applied');
  const snap = a.snapshot();
  const b = new KvStateMachine();
  b.bootstrapMembers(voters(1, 2, 3), 4, [1, 2, 3]);
  b.restore(snap);
  t.same(b.configurations(), a.configurations(), 'the address survives a snapshot');
  t.same(b.configurations().at(-1)!.members.at(-1)!.addr, addr(7009));
  // Format 6: members as (sid, voter) pairs.
  const raw = kvDecode(snap) as unknown[];
  raw[0] = 6;
  raw[8] = (raw[8] as unknown[][]).map((c) => [
    c[0],
    ...c.slice(1).flatMap((x, i) => (i % 3 === 2 ? [] : [x])),
  ]);
  const c = new KvStateMachine();
  c.bootstrapMembers(voters(1, 2, 3), 4, [1, 2, 3]);
  c.restore(new Uint8Array(kvEncode(raw)));
  t.same(
    c.configurations().at(-1)!.members,
    [...voters(1, 2, 3), { sid: 9, voter: false }],
    'a format 6 snapshot loads, without addresses',
  );
  const broken = kvDecode(snap) as unknown[];
  (broken[8] as unknown[][])[1][12] = ['h', 7009, 7009];
  t.throws(
    () => c.restore(new Uint8Array(kvEncode(broken))),
    /address/,
    'a bad address is refused',
  );
});
