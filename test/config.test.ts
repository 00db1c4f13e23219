import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  ConfigError,
  DEFAULT_LIMITS,
  DEFAULT_STORAGE,
  DEFAULT_TIMING,
  NodeConfig,
  clientConfigFromNode,
  loadClientConfig,
  loadNodeConfig,
  parseClientConfig,
  parseNodeConfig,
  resolveSid,
} from '../lib/io/config';
import { bootstrapMembers } from '../lib/daemon';

// Compiled to dist/test/config.test.js; conf/ lives at the repo root.
const CONF = path.resolve(__dirname, '..', '..', 'conf');
const F = 'test.json';

type Json = Record<string, unknown>;
type Tap = tap.Test;

function srv(sid: number, peerPort = 7000 + sid, clientPort = 7100 + sid, host = '127.0.0.1') {
  return { sid, host, peerPort, clientPort };
}

function base(): Json {
  return { clusterId: 'c', servers: [srv(0), srv(1), srv(2)] };
}

function expectErr(
  tt: Tap,
  fn: () => unknown,
  field: string,
  problem: RegExp,
  file = F,
): ConfigError | undefined {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof ConfigError)) {
      tt.fail(`expected ConfigError, got ${String(e)}`);
      return undefined;
    }
    tt.equal(e.file, file, 'file');
    tt.equal(e.field, field, 'field');
    tt.match(e.problem, problem, 'problem');
    tt.equal(e.message, `${file}: ${field}: ${e.problem}`, 'message format');
    tt.ok(e.message.includes(file) && e.message.includes(field), 'message names file and field');
    return e;
  }
  tt.fail(`expected ConfigError for ${field}`);
  return undefined;
}

function nodeErr(tt: Tap, raw: unknown, field: string, problem: RegExp) {
  return expectErr(tt, () => parseNodeConfig(F, raw), field, problem);
}

function clientErr(tt: Tap, raw: unknown, field: string, problem: RegExp) {
  return expectErr(tt, () => parseClientConfig(F, raw), field, problem);
}

t.test('shipped configs load', async (tt) => {
  const n3 = loadNodeConfig(path.join(CONF, 'paxos.config.json'));
  tt.equal(n3.clusterId, 'local');
  tt.same(
    n3.servers.map((s) => [s.sid, s.peerPort, s.clientPort]),
    [
      [0, 7000, 7100],
      [1, 7001, 7101],
      [2, 7002, 7102],
    ],
  );
  tt.same(n3.timing, DEFAULT_TIMING);
  tt.same(n3.limits, DEFAULT_LIMITS);
  tt.same(n3.storage, DEFAULT_STORAGE);
  tt.equal(n3.dataDir, path.resolve('data'));
  tt.equal(n3.logDir, path.resolve('logs'));
  tt.equal(n3.sid, undefined);

  const n5 = loadNodeConfig(path.join(CONF, 'paxos5.config.json'));
  tt.equal(n5.servers.length, 5);
  tt.same(
    n5.servers.map((s) => [s.peerPort, s.clientPort]),
    [0, 1, 2, 3, 4].map((i) => [7010 + i, 7110 + i]),
  );

  const c3 = loadClientConfig(path.join(CONF, 'client.config.json'));
  tt.equal(c3.leader, 0);
  tt.equal(c3.timeoutMs, 5000);
  tt.equal(c3.retryMs, 20);
  tt.same(c3.servers, clientConfigFromNode(n3).servers);

  const c5 = loadClientConfig(path.join(CONF, 'client5.config.json'));
  tt.same(c5.servers, clientConfigFromNode(n5).servers);
});

