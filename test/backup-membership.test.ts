// Issue 13, backup and restore across membership changes: a backup taken after
// the source cluster changed its members restores into a new cluster whose
// members are its own config file's (bootstrap) ones, as etcd's `snapshot
// restore` takes the membership from --initial-cluster. Kept: the data, the
// sessions and the state hash (the restored state equals the source at the
// backup's slot). Without dropping the source's configurations, the new
// cluster would wait for voters it does not have (sid 3 here).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { encodeBackupFile, readBackupFile, restoreDataDir } from '../lib/backup';
import type { Member } from '../lib/core/types';
import { DurableStore } from '../lib/io/storage';
import {
  encodeMember,
  encodeOp,
  encodeRegister,
  KvStateMachine,
  REGISTER_NONCE_MIN,
} from '../lib/sm/kv';

const voters = (...s: number[]): Member[] => s.map((sid) => ({ sid, voter: true }));
const ALPHA = 4;

/** A source machine (bootstrap {0,1,2}, sids 0-4) that added 3 and promoted it. */
function source(): KvStateMachine {
  const sm = new KvStateMachine(100, 32768);
  sm.bootstrapMembers(voters(0, 1, 2), ALPHA, [0, 1, 2, 3, 4]);
  sm.apply(1, [{ cid: REGISTER_NONCE_MIN, seq: 1, op: encodeRegister() }]);
  sm.apply(2, [{ cid: 1, seq: 1, op: encodeMember('add', 3) }]);
  for (let s = 3; s < 2 + ALPHA; s++) sm.apply(s, []);
  sm.apply(2 + ALPHA, [{ cid: 1, seq: 2, op: encodeMember('promote', 3) }]);
  sm.apply(3 + ALPHA, [{ cid: 1, seq: 3, op: encodeOp({ kind: 'put', key: 'k', value: 'v' }) }]);
  return sm;
}

/** The membership a node of the new cluster (bootstrap {0,1}) sees after loading `data`. */
function loaded(data: Uint8Array): { members: Member[]; sm: KvStateMachine } {
  const sm = new KvStateMachine(100, 32768);
  sm.bootstrapMembers(voters(0, 1), ALPHA, [0, 1]);
  sm.restore(data);
  const cs = sm.configurations();
  return { members: cs[cs.length - 1].members, sm };
}

t.test('restore into a new cluster: its own members, the source state and hash', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'paxos-backup-members-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const src = source();
  const members = src.configurations().at(-1)!.members;
  t.same(members, voters(0, 1, 2, 3), 'the source added and promoted 3');
  const d = src.digest()!;
  const file = path.join(dir, 'b.snap');
  const data = Buffer.from(src.snapshot());
  fs.writeFileSync(
    file,
    encodeBackupFile({ data, slot: d.slot, hash: Buffer.from(d.hash), sid: 0 }, 'src', 1),
  );
  // Control: the source's snapshot as it is carries the source's members.
  t.same(loaded(data).members, voters(0, 1, 2, 3), "control: the raw snapshot keeps 3's vote");
  const r = restoreDataDir(file, path.join(dir, 'n0'), { sync: false });
  const opened = DurableStore.open(path.join(dir, 'n0'), false, undefined, r.clusterId);
  t.teardown(() => opened.store.close());
  t.equal(opened.snapshot?.slot, d.slot, 'the restored node starts at the backup slot');
  const got = loaded(opened.snapshot!.data);
  t.same(got.members, voters(0, 1), "the new cluster's bootstrap members");
  t.same(got.sm.digest()?.hash, d.hash, 'the state hash is the source one');
  t.equal(readValue(got.sm), 'v', 'the data is the source one');
  t.ok(readBackupFile(file), 'the backup file itself is untouched');
});

/** The value of key k through a read command (the machine's public path). */
function readValue(sm: KvStateMachine): string | undefined {
  const slot = (sm.digest()?.slot ?? 0) + 1;
  const { results } = sm.apply(slot, [{ cid: 1, seq: 4, op: encodeOp({ kind: 'get', key: 'k' }) }]);
  return results[0]?.value ?? undefined;
}
