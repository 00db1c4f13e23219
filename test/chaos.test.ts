import { spawnSync } from 'node:child_process';
import t, { type Test } from 'tap';
import { checkLinearizable } from '../lib/check/linearizability';
import { compareLogs } from '../lib/logcmp';
import { Cluster, sleep, startHistoryLoad, startLoad, verifyReadable } from './helpers/cluster';
import { isRoot, rng, which } from './helpers/faults';

// Jepsen-style chaos on real processes: a mixed put/get/cas/del load on a few
// hot keys records a history while a seeded nemesis SIGKILLs and restarts
// nodes, SIGSTOPs and SIGCONTs them and (as root, with iptables) drops a share
// of a node's peer traffic or cuts it off one way or both ways. Never more than
// a minority is faulty at once, and at most one fault of each kind is active.
// Afterwards: the history must be linearizable, every node must catch up, the
// order logs must agree and every acknowledged unique write must read back.
//
// Set CHAOS_SEED to repeat a run (each subtest uses CHAOS_SEED + n).

const SEED = Number(process.env.CHAOS_SEED ?? Date.now() % 1_000_000);
const NEMESIS_MS = 16_000;
const NEMESIS_MAX_FAULTS = 60;
const TAG = `paxos-chaos-${process.pid}`;

// ---------------------------------------------------------------------------
// iptables (root only), every rule tagged with TAG and restricted to 127.0.0.1
// on lo and to one of this cluster's peer ports.

function iptablesUsable(): { ok: boolean; why: string } {
  if (!isRoot()) return { ok: false, why: 'not running as root' };
  if (!which('iptables')) return { ok: false, why: 'iptables not found' };
  const r = spawnSync('iptables', ['-w', '-L', '-n'], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) return { ok: false, why: `iptables -L -n failed: ${r.stderr || r.error}` };
  return { ok: true, why: '' };
}

function ipt(args: string[]): void {
  const r = spawnSync('iptables', ['-w', ...args], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`iptables ${args.join(' ')} failed: ${r.stderr || r.error}`);
}

/** Packets dropped so far by TAG-ged rules (added up by removeTaggedRules). */
let droppedPackets = 0;

/** Delete every rule tagged with TAG from INPUT and OUTPUT; returns how many. */
function removeTaggedRules(): number {
  let removed = 0;
  for (const chain of ['INPUT', 'OUTPUT']) {
    const l = spawnSync('iptables', ['-w', '-L', chain, '-v', '-n', '-x'], {
      encoding: 'utf8',
      timeout: 10_000,
    });
    for (const line of (l.stdout ?? '').split('\n'))
      if (line.includes(TAG)) droppedPackets += Number(line.trim().split(/\s+/)[0]) || 0;
    // Bounded: each pass deletes what it lists.
    for (let pass = 0; pass < 5; pass++) {
      const r = spawnSync('iptables', ['-w', '-S', chain], { encoding: 'utf8', timeout: 10_000 });
      if (r.status !== 0) break;
      const lines = r.stdout.split('\n').filter((l) => l.startsWith('-A ') && l.includes(TAG));
      if (lines.length === 0) break;
      for (const l of lines) {
        const args = l.split(/\s+/).filter((x) => x !== '');
        args[0] = '-D';
        const d = spawnSync('iptables', ['-w', ...args], { encoding: 'utf8', timeout: 10_000 });
        if (d.status === 0) removed++;
      }
    }
  }
  return removed;
}

function rulePrefix(chain: 'INPUT' | 'OUTPUT', portFlag: '--dport' | '--sport', port: number) {
  const iface = chain === 'INPUT' ? ['-i', 'lo'] : ['-o', 'lo'];
  return [
    '-I',
    chain,
    ...iface,
    '-s',
    '127.0.0.1',
    '-d',
    '127.0.0.1',
    '-p',
    'udp',
    portFlag,
    String(port),
  ];
}
const tagArgs = ['-m', 'comment', '--comment', TAG, '-j', 'DROP'];