t.test('defaults filled field by field', async (tt) => {
  const c = parseNodeConfig(F, base());
  tt.same(c.timing, DEFAULT_TIMING);
  tt.same(c.limits, DEFAULT_LIMITS);
  tt.same(c.storage, DEFAULT_STORAGE);
  tt.equal(c.dataDir, path.resolve(process.cwd(), 'data'));
  tt.equal(c.logDir, path.resolve(process.cwd(), 'logs'));
  tt.equal(c.keyFile, undefined);
  tt.equal(c.clientKeyFile, undefined);

  const p = parseNodeConfig(F, {
    ...base(),
    timing: { electionTicks: 50 },
    limits: { windowSlots: 8, batchBytesMax: 40000 },
    storage: { sync: false },
    dataDir: '/var/lib/paxos',
  });
  tt.same(p.timing, { ...DEFAULT_TIMING, electionTicks: 50 });
  tt.same(p.limits, { ...DEFAULT_LIMITS, windowSlots: 8, batchBytesMax: 40000 });
  tt.same(p.storage, { ...DEFAULT_STORAGE, sync: false });
  tt.equal(p.dataDir, '/var/lib/paxos');
  tt.equal(p.logDir, path.resolve('logs'));

  // Returned objects are fresh copies, not the shared defaults.
  p.timing.tickMs = 99;
  tt.equal(DEFAULT_TIMING.tickMs, 10);
  const q = parseNodeConfig(F, base());
  q.limits.windowSlots = 1;
  tt.equal(DEFAULT_LIMITS.windowSlots, 32);

  const cl = parseClientConfig(F, { servers: [{ sid: 3, host: 'h', clientPort: 1 }] });
  tt.equal(cl.timeoutMs, 5000);
  tt.equal(cl.retryMs, 20);
  tt.equal(cl.leader, undefined);
  tt.equal(cl.file, F);
});

t.test('keyFile paths resolve against the config directory', async (tt) => {
  const c = parseNodeConfig('/etc/paxos/node.json', {
    ...base(),
    keyFile: 'peer.key',
    clientKeyFile: '/abs/client.key',
  });
  tt.equal(c.keyFile, '/etc/paxos/peer.key');
  tt.equal(c.clientKeyFile, '/abs/client.key');
  nodeErr(tt, { ...base(), keyFile: 5 }, 'keyFile', /expected a string/);
  nodeErr(tt, { ...base(), clientKeyFile: true }, 'clientKeyFile', /expected a string/);
});

t.test('missing required fields', async (tt) => {
  nodeErr(tt, { servers: [srv(0)] }, 'clusterId', /missing required field/);
  nodeErr(tt, { clusterId: 'c' }, 'servers', /missing required field/);
  for (const k of ['sid', 'host', 'peerPort', 'clientPort']) {
    const s: Json = srv(1);
    delete s[k];
    nodeErr(tt, { clusterId: 'c', servers: [srv(0), s] }, `servers[1].${k}`, /missing required/);
  }
  clientErr(tt, {}, 'servers', /missing required field/);
  clientErr(tt, { servers: [{ sid: 0, host: 'h' }] }, 'servers[0].clientPort', /missing/);
});

t.test('wrong types', async (tt) => {
  nodeErr(tt, null, '(root)', /expected an object, got null/);
  nodeErr(tt, [], '(root)', /expected an object, got array/);
  nodeErr(tt, { ...base(), clusterId: 1 }, 'clusterId', /expected a string/);
  nodeErr(tt, { ...base(), servers: {} }, 'servers', /expected an array/);
  nodeErr(tt, { ...base(), servers: [srv(0), 'x'] }, 'servers[1]', /expected an object/);
  nodeErr(
    tt,
    { ...base(), servers: [srv(0), { ...srv(1), peerPort: '7001' }] },
    'servers[1].peerPort',
    /expected an integer, got string "7001"/,
  );
  nodeErr(tt, { ...base(), servers: [{ ...srv(0), host: 7 }] }, 'servers[0].host', /string/);
  nodeErr(tt, { ...base(), timing: 5 }, 'timing', /expected an object/);
  nodeErr(tt, { ...base(), timing: { tickMs: null } }, 'timing.tickMs', /got null/);
  nodeErr(tt, { ...base(), limits: [] }, 'limits', /expected an object/);
  nodeErr(tt, { ...base(), storage: { sync: 'yes' } }, 'storage.sync', /expected a boolean/);
  nodeErr(tt, { ...base(), dataDir: 1 }, 'dataDir', /expected a string/);
  nodeErr(tt, { ...base(), logDir: '' }, 'logDir', /must not be empty/);
  nodeErr(tt, { ...base(), sid: '1' }, 'sid', /expected an integer/);
  clientErr(tt, { servers: [], leader: 0 }, 'servers', /at least 1 server/);
  clientErr(
    tt,
    { servers: [{ sid: 0, host: 'h', clientPort: 1 }], timeoutMs: '5' },
    'timeoutMs',
    /expected an integer/,
  );
});

