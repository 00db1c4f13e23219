import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import {
  BACKUP_IDLE_MS,
  BackupError,
  BackupServer,
  encodeBackupFile,
  readBackupFile,
  restoredClusterId,
  type BackupFile,
} from '../lib/backup';
import { PaxosClient } from '../lib/client';
import { CLUSTER_FILE, ClusterMismatchError, DurableStore } from '../lib/io/storage';
import { launchNode, waitReady } from '../lib/launch';
import { BACKUPS_PINNED_MAX } from '../lib/limits';
import { KvStateMachine } from '../lib/sm/kv';
import {
  decodeReply,
  decodeRequest,
  encodeReply,
  encodeRequest,
  type SnapshotReply,
} from '../lib/wire/client';
import {
  BIN,
  Cluster,
  freeUdpPorts,
  ROOT,
  runBin,
  sleep,
  startLoad,
  waitFor,
  type NodeStatus,
} from './helpers/cluster';

// Issue 13, backup and restore: `paxos-client snapshot save FILE` under a write
// load holds every write acknowledged before the save began; `paxosd restore`
// seeds a fresh cluster (new ports, data dirs, cluster id) that starts with
// exactly that state at that slot; damaged files and another cluster's data
// directory are refused.

const KEY_A = randomBytes(32).toString('hex');
const KEY_B = randomBytes(32).toString('hex');

t.test('wire: the snapshot save messages round-trip', async (t) => {
  const token = randomBytes(16);
  for (const req of [
    { t: 'snapshot' as const, nonce: 7 },
    { t: 'snapshot' as const, nonce: 7, token },
    { t: 'chunk' as const, nonce: 7, id: 2 ** 32 - 1, offset: 65_536 },
    { t: 'chunk' as const, nonce: 7, id: 3, offset: 0, token },
  ])
    t.same(decodeRequest(encodeRequest(req)), req, `${req.t}${req.token ? ' with a token' : ''}`);
  const digest = randomBytes(32);
  for (const r of [
    { t: 'snapinfo' as const, nonce: 1, id: 2, slot: 3, hash: randomBytes(32), bytes: 4, digest },
    { t: 'snapinfo' as const, nonce: 1, id: 2, slot: 3, hash: null, bytes: 4, digest },
    { t: 'snapchunk' as const, nonce: 1, id: 2, offset: 5, data: randomBytes(100) },
    { t: 'snaperr' as const, nonce: 1, code: 'not_leader' as const, leader: 2, message: 'm' },
  ])
    t.same(decodeReply(encodeReply(r)), r, r.t);
  const short = encodeReply({
    t: 'snapinfo',
    nonce: 1,
    id: 2,
    slot: 3,
    hash: null,
    bytes: 4,
    digest,
  });
  t.ok('error' in decodeReply(short.subarray(0, short.length - 1)), 'a cut digest is refused');
});

/** A backup file of a small state machine (no cluster needed). */
function sampleFile(): { bytes: Buffer; sm: KvStateMachine } {
  const sm = new KvStateMachine(100, 1000);
  const d0 = sm.digest();
  if (!d0) throw new Error('no genesis hash');
  const bytes = encodeBackupFile(
    { data: Buffer.from(sm.snapshot()), slot: d0.slot, hash: Buffer.from(d0.hash), sid: 0 },
    'src',
    1,
  );
  return { bytes, sm };
}

t.test('file: round trip; every truncation and a flipped byte are refused', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'paxos-backup-unit-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const { bytes } = sampleFile();
  const file = path.join(dir, 'b.snap');
  fs.writeFileSync(file, bytes);
  const f: BackupFile = readBackupFile(file);
  t.equal(f.clusterId, 'src');
  t.equal(restoredClusterId(f), restoredClusterId(readBackupFile(file)), 'one file, one new id');
  t.not(restoredClusterId(f), 'src', 'a new cluster id by default');
  let refused = 0;
  for (let n = 0; n < bytes.length; n++) {
    fs.writeFileSync(file, bytes.subarray(0, n));
    try {
      readBackupFile(file);
    } catch (e) {
      if (e instanceof BackupError && e.code === 'corrupt') refused++;
    }
  }
  t.equal(refused, bytes.length, `all ${bytes.length} truncations refused as corrupt`);
  refused = 0;
  for (let i = 0; i < bytes.length; i++) {
    const bad = Buffer.from(bytes);
    bad[i] ^= 0x40;
    fs.writeFileSync(file, bad);
    try {
      readBackupFile(file);
    } catch (e) {
      if (e instanceof BackupError && e.code === 'corrupt') refused++;
    }
  }
  t.equal(refused, bytes.length, `a flipped bit at each of ${bytes.length} offsets refused`);
});

