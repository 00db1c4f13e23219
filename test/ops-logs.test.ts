// Operating paxosd (issue 11): --log-format json gives one JSON object per line
// (ts, level, sid, msg) for log shippers, with the startup line (version, config,
// data directory, ports) and the shutdown line.
import t from 'tap';
import { BIN, Cluster, runBin } from './helpers/cluster';

t.test('--log-format json: every line parses; startup and shutdown are there', async (t) => {
  const c = await Cluster.start(t, {
    n: 3,
    name: 'paxos-ops-logs',
    nodeArgs: (sid) => (sid === 0 ? ['--log-format', 'json'] : []),
  });
  await c.waitWritable();
  await c.kill(0, 'SIGTERM');
  const lines = c
    .stderrOf(0, 1 << 20)
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('==='));
  t.ok(lines.length >= 3, `${lines.length} lines`);
  const docs = lines.map(
    (l) => JSON.parse(l) as { ts: string; level: string; sid: number; msg: string },
  );
  for (const d of docs) {
    t.match(d.ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    t.ok(['INFO', 'WARN', 'ERROR'].includes(d.level), d.level);
    t.equal(d.sid, 0);
  }
  t.ok(
    docs.some((d) =>
      /^paxosd \S+ started: config .*, data .*, peer 127\.0\.0\.1:\d+, client 127\.0\.0\.1:\d+/.test(
        d.msg,
      ),
    ),
    'a startup line with version, config, data directory and ports',
  );
  t.ok(
    docs.some((d) => /SIGTERM: stopping/.test(d.msg)),
    'the stop',
  );
  t.ok(
    docs.some((d) => /: stopped$/.test(d.msg)),
    'the exit',
  );
  // The text format (other nodes) keeps its shape.
  t.match(c.stderrOf(1), /^\d{4}-\d\d-\d\dT[\d:.]+Z INFO sid=1 paxosd \S+ started: /m);

  const bad = await runBin(BIN.paxosd, ['--log-format', 'xml']);
  t.equal(bad.code, 2, '--log-format xml: exit 2');
  t.match(bad.stderr, /--log-format must be text or json/);
});
