// The data directory lock (issue 11): a second paxosd on a running node's data
// directory exits 2 naming the directory and the holder, before it reads (and
// could cut the torn-looking tail of) the WAL; a stale lock of a dead process
// is taken over with a log line; in-process, the lock is held until stop().
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { clientConfigFromNode, parseNodeConfig, PaxosClient, PaxosNode } from '../lib/index';
import { DirLock, DirLockError, LOCK_FILE } from '../lib/io/dirlock';
import { BIN, Cluster, freeUdpPorts, runBin, waitFor, type RunResult } from './helpers/cluster';

const show = (r: RunResult): Record<string, unknown> => ({
  code: r.code,
  stdout: r.stdout.slice(0, 500),
  stderr: r.stderr.slice(0, 500),
});

/** Every file of a directory with its bytes. */
function snapshotDir(dir: string): Map<string, Buffer> {
  const m = new Map<string, Buffer>();
  for (const f of fs.readdirSync(dir).sort()) m.set(f, fs.readFileSync(path.join(dir, f)));
  return m;
}

t.test(
  'a second paxosd on a running node data directory exits 2 and touches nothing',
  async (t) => {
    const c = await Cluster.start(t, { n: 3, name: 'paxos-ops-lock' });
    await c.waitWritable();
    const client = c.client();
    t.teardown(() => client.close());
    t.match(await client.put('k', 'v1'), { ok: true });
    await c.waitSameApplied(c.sids, 10_000, 1);
    const sid = 1;
    const dir = path.join(c.dataDir, String(sid));
    const wal = fs
      .readdirSync(dir)
      .filter((f) => /^wal-\d+\.log$/.test(f))
      .sort()
      .at(-1)!;
    // A torn-looking tail, as a write in progress of the running node leaves it:
    // a process that opened the WAL would cut it.
    const tail = Buffer.from([1, 2, 3, 4, 5, 6, 7]);
    fs.appendFileSync(path.join(dir, wal), tail);
    const before = snapshotDir(dir);
    t.ok(before.has(LOCK_FILE), 'the running node holds a lock file');
    const r = await runBin(BIN.paxosd, ['--config', c.nodeConfigFile(sid), '--sid', String(sid)], {
      timeoutMs: 10_000,
    });
    t.equal(r.code, 2, 'second paxosd: exit 2', show(r));
    t.ok(r.stderr.includes(dir), 'stderr names the data directory', show(r));
    t.match(r.stderr, new RegExp(`in use by pid ${c.pidOf(sid)}\\b`), 'stderr names the holder');
    t.notMatch(r.stderr, /torn|\n\s+at /, 'no torn-tail cut, no stack trace', show(r));
    const after = snapshotDir(dir);
    t.same([...after.keys()], [...before.keys()], 'same files');
    for (const [f, b] of before) t.ok(after.get(f)?.equals(b), `${f} byte-identical`);
    // Take the tail back off (the node appends at the end of the file), then
    // check the first node still serves.
    const size = fs.statSync(path.join(dir, wal)).size;
    fs.truncateSync(path.join(dir, wal), size - tail.length);
    t.ok(c.isRunning(sid), 'the first node still runs');
    t.match(await client.put('k', 'v2'), { ok: true });
    await c.waitSameApplied(c.sids, 10_000, 2);
    t.match(await client.get('k'), { ok: true, value: 'v2' });

    // SIGKILL leaves the lock behind: a restart takes it over and says so.
    const pid = c.pidOf(sid)!;
    await c.kill(sid, 'SIGKILL');
    t.ok(fs.existsSync(path.join(dir, LOCK_FILE)), 'a killed node leaves its lock file');
    await c.restart(sid);
    t.match(
      c.stderrOf(sid),
      new RegExp(`WARN sid=${sid} .*took over the stale lock of pid ${pid} \\(not running\\)`),
      'the restart logs the takeover',
    );
    const holder = JSON.parse(fs.readFileSync(path.join(dir, LOCK_FILE), 'utf8')) as {
      pid: number;
    };
    t.equal(holder.pid, c.pidOf(sid), 'the lock names the new process');
    t.same(c.unexpectedExits(), []);
  },
);