t.test('BackupServer: bounded pins, one pin per save, unpinned when done or idle', async (t) => {
  let now = 0;
  let barriers: (() => void)[] = [];
  let leader = true;
  const sent: SnapshotReply[] = [];
  let state = 0;
  const srv = new BackupServer<string>({
    barrier: (ready) => {
      if (!leader) return { t: 'redirect', leader: 2 };
      barriers.push(ready);
      return null;
    },
    capture: () => ({ slot: 10 + state, hash: null, data: Buffer.alloc(40_000, state) }),
    send: (_to, r) => sent.push(r),
    nowMs: () => now,
    randomId: () => 7,
    log: () => undefined,
  });
  const last = (): SnapshotReply => sent[sent.length - 1];
  srv.begin('a', 'a', 1);
  t.equal(sent.length, 0, 'nothing before the read index');
  state = 1;
  for (const b of barriers.splice(0)) b();
  const info = last();
  if (info.t !== 'snapinfo') throw new Error(`expected snapinfo, got ${info.t}`);
  t.equal(info.slot, 11, 'pinned when the read index passed (the state then)');
  state = 2;
  srv.begin('a', 'a', 1);
  const again = last();
  t.ok(
    again.t === 'snapinfo' && again.id === info.id && again.slot === 11,
    'a retransmitted begin: the same pin',
  );
  srv.begin('b', 'b', 2);
  for (const b of barriers.splice(0)) b();
  srv.begin('c', 'c', 3);
  const busy = last();
  t.ok(
    busy.t === 'snaperr' && busy.code === 'busy',
    `a third save: busy (${busy.t === 'snaperr' ? busy.message : busy.t})`,
  );
  t.equal(srv.size, BACKUPS_PINNED_MAX, `at most ${BACKUPS_PINNED_MAX} pinned`);
  srv.chunk('a', 1, info.id, 0);
  const c0 = last();
  t.ok(c0.t === 'snapchunk' && c0.data.length === 32 * 1024 && c0.data[0] === 1, 'first chunk');
  srv.chunk('a', 1, info.id, 32 * 1024);
  const c1 = last();
  t.ok(c1.t === 'snapchunk' && c1.data.length === 40_000 - 32 * 1024, 'last chunk');
  srv.chunk('a', 1, info.id, 40_000);
  t.equal(srv.size, 1, 'the goodbye (offset = size) unpins it');
  srv.chunk('a', 1, info.id, 0);
  t.ok(last().t === 'snaperr', 'then its chunks are refused (expired)');
  now += BACKUP_IDLE_MS + 1;
  srv.sweep(now);
  t.equal(srv.size, 0, 'an idle pin is dropped');
  leader = false;
  srv.begin('d', 'd', 4);
  const redirect = last();
  t.ok(
    redirect.t === 'snaperr' && redirect.code === 'not_leader' && redirect.leader === 2,
    'a follower redirects',
  );
  t.equal(srv.size, 0, 'and pins nothing');
});

t.test(
  'data directories record their cluster; an older one (no record) opens and gets one',
  async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'paxos-clusterid-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const old = DurableStore.open(dir, false); // as an older build: no cluster id
    old.store.append([{ t: 'promise', ballot: 5 }]);
    old.store.close();
    t.notOk(fs.existsSync(path.join(dir, CLUSTER_FILE)), 'an older build writes no record');
    const first = DurableStore.open(dir, false, undefined, 'alpha');
    t.same(first.records, [{ t: 'promise', ballot: 5 }], 'it opens as before');
    first.store.close();
    t.ok(fs.existsSync(path.join(dir, CLUSTER_FILE)), 'and records its cluster');
    const walBefore = fs.readdirSync(dir).map((f) => [f, fs.statSync(path.join(dir, f)).size]);
    t.throws(
      () => DurableStore.open(dir, false, undefined, 'beta'),
      new ClusterMismatchError(dir, 'alpha', 'beta'),
      'another cluster is refused, naming both ids',
    );
    t.same(
      fs.readdirSync(dir).map((f) => [f, fs.statSync(path.join(dir, f)).size]),
      walBefore,
      'and its files are left as they were',
    );
    DurableStore.open(dir, false, undefined, 'alpha').store.close();
    t.pass('its own cluster opens it again');
  },
);