t.test('non-integers', async (tt) => {
  nodeErr(tt, { ...base(), servers: [{ ...srv(0), sid: 0.5 }] }, 'servers[0].sid', /integer/);
  nodeErr(tt, { ...base(), timing: { tickMs: 1.5 } }, 'timing.tickMs', /must be an integer/);
  nodeErr(tt, { ...base(), limits: { pendingMax: 1e3 + 0.1 } }, 'limits.pendingMax', /integer/);
  nodeErr(tt, { ...base(), timing: { tickMs: NaN } }, 'timing.tickMs', /must be an integer/);
  nodeErr(
    tt,
    { ...base(), storage: { snapshotEverySlots: Infinity } },
    'storage.snapshotEverySlots',
    /must be an integer/,
  );
  clientErr(
    tt,
    { servers: [{ sid: 0, host: 'h', clientPort: 1 }], retryMs: 2.5 },
    'retryMs',
    /integer/,
  );
});

t.test('out of range', async (tt) => {
  nodeErr(tt, { ...base(), servers: [{ ...srv(0), sid: 256 }] }, 'servers[0].sid', /out of range/);
  nodeErr(tt, { ...base(), servers: [{ ...srv(0), sid: -1 }] }, 'servers[0].sid', /out of range/);
  nodeErr(tt, { ...base(), servers: [srv(0, 0)] }, 'servers[0].peerPort', /between 1 and 65535/);
  nodeErr(tt, { ...base(), servers: [srv(0, 1, 65536)] }, 'servers[0].clientPort', /out of range/);
  nodeErr(tt, { ...base(), timing: { tickMs: 0 } }, 'timing.tickMs', /out of range/);
  nodeErr(tt, { ...base(), limits: { windowSlots: 0 } }, 'limits.windowSlots', /1 and 1024/);
  nodeErr(tt, { ...base(), limits: { windowSlots: 1025 } }, 'limits.windowSlots', /1 and 1024/);
  nodeErr(tt, { ...base(), limits: { batchBytesMax: 1023 } }, 'limits.batchBytesMax', /1024/);
  nodeErr(tt, { ...base(), limits: { batchBytesMax: 60001 } }, 'limits.batchBytesMax', /60000/);
  nodeErr(tt, { ...base(), limits: { valueBytesMax: 16383 } }, 'limits.valueBytesMax', /16384/);
  nodeErr(
    tt,
    { ...base(), limits: { batchBytesMax: 40000, valueBytesMax: 38976 } },
    'limits.valueBytesMax',
    /less than batchBytesMax - 1024 \(38976\)/,
  );
  // Boundary values accepted.
  const ok = parseNodeConfig(F, {
    ...base(),
    limits: { windowSlots: 1024, batchBytesMax: 40000, valueBytesMax: 38975 },
  });
  tt.equal(ok.limits.valueBytesMax, 38975);
  tt.equal(parseNodeConfig(F, { ...base(), limits: { windowSlots: 1 } }).limits.windowSlots, 1);
  nodeErr(
    tt,
    { ...base(), timing: { heartbeatTicks: 10, electionTicks: 20 } },
    'timing.electionTicks',
    /must exceed 2 \* heartbeatTicks \(20\), got 20/,
  );
  tt.equal(
    parseNodeConfig(F, { ...base(), timing: { heartbeatTicks: 10, electionTicks: 21 } }).timing
      .electionTicks,
    21,
  );
  nodeErr(tt, { ...base(), timing: { heartbeatTicks: 20 } }, 'timing.electionTicks', /exceed/);
  nodeErr(
    tt,
    { ...base(), timing: { retransmitTicks: 50 } },
    'timing.retransmitMaxTicks',
    /at least retransmitTicks/,
  );
  nodeErr(
    tt,
    { ...base(), timing: { electionTicks: 30, retransmitMaxTicks: 61 } },
    'timing.retransmitMaxTicks',
    /at most 2 \* electionTicks \(60\), got 61/,
  );
  nodeErr(tt, { ...base(), clusterId: 'a b' }, 'clusterId', /A-Za-z0-9/);
  nodeErr(tt, { ...base(), clusterId: '' }, 'clusterId', /must not be empty/);
  clientErr(
    tt,
    { servers: [{ sid: 0, host: 'h', clientPort: 1 }], timeoutMs: 100, retryMs: 101 },
    'retryMs',
    /between 1 and 100/,
  );
});