const IPT = iptablesUsable();
if (IPT.ok) {
  // No rule survives the process, whatever happens to the test.
  process.on('exit', () => {
    try {
      removeTaggedRules();
    } catch {
      // best effort
    }
  });
}

// ---------------------------------------------------------------------------

type Kind = 'kill' | 'stop' | 'loss' | 'partition';

async function chaos(t: Test, n: number): Promise<void> {
  const seed = SEED + n;
  const random = rng(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)];
  const between = (lo: number, hi: number): number => Math.floor(lo + random() * (hi - lo));
  t.comment(`seed ${seed} (CHAOS_SEED=${SEED}; set CHAOS_SEED to repeat)`);
  const kinds: Kind[] = ['kill', 'stop'];
  if (IPT.ok) {
    kinds.push('loss', 'partition');
    t.teardown(() => {
      removeTaggedRules();
    });
  } else t.comment(`kernel-level packet faults skipped: ${IPT.why}`);

  const c = await Cluster.start(t, { n, name: `paxos-chaos${n}`, clientTimeoutMs: 5000 });
  await c.waitLeader(15_000);
  await c.waitWritable(15_000);
  const client = c.client({ timeoutMs: 5000 });
  const hist = startHistoryLoad(client, {
    sessions: 5,
    durationMs: 50_000,
    keys: 6,
    prefix: 'hot/',
    pauseMs: 5,
  });
  const uniq = startLoad(client, { sessions: 2, durationMs: 50_000, prefix: 'u/' });

  // ---- nemesis
  const maxFaulty = Math.floor((n - 1) / 2);
  const faulty = new Set<number>();
  const activeKinds = new Set<Kind>();
  const counts: Record<string, number> = {};
  const events: string[] = [];
  const errors: string[] = [];
  const tasks: Promise<void>[] = [];
  const t0 = Date.now();
  const at = (): string => `${((Date.now() - t0) / 1000).toFixed(1)}s`;
  const peerPort = (sid: number): number => c.servers[sid].peerPort;

  const run = async (kind: Kind, sid: number): Promise<void> => {
    try {
      if (kind === 'kill') {
        await c.kill(sid, 'SIGKILL');
        const hold = between(500, 2000);
        events.push(`${at()} kill ${sid} ${hold}ms`);
        await sleep(hold);
        await c.restart(sid);
      } else if (kind === 'stop') {
        c.stop(sid);
        const hold = between(300, 1500);
        events.push(`${at()} stop ${sid} ${hold}ms`);
        await sleep(hold);
        c.cont(sid);
      } else if (kind === 'loss') {
        const port = peerPort(sid);
        ipt([
          ...rulePrefix('INPUT', '--dport', port),
          '-m',
          'statistic',
          '--mode',
          'random',
          '--probability',
          '0.2',
          ...tagArgs,
        ]);
        const hold = between(1000, 3000);
        events.push(`${at()} loss20% ${sid} ${hold}ms`);
        await sleep(hold);
        removeTaggedRules();
      } else {
        const port = peerPort(sid);
        const mode = pick(['in', 'out', 'full'] as const);
        if (mode !== 'out') ipt([...rulePrefix('INPUT', '--dport', port), ...tagArgs]);
        if (mode !== 'in') ipt([...rulePrefix('OUTPUT', '--sport', port), ...tagArgs]);
        const hold = between(1000, 3000);
        events.push(`${at()} partition-${mode} ${sid} ${hold}ms`);
        counts[`partition-${mode}`] = (counts[`partition-${mode}`] ?? 0) + 1;
        await sleep(hold);
        removeTaggedRules();
      }
    } catch (e) {
      errors.push(`${kind} ${sid}: ${(e as Error).message}`);
    } finally {
      faulty.delete(sid);
      activeKinds.delete(kind);
    }
  };

  // Only one loss and one partition can be active at once and both delete
  // every tagged rule when they end: a loss ending early may lift a partition
  // early too (the partition is then shorter, never longer). Keep them apart.
  const exclusive = (k: Kind): boolean =>
    (k === 'loss' && activeKinds.has('partition')) ||
    (k === 'partition' && activeKinds.has('loss'));

  let injected = 0;
  const dropped0 = droppedPackets;
  for (let i = 0; i < 1000 && injected < NEMESIS_MAX_FAULTS; i++) {
    if (Date.now() - t0 >= NEMESIS_MS) break;
    await sleep(between(200, 700));
    if (Date.now() - t0 >= NEMESIS_MS) break;
    if (faulty.size >= maxFaulty) continue;
    const free = kinds.filter((k) => !activeKinds.has(k) && !exclusive(k));
    const healthy = c.sids.filter((s) => !faulty.has(s));
    if (free.length === 0 || healthy.length === 0) continue;
    const kind = pick(free);
    const sid = pick(healthy);
    faulty.add(sid);
    activeKinds.add(kind);
    counts[kind] = (counts[kind] ?? 0) + 1;
    injected++;
    tasks.push(run(kind, sid));
  }
  const nemesisMs = Date.now() - t0;
  await Promise.all(tasks);

  // ---- heal everything (the tasks healed themselves; make sure)
  if (IPT.ok) removeTaggedRules();
  for (const sid of c.sids) {
    if (c.pidOf(sid) === undefined) await c.restart(sid);
    else if (!c.isRunning(sid)) c.cont(sid);
  }
  await sleep(2000);
  hist.stop();
  uniq.stop();
  const [h, r] = await Promise.all([hist.done, uniq.done]);

  t.comment(`faults injected in ${nemesisMs} ms: ${injected} ${JSON.stringify(counts)}`);
  t.comment(`events: ${events.join('; ')}`);
  t.same(errors, [], 'every fault was injected and healed');
  if (IPT.ok) t.comment(`packets dropped by the iptables rules: ${droppedPackets - dropped0}`);

  // ---- checks
  t.comment(
    `history: ${h.history.length} ops, ${h.acked} acked, ${h.unknown} unknown, ${h.failed} failed${
      h.failures.length ? ` (${h.failures.slice(0, 5).join('; ')})` : ''
    }`,
  );
  t.comment(
    `unique puts: ${r.records.length}, ${r.acked.length} acked, ${r.unknown.length} unknown, ${r.failed.length} failed`,
  );
  t.ok(h.acked > 200, `the history is non-trivial (${h.acked} ops completed)`);
  const lin = checkLinearizable(h.history);
  t.comment(`checker: ${lin.checkedKeys} keys, ${lin.explored} states explored`);
  t.ok(lin.ok, lin.message);

  const read = await verifyReadable(client, r, 8);
  t.equal(read.readErrors.length, 0, 'every read-back got an answer', {
    e: read.readErrors.slice(0, 5),
  });
  t.equal(read.mismatches.length, 0, `every acked write reads back (${read.checked} checked)`, {
    m: read.mismatches.slice(0, 5),
  });
  t.equal(read.badUnknown.length, 0, 'unknown writes read back absent or as written');

  const applied = await c.waitSameApplied(c.sids, 20_000);
  const cmp = compareLogs(c.orderLogFiles());
  t.equal(c.orderLogFiles().length, n, 'every node has an order log');
  t.ok(cmp.ok, `order logs agree: ${cmp.message}`);
  t.comment(`all ${n} nodes applied through slot ${applied}`);
  t.same(c.unexpectedExits(), [], 'no node exited on its own');
  if (IPT.ok) {
    const left = spawnSync('iptables', ['-w', '-S'], { encoding: 'utf8' }).stdout ?? '';
    t.notOk(left.includes(TAG), 'no chaos iptables rule is left');
  }
}

t.test('chaos: 3 nodes', (t) => chaos(t, 3));
t.test('chaos: 5 nodes', (t) => chaos(t, 5));
