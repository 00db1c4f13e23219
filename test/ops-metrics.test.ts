// Operating paxosd (issue 11): `paxosd --metrics HOST:PORT` serves Prometheus
// text; a scrape parses (strictly, by the exposition format's rules) and the
// commit counter grows under load.
import * as http from 'node:http';
import * as net from 'node:net';
import t from 'tap';
import { Cluster, startLoad } from './helpers/cluster';

/** Free TCP ports on 127.0.0.1 (the metrics endpoint is HTTP). */
async function freeTcpPorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<net.Server>((resolve) => {
          const s = net.createServer();
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

function scrape(
  port: number,
  path = '/metrics',
): Promise<{ code: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () =>
        resolve({ code: res.statusCode ?? 0, type: String(res.headers['content-type']), body }),
      );
    });
    req.on('timeout', () => req.destroy(new Error('scrape timed out')));
    req.on('error', reject);
  });
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * The text format 0.0.4, strictly: HELP/TYPE comments, then samples
 * `name{label="v",...} value`; every sample belongs to a declared family
 * (histograms: _bucket/_sum/_count), buckets are cumulative and end in +Inf
 * equal to _count. Throws on anything else.
 */
function parseProm(text: string): Sample[] {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  for (const line of text.slice(0, -1).split('\n')) {
    let m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (m) {
      if (m[1] === 'TYPE') {
        if (!['counter', 'gauge', 'histogram'].includes(m[3])) throw new Error(`bad type: ${line}`);
        if (types.has(m[2])) throw new Error(`family declared twice: ${m[2]}`);
        types.set(m[2], m[3]);
      }
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\} (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const part of m[2].split(',')) {
      const l = /^([a-zA-Z_][a-zA-Z0-9_]*)="([^"\\]*)"$/.exec(part);
      if (!l) throw new Error(`bad label ${part} in ${line}`);
      labels[l[1]] = l[2];
    }
    const value = m[3] === '+Inf' ? Infinity : Number(m[3]);
    if (Number.isNaN(value)) throw new Error(`bad value in ${line}`);
    const family = types.has(m[1]) ? m[1] : m[1].replace(/_(bucket|sum|count)$/, '');
    const type = types.get(family);
    if (!type) throw new Error(`sample before its TYPE: ${line}`);
    if (type === 'counter' && value < 0) throw new Error(`negative counter: ${line}`);
    samples.push({ name: m[1], labels, value });
  }
  for (const [family, type] of types) {
    if (type !== 'histogram') continue;
    const buckets = samples.filter((s) => s.name === `${family}_bucket`);
    const count = samples.find((s) => s.name === `${family}_count`);
    if (!count || buckets.length === 0) throw new Error(`histogram ${family} incomplete`);
    for (let i = 1; i < buckets.length; i++)
      if (buckets[i].value < buckets[i - 1].value)
        throw new Error(`${family}: buckets not cumulative`);
    const last = buckets[buckets.length - 1];
    if (last.labels.le !== '+Inf' || last.value !== count.value)
      throw new Error(`${family}: +Inf bucket ${last.value} != count ${count.value}`);
  }
  return samples;
}

const get = (s: Sample[], name: string, labels: Record<string, string> = {}): number => {
  const hit = s.filter(
    (x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v),
  );
  if (hit.length === 0) throw new Error(`no sample ${name} ${JSON.stringify(labels)}`);
  return hit.reduce((a, x) => a + x.value, 0);
};

t.test('the parser refuses what is not the exposition format', async (t) => {
  t.throws(() => parseProm('x{sid="0"} 1\n'), /before its TYPE/);
  t.throws(() => parseProm('# TYPE x counter\nx{sid="0"} -1\n'), /negative counter/);
  t.throws(() => parseProm('# TYPE x counter\nx 1\n'), /not a sample/);
  t.throws(
    () =>
      parseProm(
        '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum{a="b"} 0\nh_count{a="b"} 1\n',
      ),
    /cumulative/,
  );
});

t.test('--metrics: a scrape parses and the commit counter grows under load', async (t) => {
  const ports = await freeTcpPorts(3);
  const c = await Cluster.start(t, {
    n: 3,
    name: 'metrics',
    nodeArgs: (sid) => ['--metrics', `127.0.0.1:${ports[sid]}`],
  });
  const leader = await c.waitLeader();
  const before = await Promise.all(ports.map((p) => scrape(p)));
  for (const r of before) {
    t.equal(r.code, 200);
    t.match(r.type, /^text\/plain; version=0\.0\.4/);
  }
  const s0 = before.map((r) => parseProm(r.body));
  t.equal(
    s0.reduce((a, s) => a + get(s, 'paxosd_is_leader'), 0),
    1,
    'exactly one node reports it leads',
  );
  t.equal(get(s0[leader], 'paxosd_is_leader'), 1, 'the leader says so');

  const load = startLoad(c.client(), { sessions: 8, totalOps: 400, durationMs: 20_000 });
  const res = await load.done;
  t.equal(res.failed.length, 0, 'no failed operation');
  t.ok(res.acked.length >= 300, `load acknowledged (${res.acked.length})`);
  await c.waitSameApplied([0, 1, 2], 5000, 1);

  const s1 = (await Promise.all(ports.map((p) => scrape(p)))).map((r) => parseProm(r.body));
  for (let sid = 0; sid < 3; sid++) {
    const grew = get(s1[sid], 'paxosd_commits_total') - get(s0[sid], 'paxosd_commits_total');
    t.ok(grew > 0, `sid ${sid}: commits_total grew by ${grew}`);
    t.ok(get(s1[sid], 'paxosd_applied_slot') > get(s0[sid], 'paxosd_applied_slot'));
    t.ok(get(s1[sid], 'paxosd_syncs_total') > 0, `sid ${sid}: syncs counted`);
  }
  const okReplies = get(s1[leader], 'paxosd_client_replies_total', { outcome: 'ok' });
  t.ok(okReplies >= res.acked.length, `leader counted ${okReplies} ok replies`);
  const timed = get(s1[leader], 'paxosd_request_seconds_count');
  t.ok(timed >= res.acked.length, `leader timed ${timed} requests`);
  t.ok(get(s1[leader], 'paxosd_request_seconds_sum') > 0, 'latencies add up to more than 0 s');
  t.ok(get(s1[leader], 'paxosd_group_commit_records_count') > 0, 'group commits counted');

  const notFound = await scrape(ports[0], '/');
  t.equal(notFound.code, 404, 'only /metrics is served');
});
