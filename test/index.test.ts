// The package entry point: a TypeScript user starts a node in-process and talks
// to it with the client class, using only what lib/index.ts exports.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { clientConfigFromNode, parseNodeConfig, PaxosClient, PaxosNode } from '../lib/index';
import { freeUdpPorts } from './helpers/cluster';

t.test('start a one-node cluster in-process and use the client library', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'paxos-index-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const [peerPort, clientPort] = await freeUdpPorts(2);
  const config = parseNodeConfig('inline', {
    clusterId: 'lib',
    servers: [{ sid: 0, host: '127.0.0.1', peerPort, clientPort }],
    dataDir: path.join(dir, 'data'),
    logDir: path.join(dir, 'logs'),
  });
  const node = await PaxosNode.start({ config, sid: 0, init: true, log: () => undefined });
  t.teardown(() => node.stop());
  const client = PaxosClient.fromConfig(clientConfigFromNode(config), { timeoutMs: 5000 });
  t.teardown(() => client.close());
  t.match(await client.put('greeting', 'hello'), { ok: true });
  t.match(await client.get('greeting'), { ok: true, value: 'hello' });
  t.match(await client.cas('greeting', 'nope', 'x'), { ok: false, value: 'hello' });
  t.match(await client.del('greeting'), { ok: true });
  t.match(await client.get('greeting'), { ok: true, value: null });
  t.equal(node.status().role, 'leader');
  const moved = await client.transferLeader(0);
  t.match(moved, { ok: true, code: 'ok', leader: 0 }, 'transfer-leader to the leader: ok');
});