t.test('unknown fields are rejected', async (tt) => {
  nodeErr(tt, { ...base(), timnig: {} }, 'timnig', /unknown top-level field/);
  nodeErr(tt, { ...base(), timing: { electionTick: 50 } }, 'timing.electionTick', /unknown/);
  nodeErr(tt, { ...base(), limits: { windowSlot: 8 } }, 'limits.windowSlot', /unknown/);
  nodeErr(tt, { ...base(), storage: { fsync: true } }, 'storage.fsync', /unknown/);
  nodeErr(
    tt,
    { ...base(), servers: [{ ...srv(0), port: 1 }] },
    'servers[0].port',
    /unknown server field/,
  );
  clientErr(
    tt,
    { servers: [{ sid: 0, host: 'h', clientPort: 1 }], timeout: 5 },
    'timeout',
    /unknown top-level field/,
  );
  // __proto__ from JSON.parse is an own property: rejected, and never touches the prototype.
  const evil = JSON.parse(
    '{"clusterId":"c","servers":[{"sid":0,"host":"h","peerPort":1,"clientPort":2}],' +
      '"__proto__":{"sid":0}}',
  ) as unknown;
  nodeErr(tt, evil, '__proto__', /unknown top-level field/);
  const evil2 = JSON.parse(
    '{"clusterId":"c","servers":[{"sid":0,"host":"h","peerPort":1,"clientPort":2}],' +
      '"timing":{"__proto__":{"tickMs":"x"}}}',
  ) as unknown;
  nodeErr(tt, evil2, 'timing.__proto__', /unknown timing field/);
  // Inherited properties are ignored: an object whose prototype carries fields is not read.
  const proto = { clusterId: 'c', servers: [srv(0)] };
  nodeErr(tt, Object.create(proto), 'clusterId', /missing required field/);
  tt.equal(({} as Json).sid, undefined, 'Object.prototype not polluted');
});

t.test('server list size', async (tt) => {
  nodeErr(tt, { ...base(), servers: [] }, 'servers', /at least 1 server/);
  const many = Array.from({ length: 256 }, (_, i) => srv(i, 10000 + i, 20000 + i));
  nodeErr(tt, { ...base(), servers: many }, 'servers', /at most 255.*got 256/);
  const c = parseNodeConfig(F, { ...base(), servers: many.slice(0, 255) });
  tt.equal(c.servers.length, 255);
  tt.equal(parseNodeConfig(F, { ...base(), servers: [srv(7)] }).servers.length, 1);
  const cmany = many.map((s) => ({ sid: s.sid, host: s.host, clientPort: s.clientPort }));
  clientErr(tt, { servers: cmany }, 'servers', /at most 255/);
});

