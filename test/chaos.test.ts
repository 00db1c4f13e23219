import { spawnSync } from 'node:child_process';
import t, { type Test } from 'tap';
import { checkLinearizable } from '../lib/check/linearizability';
import { compareLogs } from '../lib/logcmp';
import { Cluster, sleep, startHistoryLoad, startLoad, verifyReadable } from './helpers/cluster';
import { dataDirOf, isRoot, requireOrSkip, rng, which } from './helpers/faults';
import { cutWal, StaleCutError, StatusProbe } from './helpers/powerloss';

// Jepsen-style chaos on real processes: a mixed put/get/cas/del load on a few
// hot keys records a history while a seeded nemesis SIGKILLs and restarts
// nodes, SIGSTOPs and SIGCONTs them and (as root, with iptables) drops a share
// of a node's peer traffic, cuts it off one way or both ways, or cuts its power
// (see helpers/powerloss.ts: its WAL loses the unsynced tail). Never more than
// a minority is faulty at once, and at most one fault of each kind is active.
// Each kind runs at least once and each iptables fault must drop packets.
// Afterwards: no operation got an error answer, the history must be
// linearizable, every node must catch up, the order logs must agree and every
// acknowledged unique write must read back.
//
// Set CHAOS_SEED to repeat a run (each subtest uses CHAOS_SEED + n).

const SEED = Number(process.env.CHAOS_SEED ?? Date.now() % 1_000_000);
const NEMESIS_MS = 16_000;
const NEMESIS_MAX_FAULTS = 60;
const TAG = `paxos-chaos-${process.pid}`;

// ---------------------------------------------------------------------------
// iptables (root only), every rule tagged with TAG plus the id of the fault
// that added it, and restricted to 127.0.0.1 on lo and to one of this
// cluster's ports.

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

/** The comment of the rules of one fault (the trailing slash keeps f1 apart from f12). */
const faultTag = (id: number): string => `${TAG}/f${id}/`;

/** Packets matched so far by the rules whose comment contains `tag`. */
function packetsOf(tag: string): number {
  let n = 0;
  for (const chain of ['INPUT', 'OUTPUT']) {
    const l = spawnSync('iptables', ['-w', '-L', chain, '-v', '-n', '-x'], {
      encoding: 'utf8',
      timeout: 10_000,
    });
    for (const line of (l.stdout ?? '').split('\n'))
      if (line.includes(tag)) n += Number(line.trim().split(/\s+/)[0]) || 0;
  }
  return n;
}

/** Delete every rule whose comment contains `tag` (default: all of this run's); returns how many. */
function removeRules(tag = TAG): number {
  let removed = 0;
  for (const chain of ['INPUT', 'OUTPUT']) {
    // Bounded: each pass deletes what it lists.
    for (let pass = 0; pass < 5; pass++) {
      const r = spawnSync('iptables', ['-w', '-S', chain], { encoding: 'utf8', timeout: 10_000 });
      if (r.status !== 0) break;
      const lines = r.stdout.split('\n').filter((l) => l.startsWith('-A ') && l.includes(tag));
      if (lines.length === 0) break;
      for (const l of lines) {
        // -S prints the comment in double quotes; -D wants it bare (else the
        // delete matches nothing and the rule stays).
        const args = l
          .split(/\s+/)
          .filter((x) => x !== '')
          .map((x) => x.replace(/^"(.*)"$/, '$1'));
        args[0] = '-D';
        const d = spawnSync('iptables', ['-w', ...args], { encoding: 'utf8', timeout: 10_000 });
        if (d.status === 0) removed++;
      }
    }
  }
  return removed;
}

/** Insert a DROP rule for UDP on lo between 127.0.0.1 addresses, port-matched, tagged. */
function dropRule(
  tag: string,
  chain: 'INPUT' | 'OUTPUT',
  portFlag: '--dport' | '--sport',
  port: number,
  extra: string[] = [],
): void {
  const iface = chain === 'INPUT' ? ['-i', 'lo'] : ['-o', 'lo'];
  ipt([
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
    ...extra,
    '-m',
    'comment',
    '--comment',
    tag,
    '-j',
    'DROP',
  ]);
}

/** Remove the `added` rules of one fault; throws (an injection error) if any stays. */
function heal(tag: string, added: number): void {
  const removed = removeRules(tag);
  if (removed !== added) throw new Error(`removed ${removed} of the ${added} rules tagged ${tag}`);
}

