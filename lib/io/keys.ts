import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fsyncDirectory, nodeFs, writeAll, type Fsys } from './fsys';
import { ConfigError } from './config';
import { Keyring } from '../wire/envelope';

/**
 * Key files hold one or two hex-encoded 32-byte keys, one per line. The first
 * key signs; any of them verifies, which is how a key is rotated without
 * downtime. Keys are read from files only (never argv) and never logged.
 */
export function loadKeyring(file: string, configFile: string, field: string): Keyring {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(
      configFile,
      field,
      `cannot read key file ${file}: ${(e as Error).message}`,
    );
  }
  const keys = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !l.startsWith('#'));
  if (keys.length < 1 || keys.length > 2)
    throw new ConfigError(configFile, field, `key file ${file} must hold one or two keys`);
  return new Keyring(
    keys.map((k, i) => {
      if (!/^[0-9a-f]{64}$/i.test(k))
        throw new ConfigError(configFile, field, `key ${i + 1} in ${file} is not 64 hex digits`);
      return Buffer.from(k, 'hex');
    }),
  );
}

/**
 * Create `file` (mode 0600; EEXIST if it exists: a key is never overwritten)
 * holding one fresh key, durably: the data and the directory entry are synced
 * before it returns, so a power loss cannot take back a key that nodes were
 * started with (they would no longer understand each other).
 */
export function writeKeyFile(file: string, fsys: Fsys = nodeFs): void {
  const fd = fsys.openSync(file, 'wx', 0o600);
  let ok = false;
  try {
    writeAll(fsys, fd, Buffer.from(randomBytes(32).toString('hex') + '\n'), 0);
    fsys.fsyncSync(fd);
    ok = true;
  } finally {
    fsys.closeSync(fd);
    // A half-written key must not block the next attempt with EEXIST.
    if (!ok) fsys.unlinkSync(file);
  }
  fsyncDirectory(fsys, path.dirname(path.resolve(file)));
}