t.test('duplicates', async (tt) => {
  nodeErr(
    tt,
    { ...base(), servers: [srv(0), srv(1), srv(1, 7005, 7105)] },
    'servers[2].sid',
    /duplicate sid 1 \(also servers\[1\]\.sid\)/,
  );
  // same port used twice by different servers (peer vs client)
  nodeErr(
    tt,
    { ...base(), servers: [srv(0), srv(1, 7100, 7101)] },
    'servers[1].peerPort',
    /duplicate address 127\.0\.0\.1:7100 \(also used by servers\[0\]\.clientPort\)/,
  );
  // peer and client port equal on one server
  nodeErr(
    tt,
    { ...base(), servers: [srv(0, 7000, 7000)] },
    'servers[0].clientPort',
    /duplicate address/,
  );
  // host comparison is case-insensitive
  nodeErr(
    tt,
    { ...base(), servers: [srv(0, 7000, 7100, 'Node-A'), srv(1, 7000, 7101, 'node-a')] },
    'servers[1].peerPort',
    /duplicate address/,
  );
  // same ports on different hosts is fine
  const c = parseNodeConfig(F, {
    ...base(),
    servers: [srv(0, 7000, 7100, 'a'), srv(1, 7000, 7100, 'b')],
  });
  tt.equal(c.servers.length, 2);

  clientErr(
    tt,
    {
      servers: [
        { sid: 0, host: 'h', clientPort: 1 },
        { sid: 0, host: 'h', clientPort: 2 },
      ],
    },
    'servers[1].sid',
    /duplicate sid 0/,
  );
  clientErr(
    tt,
    {
      servers: [
        { sid: 0, host: 'h', clientPort: 1 },
        { sid: 1, host: 'h', clientPort: 1 },
      ],
    },
    'servers[1].clientPort',
    /duplicate address h:1/,
  );
});

t.test('own sid', async (tt) => {
  tt.equal(parseNodeConfig(F, { ...base(), sid: 2 }).sid, 2);
  nodeErr(tt, { ...base(), sid: 3 }, 'sid', /unknown own sid 3.*known: 0, 1, 2/);
  clientErr(
    tt,
    { servers: [{ sid: 0, host: 'h', clientPort: 1 }], leader: 4 },
    'leader',
    /unknown sid 4/,
  );
});

t.test('resolveSid precedence', async (tt) => {
  const withSid = parseNodeConfig(F, { ...base(), sid: 0 });
  const noSid = parseNodeConfig(F, base());
  tt.equal(resolveSid(withSid, 2, { PAXOS_SID: '1' }), 2, '--sid wins over env and file');
  tt.equal(resolveSid(withSid, '2', { PAXOS_SID: '1' }), 2, 'string --sid');
  tt.equal(resolveSid(withSid, undefined, { PAXOS_SID: '1' }), 1, 'env wins over file');
  tt.equal(resolveSid(withSid, undefined, {}), 0, 'file as last resort');
  tt.equal(resolveSid(withSid, undefined, { PAXOS_SID: '' }), 0, 'empty env is unset');
  tt.equal(resolveSid(noSid, undefined, { PAXOS_SID: ' 2 ' }), 2);

  expectErr(tt, () => resolveSid(noSid, undefined, {}), 'sid', /own sid not given/);
  expectErr(tt, () => resolveSid(withSid, 9, {}), 'sid', /--sid: unknown own sid 9/);
  expectErr(tt, () => resolveSid(withSid, undefined, { PAXOS_SID: '9' }), 'sid', /PAXOS_SID.*9/);
  expectErr(tt, () => resolveSid(withSid, undefined, { PAXOS_SID: 'x' }), 'sid', /not a sid/);
  expectErr(tt, () => resolveSid(withSid, 1.5, {}), 'sid', /integer between 0 and 255/);
  expectErr(tt, () => resolveSid(withSid, 300, {}), 'sid', /integer between 0 and 255/);
  expectErr(tt, () => resolveSid(withSid, true, {}), 'sid', /missing value/);
  expectErr(tt, () => resolveSid(withSid, [1, 2], {}), 'sid', /more than once/);
  // --sid is checked even if env/file would be valid
  expectErr(tt, () => resolveSid(withSid, 7, { PAXOS_SID: '1' }), 'sid', /--sid/);
});

