/**
 * paxosd as a library: the client (PaxosClient, Session) and a node that runs
 * in-process (PaxosNode.start), with the config loaders they take.
 *
 *   import { PaxosClient, loadClientConfig } from 'paxosd';
 *   const client = PaxosClient.fromConfig(loadClientConfig('conf/client.config.json'));
 *   await client.put('k', 'v');
 */
export { describeHeard, PaxosClient, PaxosClientError, Session, SnapshotSaveError } from './client';
export type {
  ClientOptions,
  OpResult,
  OutcomeReport,
  ServerHeard,
  SnapshotSaveOptions,
  SnapshotSaveResult,
  TransferReport,
} from './client';
export {
  BackupError,
  encodeBackupFile,
  readBackupFile,
  restoreDataDir,
  restoredClusterId,
  writeBackupFile,
} from './backup';
export type { BackupFile, Restored, SavedSnapshot } from './backup';
export type { TransferCode } from './wire/client';
export { PaxosNode } from './daemon';
export type { NodeCounters, NodeOptions } from './daemon';
export {
  ConfigError,
  clientConfigFromNode,
  loadClientConfig,
  loadNodeConfig,
  parseClientConfig,
  parseNodeConfig,
  resolveSid,
} from './io/config';
export type { ClientConfig, NodeConfig } from './io/config';
export { loadKeyring, writeKeyFile } from './io/keys';
export { StorageError } from './io/recordlog';
export { compareLogs } from './logcmp';
export type { KvOp, Outcome } from './sm/kv';
export type { CmdResult } from './core/types';
export { Keyring } from './wire/envelope';
