import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
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

export function writeKeyFile(file: string): void {
  fs.writeFileSync(file, randomBytes(32).toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
}