t.test('clientConfigFromNode', async (tt) => {
  const n = parseNodeConfig(F, {
    ...base(),
    servers: [srv(2), srv(0), { ...srv(1), host: 'b' }],
  });
  const c = clientConfigFromNode(n);
  tt.same(c, {
    file: F,
    clusterId: n.clusterId,
    clientKeyFile: undefined,
    servers: [
      { sid: 0, host: '127.0.0.1', clientPort: 7100 },
      { sid: 1, host: 'b', clientPort: 7101 },
      { sid: 2, host: '127.0.0.1', clientPort: 7102 },
    ],
    timeoutMs: 5000,
    retryMs: 20,
  });
  tt.equal(n.servers[0]?.sid, 2, 'node config order untouched');
  // Round-trips through the client parser.
  tt.same(parseClientConfig(F, { servers: c.servers }).servers, c.servers);
});

t.test('load errors', async (tt) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'paxos-config-'));
  tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const bad = path.join(dir, 'bad.json');
  fs.writeFileSync(bad, '{ "clusterId": "c", ');
  expectErr(tt, () => loadNodeConfig(bad), '(file)', /invalid JSON/, bad);
  expectErr(tt, () => loadClientConfig(bad), '(file)', /invalid JSON/, bad);
  const missing = path.join(dir, 'nope.json');
  expectErr(tt, () => loadNodeConfig(missing), '(file)', /cannot read: ENOENT/, missing);

  const good = path.join(dir, 'node.json');
  fs.writeFileSync(good, '\ufeff' + JSON.stringify({ ...base(), keyFile: 'k' }));
  const c = loadNodeConfig(good);
  tt.equal(c.file, good);
  tt.equal(c.keyFile, path.join(dir, 'k'));

  const typo = path.join(dir, 'typo.json');
  fs.writeFileSync(typo, JSON.stringify({ ...base(), dataDri: 'x' }));
  expectErr(tt, () => loadNodeConfig(typo), 'dataDri', /unknown top-level/, typo);
});

t.test('spare servers (not in the bootstrap configuration)', async (tt) => {
  const c = parseNodeConfig(F, {
    ...base(),
    servers: [srv(0), srv(1), { ...srv(2), spare: true }, { ...srv(3), spare: false }],
  });
  tt.same(
    c.servers.map((s) => [s.sid, s.spare === true]),
    [
      [0, false],
      [1, false],
      [2, true],
      [3, false],
    ],
    'spare: true marks a spare; false or absent a bootstrap voter',
  );
  tt.same(
    bootstrapMembers(c),
    [0, 1, 3].map((sid) => ({ sid, voter: true })),
    'the bootstrap configuration: the non-spare servers, as voters',
  );
  tt.same(
    bootstrapMembers(parseNodeConfig(F, base())),
    [0, 1, 2].map((sid) => ({ sid, voter: true })),
    'without spares: every server',
  );
  // A spare may be named as the file's own sid (it is started like any node).
  tt.equal(
    parseNodeConfig(F, { ...base(), sid: 2, servers: [srv(0), { ...srv(2), spare: true }] }).sid,
    2,
  );
  nodeErr(
    tt,
    { ...base(), servers: [{ ...srv(0), spare: 'yes' }] },
    'servers[0].spare',
    /expected a boolean/,
  );
  nodeErr(
    tt,
    { ...base(), servers: [{ ...srv(0), spare: 1 }] },
    'servers[0].spare',
    /expected a boolean/,
  );
  nodeErr(
    tt,
    {
      ...base(),
      servers: [
        { ...srv(0), spare: true },
        { ...srv(1), spare: true },
      ],
    },
    'servers',
    /every server is a spare: the bootstrap configuration needs a voter/,
  );
  // Clients need no spare marks: the client config stays addresses only.
  const cc = clientConfigFromNode(c);
  tt.same(
    cc.servers.map((s) => Object.keys(s)),
    [0, 1, 2, 3].map(() => ['sid', 'host', 'clientPort']),
  );
  clientErr(
    tt,
    { servers: [{ sid: 0, host: 'h', clientPort: 1, spare: true }] },
    'servers[0].spare',
    /unknown/,
  );
});