/** A cluster restored from a file: our own processes (the data dirs are seeded before the start). */
class Restored {
  readonly procs = new Map<number, ChildProcess>();
  servers: { sid: number; host: string; peerPort: number; clientPort: number }[] = [];
  readonly configFile: string;
  readonly dataDir: string;
  constructor(
    readonly dir: string,
    readonly clusterId: string,
  ) {
    this.configFile = path.join(dir, 'restored.config.json');
    this.dataDir = path.join(dir, 'data');
  }

  nodeDir(sid: number): string {
    return path.join(this.dataDir, String(sid));
  }

  async start(n: number): Promise<void> {
    const ports = await freeUdpPorts(2 * n);
    this.servers = Array.from({ length: n }, (_, sid) => ({
      sid,
      host: '127.0.0.1',
      peerPort: ports[2 * sid],
      clientPort: ports[2 * sid + 1],
    }));
    const config = {
      clusterId: this.clusterId,
      servers: this.servers,
      timing: { tickMs: 10, heartbeatTicks: 5, electionTicks: 30 },
      dataDir: this.dataDir,
      logDir: path.join(this.dir, 'logs'),
    };
    fs.writeFileSync(this.configFile, JSON.stringify(config, null, 2));
    await Promise.all(
      this.servers.map(async ({ sid }) => {
        const err = fs.openSync(path.join(this.dir, `stderr${sid}.log`), 'a');
        const child = launchNode({
          args: ['--config', this.configFile, '--sid', String(sid)],
          cwd: ROOT,
          stderr: err,
          env: { ...process.env, PAXOS_SID: '' },
        });
        fs.closeSync(err);
        this.procs.set(sid, child);
        await waitReady(child, sid, 15_000, 50);
      }),
    );
  }

  client(extra: Partial<ConstructorParameters<typeof PaxosClient>[0]> = {}): PaxosClient {
    return new PaxosClient({
      servers: this.servers.map(({ sid, host, clientPort }) => ({ sid, host, clientPort })),
      timeoutMs: 5000,
      retryMs: 20,
      clusterId: this.clusterId,
      ...extra,
    });
  }

  async stop(): Promise<void> {
    await Promise.all(
      [...this.procs.values()].map(
        (c) =>
          new Promise<void>((r) => {
            if (c.exitCode !== null || c.signalCode !== null) return r();
            c.once('exit', () => r());
            c.kill('SIGKILL');
          }),
      ),
    );
    this.procs.clear();
  }
}