const IPT = iptablesUsable();
// Under CI=true no iptables is a failure; the process-level faults still run.
requireOrSkip(t, 'chaos: iptables loss, partitions and power loss', IPT.ok ? false : IPT.why);
if (IPT.ok) {
  // No rule survives the process, whatever happens to the test.
  process.on('exit', () => {
    try {
      removeRules();
    } catch {
      // best effort
    }
  });
}

// ---------------------------------------------------------------------------

type Kind = 'kill' | 'stop' | 'loss' | 'partition' | 'power';

async function chaos(t: Test, n: number): Promise<void> {
  const seed = SEED + n;
  const random = rng(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)];
  const between = (lo: number, hi: number): number => Math.floor(lo + random() * (hi - lo));
  t.comment(`seed ${seed} (CHAOS_SEED=${SEED}; set CHAOS_SEED to repeat)`);
  const kinds: Kind[] = ['kill', 'stop'];
  if (IPT.ok) {
    kinds.push('loss', 'partition', 'power');
    t.teardown(() => {
      removeRules();
    });
  } else t.comment(`kernel-level faults (loss, partitions, power loss) skipped: ${IPT.why}`);

  const c = await Cluster.start(t, { n, name: `paxos-chaos${n}`, clientTimeoutMs: 5000 });
  const probe = new StatusProbe(c);
  await probe.start();
  t.teardown(() => probe.close());
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
  /** Packets the rules of each kind dropped (iptables counters, read before deletion). */
  const dropped: Record<string, number> = {};
  const power = { cut: 0, bytes: 0, notCut: [] as string[] };
  const events: string[] = [];
  const errors: string[] = [];
  const tasks: Promise<void>[] = [];
  const t0 = Date.now();
  const at = (): string => `${((Date.now() - t0) / 1000).toFixed(1)}s`;
  let faultId = 0;

  const run = async (kind: Kind, sid: number): Promise<void> => {
    const tag = faultTag(++faultId);
    const { peerPort, clientPort } = c.servers[sid];
    try {
      if (kind === 'kill') {
        await c.kill(sid, 'SIGKILL');
        const hold = between(500, 2000);
        events.push(`${at()} kill ${sid} ${hold}ms`);
        await sleep(hold);
        await c.restart(sid);
      } else if (kind === 'power') {
        // Power loss: first nothing the node says reaches anyone (peers or
        // clients; only our status probe hears it), then it reports the WAL end
        // of its last completed sync, is killed and its WAL is cut back there.
        // Everything it vouched for lies before that point; the tail after it
        // (written, not yet synced) is what a power loss may take.
        dropRule(tag, 'OUTPUT', '--sport', peerPort);
        dropRule(tag, 'OUTPUT', '--sport', clientPort, ['!', '--dport', String(probe.port)]);
        // A node just restarted may not have synced yet; it still takes accepts
        // (only its output is cut), so give it a moment. Still sound: whatever it
        // syncs now, no one hears it vouch for.
        let point = await probe.walSynced(sid, 1000);
        for (let i = 0; i < 10 && !point; i++) {
          await sleep(100);
          point = await probe.walSynced(sid, 1000);
        }
        await c.kill(sid, 'SIGKILL');
        heal(tag, 2);
        let what: string;
        if (!point) {
          what = 'no sync since its start: killed only';
          power.notCut.push(`sid ${sid} ${what}`);
        } else {
          try {
            const r = cutWal(dataDirOf(c, sid), point);
            power.cut++;
            power.bytes += r.dropped;
            what = `cut ${point.segment}@${point.offset} (-${r.dropped}B)`;
          } catch (e) {
            if (!(e instanceof StaleCutError)) throw e;
            what = `killed only (${e.message})`;
            power.notCut.push(`sid ${sid} ${what}`);
          }
        }
        const hold = between(500, 2000);
        events.push(`${at()} power ${sid} ${what} ${hold}ms`);
        await sleep(hold);
        await c.restart(sid);
      } else if (kind === 'stop') {
        c.stop(sid);
        const hold = between(300, 1500);
        events.push(`${at()} stop ${sid} ${hold}ms`);
        await sleep(hold);
        c.cont(sid);
      } else if (kind === 'loss') {
        dropRule(tag, 'INPUT', '--dport', peerPort, [
          '-m',
          'statistic',
          '--mode',
          'random',
          '--probability',
          '0.2',
        ]);
        const hold = between(1000, 3000);
        events.push(`${at()} loss20% ${sid} ${hold}ms`);
        await sleep(hold);
        dropped.loss = (dropped.loss ?? 0) + packetsOf(tag);
        heal(tag, 1);
      } else {
        const mode = pick(['in', 'out', 'full'] as const);
        if (mode !== 'out') dropRule(tag, 'INPUT', '--dport', peerPort);
        if (mode !== 'in') dropRule(tag, 'OUTPUT', '--sport', peerPort);
        const hold = between(1000, 3000);
        events.push(`${at()} partition-${mode} ${sid} ${hold}ms`);
        counts[`partition-${mode}`] = (counts[`partition-${mode}`] ?? 0) + 1;
        await sleep(hold);
        dropped.partition = (dropped.partition ?? 0) + packetsOf(tag);
        heal(tag, mode === 'full' ? 2 : 1);
      }
    } catch (e) {
      errors.push(`${kind} ${sid}: ${(e as Error).message}`);
    } finally {
      faulty.delete(sid);
      activeKinds.delete(kind);
    }
  };

  let injected = 0;
  for (let i = 0; i < 1000 && injected < NEMESIS_MAX_FAULTS; i++) {
    if (Date.now() - t0 >= NEMESIS_MS) break;
    await sleep(between(200, 700));
    if (Date.now() - t0 >= NEMESIS_MS) break;
    if (faulty.size >= maxFaulty) continue;
    const free = kinds.filter((k) => !activeKinds.has(k));
    const healthy = c.sids.filter((s) => !faulty.has(s));
    if (free.length === 0 || healthy.length === 0) continue;
    // Every kind at least once (the asserts below rely on it), then at random.
    const unseen = free.filter((k) => !counts[k]);
    const kind = pick(unseen.length > 0 ? unseen : free);
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
  if (IPT.ok) removeRules();
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
  for (const k of kinds) t.ok((counts[k] ?? 0) > 0, `fault ${k} was injected (${counts[k] ?? 0}x)`);
  if (IPT.ok) {
    // A rule that matched nothing means the fault did not happen (wrong port,
    // wrong interface, rule order): the run would then test less than it says.
    t.comment(`packets dropped by the iptables rules: ${JSON.stringify(dropped)}`);
    t.ok((dropped.loss ?? 0) > 0, `the loss rules dropped packets (${dropped.loss ?? 0})`);
    t.ok(
      (dropped.partition ?? 0) > 0,
      `the partition rules dropped packets (${dropped.partition ?? 0})`,
    );
    t.comment(
      `power losses: ${power.cut} cut at the last synced offset, ${power.bytes} unsynced bytes dropped${
        power.notCut.length ? `; not cut: ${power.notCut.join('; ')}` : ''
      }`,
    );
    t.ok(power.cut > 0, `a power loss cut a WAL back to its last synced offset (${power.cut}x)`);
  }

  // ---- checks
  t.comment(
    `history: ${h.history.length} ops, ${h.acked} acked, ${h.unknown} unknown, ${h.failed} failed`,
  );
  t.comment(
    `unique puts: ${r.records.length}, ${r.acked.length} acked, ${r.unknown.length} unknown, ${r.failed.length} failed`,
  );
  // Faults may leave an outcome unknown (a timeout), never an error: every
  // request either runs once or not at all, and none is invalid, stale or from
  // an expired session here. An error answer means a bug (client or server).
  t.equal(h.failed, 0, 'no history operation got an error answer', { failures: h.failures });
  t.equal(r.failed.length, 0, 'no unique put got an error answer', {
    failed: r.failed.slice(0, 10).map((x) => `${x.key}: ${x.outcome} ${x.err}`),
  });
  t.ok(h.acked > 200, `the history is non-trivial (${h.acked} ops completed)`);
  const lin = checkLinearizable(h.history);
  t.comment(`checker: ${lin.checkedKeys} keys, ${lin.explored} states explored`);
  t.ok(lin.ok, lin.message);

  // Bounded: a cluster that never recovered would make every read-back wait for
  // its full client timeout (minutes in all).
  const writable = await c.waitWritable(20_000).catch((e: Error) => e);
  t.type(writable, 'number', 'the cluster takes writes again after the faults healed');
  if (typeof writable !== 'number') return;
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