t.test('DirLock: live holder refused, dead or reused pid taken over', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'paxos-ops-dirlock-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, LOCK_FILE);
  const logs: string[] = [];
  const log = (l: string): void => void logs.push(l);
  const write = (h: object): void => fs.writeFileSync(file, JSON.stringify(h) + '\n');
  const startOf = (pid: number): string => {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  };

  // The parent (tap) is alive: its lock stands.
  write({ pid: process.ppid, start: startOf(process.ppid), host: os.hostname() });
  t.throws(() => DirLock.acquire(dir, true, log), DirLockError, 'a live holder is refused');
  t.throws(
    () => DirLock.acquire(dir, true, log),
    new RegExp(`in use by pid ${process.ppid}`),
    'the message names the pid',
  );
  // Same pid, another start time: the pid was reused, the holder is gone.
  write({ pid: process.ppid, start: '1', host: os.hostname() });
  let lock = DirLock.acquire(dir, true, log);
  t.match(logs.pop(), `took over the stale lock of pid ${process.ppid}`);
  t.throws(() => DirLock.acquire(dir, true, log), /\(this process\)/, 'not twice in one process');
  lock.release();
  t.notOk(fs.existsSync(file), 'release removes the lock file');

  // A process that has exited.
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], {
    encoding: 'utf8',
  });
  write({ pid: Number(dead.stdout), start: null, host: os.hostname() });
  lock = DirLock.acquire(dir, true, log);
  t.match(logs.pop(), `took over the stale lock of pid ${dead.stdout}`);
  lock.release();

  // Another host, or content that is not a lock: refused, naming the file.
  write({ pid: 1, start: null, host: 'elsewhere.example' });
  t.throws(() => DirLock.acquire(dir, true, log), /on host elsewhere\.example.*remove .*LOCK/);
  fs.writeFileSync(file, 'garbage');
  t.throws(() => DirLock.acquire(dir, true, log), /not a paxosd lock/);
  t.same(
    fs.readdirSync(dir).filter((f) => f !== LOCK_FILE),
    [],
    'no temporary files left behind',
  );
});

t.test('in-process: the lock is held from start to stop', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'paxos-ops-inproc-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const [peerPort, clientPort] = await freeUdpPorts(2);
  const config = parseNodeConfig('inline', {
    clusterId: 'lock',
    servers: [{ sid: 0, host: '127.0.0.1', peerPort, clientPort }],
    dataDir: path.join(dir, 'data'),
    logDir: path.join(dir, 'logs'),
  });
  const first = await PaxosNode.start({ config, sid: 0, init: true, log: () => undefined });
  await t.rejects(
    PaxosNode.start({ config, sid: 0, log: () => undefined }),
    DirLockError,
    'a second node on the same directory is refused before it binds',
  );
  t.equal(first.status().sid, 0, 'the first node is unaffected');
  await first.stop();
  t.notOk(fs.existsSync(path.join(dir, 'data', '0', LOCK_FILE)), 'stop releases the lock');
  const second = await PaxosNode.start({ config, sid: 0, log: () => undefined });
  await second.stop();
});

t.test('stop waits for a running fdatasync before it closes the store', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'paxos-ops-stopsync-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const [peerPort, clientPort] = await freeUdpPorts(2);
  const config = parseNodeConfig('inline', {
    clusterId: 'stopsync',
    servers: [{ sid: 0, host: '127.0.0.1', peerPort, clientPort }],
    storage: { sync: true },
    dataDir: path.join(dir, 'data'),
    logDir: path.join(dir, 'logs'),
  });
  const lines: string[] = [];
  const node = await PaxosNode.start({
    config,
    sid: 0,
    init: true,
    log: (l, level) => void lines.push(`${level} ${l}`),
  });
  // Hold the next fdatasync's completion back, and record the order of events.
  const events: string[] = [];
  const store = node.store;
  const realSync = store.syncAsync.bind(store);
  let held: (() => void) | null = null;
  store.syncAsync = (done) =>
    realSync((err) => {
      held = () => {
        events.push('sync done');
        done(err);
      };
    });
  const realClose = store.close.bind(store);
  store.close = () => {
    events.push('store closed');
    realClose();
  };
  const client = PaxosClient.fromConfig(clientConfigFromNode(config), { timeoutMs: 3000 });
  t.teardown(() => client.close());
  void client.put('k', 'v').catch(() => undefined);
  await waitFor('a sync in flight', () => held !== null, 5000);
  const stopped = node.stop();
  await new Promise((r) => setTimeout(r, 100));
  t.same(events, [], 'the store stays open while the sync runs');
  held!();
  await stopped;
  t.same(events, ['sync done', 'store closed'], 'closed after the sync completed');
  t.notOk(
    lines.some((l) => l.startsWith('ERROR')),
    'no storage failure logged',
    { lines },
  );
  t.notOk(fs.existsSync(path.join(dir, 'data', '0', LOCK_FILE)), 'lock released');
});