t.test('save under load, restore into a fresh 3-node cluster', async (t) => {
  const src = await Cluster.start(t, { n: 3, name: 'paxos-backup', clientKeyFile: KEY_A });
  const dir = src.dir;
  await src.waitLeader(15_000);
  const file = path.join(dir, 'backup.snap');

  // A write load; the save starts once some writes were acknowledged.
  const load = startLoad(src.client(), { sessions: 4, durationMs: 4000, prefix: 'w/' });
  await waitFor('200 acknowledged writes', () => (load.acks() >= 200 ? true : undefined), 10_000);
  const saveStarted = Date.now();
  const ackedBefore = load.records.filter((r) => r.outcome === 'ack' && r.endAt <= saveStarted);
  const save = await runBin(BIN.client, [
    '--config',
    src.clientConfigFile,
    '--json',
    'snapshot',
    'save',
    file,
  ]);
  // A save sent to a follower first, while it is paused (its state lags the
  // writes acknowledged meanwhile): it must not serve its own stale state.
  const lead = await src.waitLeader(15_000);
  const follower = src.sids.find((s) => s !== lead)!;
  src.stop(follower);
  const acksAtStop = load.acks();
  await waitFor(
    '100 writes acknowledged during the pause',
    () => (load.acks() >= acksAtStop + 100 ? true : undefined),
    10_000,
  );
  const viaFollower = src.client({ leader: follower, retryMs: 2000 });
  const save2Started = Date.now();
  const ackedBefore2 = load.records.filter((r) => r.outcome === 'ack' && r.endAt <= save2Started);
  const save2 = viaFollower.snapshotSave();
  await sleep(200);
  src.cont(follower);
  const saved2 = await save2;
  const loadResult = await load.done;
  const smF = new KvStateMachine();
  smF.restore(saved2.data);
  const missing2 = ackedBefore2.filter((r) => smF.data.get(r.key) !== r.value);
  t.not(
    saved2.sid,
    follower,
    `a save asked of a paused follower is served by the leader (sid ${saved2.sid}, leader was ${lead})`,
  );
  t.same(
    missing2.map((r) => r.key).slice(0, 5),
    [],
    `all ${ackedBefore2.length} writes acknowledged before it are in it (slot ${saved2.slot})`,
  );
  t.equal(save.code, 0, `snapshot save exits 0 (${save.stderr.trim()})`);
  const saved = JSON.parse(save.stdout) as { slot: number; hash: string; bytes: number };
  t.comment(
    `saved slot ${saved.slot}, ${saved.bytes} bytes in ${save.ms} ms; ${ackedBefore.length} writes acknowledged before the save, ${loadResult.acked.length} in all`,
  );
  t.ok(loadResult.acked.length > ackedBefore.length, 'the load went on during the save');
  t.equal(loadResult.failed.length, 0, 'no write failed');

  const f = readBackupFile(file);
  t.equal(f.slot, saved.slot, 'the file holds the slot the save printed');
  t.equal(f.hash?.toString('hex'), saved.hash, 'and the state hash');
  t.equal(f.clusterId, src.clusterId, 'and names the source cluster');
  const sm = new KvStateMachine();
  sm.restore(f.data);
  const missing = ackedBefore.filter((r) => sm.data.get(r.key) !== r.value);
  t.same(
    missing.map((r) => r.key).slice(0, 5),
    [],
    'every write acknowledged before the save is in the file',
  );
  t.ok(sm.data.size >= ackedBefore.length, `${sm.data.size} keys in the file`);
  t.notOk(fs.existsSync(`${file}.tmp`), 'no temp file left');

  // The source's nodes agree on the state hash once the load is over.
  const last = await src.waitSameApplied(src.sids, 15_000);
  const hashes = new Set(
    (await src.statuses()).map((r) => {
      const x = r as NodeStatus & { hash: string; hashSlot: number; diverged: unknown };
      return `${x.hashSlot} ${x.hash} ${String(x.diverged)}`;
    }),
  );
  t.equal(hashes.size, 1, `the source's nodes report one state hash at slot ${last}`);
  // A save of the quiet source: its slot and hash are what every node's status reports.
  const quiet = await src.client().snapshotSave();
  t.same(
    [...hashes],
    [`${quiet.slot} ${quiet.hash?.toString('hex')} null`],
    `a save's slot and hash (${quiet.slot}) are every source node's status`,
  );

  // Save errors, each with its own exit code and a clear message.
  const wrongKey = path.join(dir, 'client-wrong.config.json');
  const keyB = path.join(dir, 'wrong.key');
  fs.writeFileSync(keyB, KEY_B, { mode: 0o600 });
  const cc = JSON.parse(fs.readFileSync(src.clientConfigFile, 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(wrongKey, JSON.stringify({ ...cc, clientKeyFile: keyB, timeoutMs: 600 }));
  const dead = path.join(dir, 'client-dead.config.json');
  const deadPorts = await freeUdpPorts(1);
  fs.writeFileSync(
    dead,
    JSON.stringify({
      ...cc,
      servers: [{ sid: 0, host: '127.0.0.1', clientPort: deadPorts[0] }],
      timeoutMs: 400,
    }),
  );
  const out = (name: string): string => path.join(dir, name);
  // FILE.tmp -> /dev/full: every write of the temp file fails with ENOSPC.
  fs.symlinkSync('/dev/full', `${out('full.snap')}.tmp`);
  const cases: [string, string[], number, RegExp, string][] = [
    ['no server', ['--config', dead], 3, /no answer within 400 ms.*silent/, 'none.snap'],
    ['wrong client key', ['--config', wrongKey], 2, /unauthenticated/, 'key.snap'],
    [
      'snapshot too big',
      ['--config', src.clientConfigFile, '--max-bytes', '100'],
      1,
      /too_large: the snapshot at slot \d+ is \d+ bytes, above the limit of 100 bytes/,
      'big.snap',
    ],
    ['disk full', ['--config', src.clientConfigFile], 1, /cannot write .*ENOSPC/, 'full.snap'],
  ];
  for (const [name, args, code, msg, target] of cases) {
    const r = await runBin(BIN.client, [...args, 'snapshot', 'save', out(target)]);
    t.equal(r.code, code, `${name}: exit ${code}`);
    t.match(r.stderr, msg, `${name}: ${r.stderr.trim()}`);
    t.notOk(fs.existsSync(out(target)), `${name}: no file written`);
  }

  // Restore refuses damaged files and leaves the data directory alone.
  const buf = fs.readFileSync(file);
  const truncated = out('truncated.snap');
  fs.writeFileSync(truncated, buf.subarray(0, buf.length - 100));
  const flipped = out('flipped.snap');
  const bad = Buffer.from(buf);
  bad[Math.floor(bad.length / 2)] ^= 1;
  fs.writeFileSync(flipped, bad);
  for (const [name, f2, msg] of [
    ['truncated', truncated, /truncated: \d+ bytes, the header says \d+/],
    ['a flipped bit', flipped, /checksum mismatch/],
  ] as const) {
    const target = out(`refused-${name.length}`);
    const r = await runBin(BIN.paxosd, ['restore', f2, '--data-dir', target]);
    t.equal(r.code, 1, `restore of a ${name} file: exit 1`);
    t.match(r.stderr, msg, `restore of a ${name} file: ${r.stderr.trim()}`);
    t.notOk(fs.existsSync(target), `restore of a ${name} file: nothing created`);
  }

  // Restore into three new data directories; the new cluster starts at the slot.
  const newDir = path.join(dir, 'restored');
  fs.mkdirSync(newDir);
  const dst = new Restored(newDir, '');
  const ids = new Set<string>();
  for (const sid of [0, 1, 2]) {
    const r = await runBin(BIN.paxosd, ['restore', file, '--data-dir', dst.nodeDir(sid)]);
    t.equal(r.code, 0, `restore into node ${sid}'s directory (${r.stderr.trim()})`);
    t.match(
      r.stdout,
      new RegExp(`slot ${f.slot}, state hash ${saved.hash}`),
      'prints slot and hash',
    );
    ids.add(/cluster id "([^"]+)"/.exec(r.stdout)?.[1] ?? '');
  }
  t.equal(ids.size, 1, 'one file, one cluster id for every node');
  const newId = [...ids][0];
  t.not(newId, src.clusterId, `a new cluster id: ${newId}`);
  const again = await runBin(BIN.paxosd, ['restore', file, '--data-dir', dst.nodeDir(0)]);
  t.equal(again.code, 1, 'restore into a non-empty directory: exit 1');
  t.match(again.stderr, /is not empty/, again.stderr.trim());

  const restored = new Restored(newDir, newId);
  t.teardown(() => restored.stop());
  await restored.start(3);
  const admin = restored.client();
  t.teardown(() => admin.close());
  const rows = await waitFor(
    'the restored nodes to agree on a leader',
    async () => {
      const all = (await Promise.all([0, 1, 2].map((s) => admin.status(s, 500)))) as
        (NodeStatus & { hash: string; hashSlot: number })[] | null[];
      if (all.some((r) => r === null)) return undefined;
      const leaders = all.filter((r) => r!.role === 'leader');
      return leaders.length === 1 && all.every((r) => r!.leader === leaders[0]!.sid)
        ? (all as (NodeStatus & { hash: string; hashSlot: number })[])
        : undefined;
    },
    15_000,
  );
  for (const r of rows) {
    t.equal(r.applied, f.slot, `sid ${r.sid}: applied = the snapshot's slot`);
    t.equal(r.hashSlot, f.slot, `sid ${r.sid}: its state hash is at that slot`);
    t.equal(r.hash, saved.hash, `sid ${r.sid}: the source's state hash at that slot`);
  }
  // Every acknowledged-before write reads back.
  const reader = restored.client();
  t.teardown(() => reader.close());
  const wrong: string[] = [];
  for (let i = 0; i < ackedBefore.length; i += 64) {
    const batch = ackedBefore.slice(i, i + 64);
    const got = await Promise.all(batch.map((r) => reader.get(r.key)));
    got.forEach((g, j) => g.value !== batch[j].value && wrong.push(batch[j].key));
  }
  t.same(wrong.slice(0, 5), [], `${ackedBefore.length} acknowledged writes read back`);
  // The restored cluster takes writes, and a save from it (no client key here:
  // the token round trip) holds them at a higher slot.
  t.ok((await reader.put('after-restore', 'yes')).ok, 'a write to the restored cluster');
  const again2 = await reader.snapshotSave();
  t.ok(again2.slot > f.slot, `a save from the restored cluster: slot ${again2.slot}`);
  const sm2 = new KvStateMachine();
  sm2.restore(again2.data);
  t.equal(sm2.data.get('after-restore'), 'yes', 'it holds the new write');

  // A data directory of another cluster is refused, naming both ids (source
  // node 0 stopped first: its ports are free, so only the check can refuse).
  await restored.stop();
  await src.kill(0);
  const mixed = await runBin(
    BIN.paxosd,
    ['--config', src.nodeConfigFile(0), '--sid', '0', '--data-dir', restored.nodeDir(1)],
    { timeoutMs: 10_000 },
  );
  t.equal(mixed.code, 2, 'a node of the source cluster on a restored data directory: exit 2');
  t.match(
    mixed.stderr,
    new RegExp(`ERROR sid=0 .*belongs to cluster "${newId}".*not to cluster "${src.clusterId}"`),
    mixed.stderr.trim(),
  );
});
