// paxos-client --value-file F (issue 11): values are any bytes, from a file or
// stdin (-); get prints them back byte for byte, --json shows bytes that are not
// UTF-8 text as base64. A one-node cluster: only the client's handling is tested.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { BIN, Cluster, ROOT } from './helpers/cluster';

interface Run {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** paxos-client with `input` on stdin; stdout as bytes. */
function client(args: string[], input: Buffer = Buffer.alloc(0)): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN.client, ...args], { cwd: ROOT });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr });
    });
  });
}

t.test('--value-file: binary-safe values', async (t) => {
  const c = await Cluster.start(t, { n: 1, name: 'paxos-ops-values' });
  await c.waitWritable();
  const cli = (args: string[], input?: Buffer): Promise<Run> =>
    client(['--config', c.clientConfigFile, ...args], input);
  const show = (r: Run): Record<string, unknown> => ({ code: r.code, stderr: r.stderr });

  // Every byte value, in random order, and more random bytes: never valid UTF-8 as a whole.
  const bytes = Buffer.concat([
    Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
    randomBytes(20_000),
  ]);
  const file = path.join(c.dir, 'value.bin');
  fs.writeFileSync(file, bytes);

  const put = await cli(['put', 'bin', '--value-file', file]);
  t.equal(put.code, 0, 'put --value-file: exit 0', show(put));
  const get = await cli(['get', 'bin']);
  t.equal(get.code, 0, 'get: exit 0', show(get));
  t.ok(
    get.stdout.equals(Buffer.concat([bytes, Buffer.from('\n')])),
    `get prints the ${bytes.length} bytes back, byte-identical (then a newline)`,
  );
  const json = await cli(['--json', 'get', 'bin']);
  const parsed = JSON.parse(json.stdout.toString()) as { value: { base64: string } };
  t.ok(Buffer.from(parsed.value.base64, 'base64').equals(bytes), '--json: {base64}');

  const fromStdin = randomBytes(3000);
  const cas = await cli(['cas', 'bin', '--absent', '--value-file', '-'], fromStdin);
  t.equal(cas.code, 1, 'cas --absent on a set key: mismatch, exit 1', show(cas));
  const del = await cli(['del', 'bin']);
  t.equal(del.code, 0, 'del', show(del));
  const cas2 = await cli(['cas', '--absent', 'bin', '--value-file', '-'], fromStdin);
  t.equal(cas2.code, 0, 'cas --absent --value-file - (stdin): exit 0', show(cas2));
  const back = await cli(['get', 'bin']);
  t.ok(back.stdout.subarray(0, -1).equals(fromStdin), 'the stdin bytes read back identical');

  // UTF-8 text from a file is stored as that text (the plain get of a put sees it).
  const text = 'naïve ☃ line one\nline two\n';
  fs.writeFileSync(file, text);
  const putText = await cli(['put', 'txt', '--value-file', file]);
  t.equal(putText.code, 0, 'put a text file', show(putText));
  const textJson = await cli(['--json', 'get', 'txt']);
  t.equal((JSON.parse(textJson.stdout.toString()) as { value: string }).value, text, 'as text');

  const missing = await cli(['put', 'k', '--value-file', path.join(c.dir, 'nope')]);
  t.equal(missing.code, 2, 'a missing file: exit 2', show(missing));
  t.match(missing.stderr, /--value-file .*nope: ENOENT/);
  const extra = await cli(['put', 'k', 'v', '--value-file', file]);
  t.equal(extra.code, 2, 'a value and --value-file: exit 2', show(extra));
  t.match(extra.stderr, /put takes KEY VALUE/);
});
