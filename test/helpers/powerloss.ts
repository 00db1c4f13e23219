/**
 * Power-loss-like crashes of real nodes. SIGKILL keeps the page cache, so a
 * node that answered before its fdatasync would still find its records after a
 * kill; a power loss keeps only what was synced. The daemon's status reports
 * the WAL end as of its last completed sync (walSyncedSegment/Offset); cutting
 * the killed node's WAL there drops exactly the unsynced tail.
 *
 * The cut is only honest if the node can have vouched for nothing past the
 * reported offset: the status must be read after the node was cut off from
 * everyone who could hear it vouch (peers and clients), and the node killed
 * before it is heard again. Cutting below what it vouched for would be a
 * harsher fault than a power loss and could "find" losses no real machine has.
 * Callers isolate first (PeerRelay.cut, iptables), then ask StatusProbe, then
 * SIGKILL, then cutWal.
 */
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { decodeReply, encodeRequest } from '../../lib/wire/client';
import { clusterTag, Kind, NO_KEYS, open, seal, type Keyring } from '../../lib/wire/envelope';
import type { Cluster } from './cluster';

export interface WalPoint {
  /** Segment file name (wal-<16 digits>.log) in the node's data directory. */
  segment: string;
  /** Byte offset: everything before it was synced. */
  offset: number;
}

/**
 * Status queries from a socket of our own with a known port, so that an
 * isolation rule can let exactly these replies through (`port`).
 */
export class StatusProbe {
  private sock: dgram.Socket | null = null;
  private nonce = 1;
  private readonly waiting = new Map<number, (s: Record<string, unknown>) => void>();
  /** Address tokens by sid, and re-sends by nonce (a status reply exceeds 3x its request). */
  private readonly tokens = new Map<number, Buffer>();
  private readonly resend = new Map<number, () => void>();
  private readonly cluster: number;
  private readonly keys: Keyring;

  constructor(private readonly c: Cluster) {
    this.cluster = clusterTag(c.clusterId);
    this.keys = c.clientKeys() ?? NO_KEYS;
  }

  async start(): Promise<number> {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(0, '127.0.0.1', () => resolve());
    });
    s.on('message', (buf) => {
      const o = open(buf, Kind.ClientReply, this.cluster, this.keys);
      if ('error' in o) return;
      const r = decodeReply(o.body);
      if ('error' in r) return;
      if (r.t === 'validate' && r.nonce !== null) {
        this.tokens.set(r.sid, r.token);
        this.resend.get(r.nonce)?.();
      }
      if (r.t !== 'status') return;
      this.waiting.get(r.nonce)?.(r.status);
    });
    s.unref();
    this.sock = s;
    return this.port;
  }

  get port(): number {
    if (!this.sock) throw new Error('StatusProbe not started');
    return this.sock.address().port;
  }

  /** The status map of node `sid`, or null without an answer in `timeoutMs` (one retry). */
  async status(sid: number, timeoutMs = 500): Promise<Record<string, unknown> | null> {
    if (!this.sock) throw new Error('StatusProbe not started');
    const srv = this.c.servers[sid];
    for (let attempt = 0; attempt < 2; attempt++) {
      const nonce = this.nonce++;
      const got = await new Promise<Record<string, unknown> | null>((resolve) => {
        const timer = setTimeout(() => {
          this.waiting.delete(nonce);
          this.resend.delete(nonce);
          resolve(null);
        }, timeoutMs / 2);
        this.waiting.set(nonce, (st) => {
          clearTimeout(timer);
          this.waiting.delete(nonce);
          this.resend.delete(nonce);
          resolve(st);
        });
        const send = (): void => {
          const body = encodeRequest({ t: 'status', nonce, token: this.tokens.get(sid) });
          this.sock!.send(
            seal(Kind.ClientRequest, this.cluster, body, this.keys),
            srv.clientPort,
            srv.host,
          );
        };
        // Once more with the token a validate reply brings (not again: no loop).
        this.resend.set(nonce, () => {
          this.resend.delete(nonce);
          send();
        });
        send();
      });
      if (got) return got;
    }
    return null;
  }

  /** The node's last synced WAL end, null if it has synced nothing yet or did not answer. */
  async walSynced(sid: number, timeoutMs = 500): Promise<WalPoint | null> {
    const s = await this.status(sid, timeoutMs);
    return walPointOf(s);
  }

  close(): void {
    try {
      this.sock?.close();
    } catch {
      // already closed
    }
    this.sock = null;
  }
}

/** walSyncedSegment/Offset of a status map, or null. */
export function walPointOf(s: Record<string, unknown> | null): WalPoint | null {
  if (!s) return null;
  const segment = s.walSyncedSegment;
  const offset = s.walSyncedOffset;
  if (typeof segment !== 'string' || typeof offset !== 'number') return null;
  if (!/^wal-\d{16}\.log$/.test(segment)) throw new Error(`odd walSyncedSegment ${segment}`);
  return { segment, offset };
}

export interface CutResult {
  /** Bytes dropped from the end of the segment. */
  dropped: number;
  /** Size before the cut. */
  sizeBefore: number;
}

/**
 * Cut a killed node's WAL back to `p`, as a power loss would leave it when
 * nothing after the last sync reached the disk. Refuses (throws) when `p`
 * is not the last segment (a rotation after the status: the cut point is
 * stale) or lies past the end (the status and the files disagree: a bug).
 */
export function cutWal(dataDir: string, p: WalPoint): CutResult {
  const segs = fs
    .readdirSync(dataDir)
    .filter((f) => /^wal-\d{16}\.log$/.test(f))
    .sort();
  const last = segs[segs.length - 1];
  if (last !== p.segment)
    throw new StaleCutError(`${dataDir}: synced point is in ${p.segment}, last segment is ${last}`);
  const file = path.join(dataDir, p.segment);
  const sizeBefore = fs.statSync(file).size;
  if (p.offset > sizeBefore)
    throw new Error(`${file}: synced offset ${p.offset} is past the end (${sizeBefore} bytes)`);
  fs.truncateSync(file, p.offset);
  return { dropped: sizeBefore - p.offset, sizeBefore };
}

/** cutWal could not apply: the node rotated its WAL after reporting the point. */
export class StaleCutError extends Error {}

// ---------------------------------------------------------------------------
// A relay for every peer link (Cluster option peerRelay), with a switch.

/**
 * Forwards every peer datagram of a peerRelay cluster: i -> j arrives on the
 * socket at relayPort(i, j) and leaves from relayPort(j, i), which is the
 * address j knows i by. cut() drops everything from then on, at once and for
 * every link: nothing a node says after that is heard by a peer.
 */
export class PeerRelay {
  private readonly socks = new Map<string, dgram.Socket>();
  private open = true;
  forwarded = 0;
  droppedAfterCut = 0;

  constructor(private readonly c: Cluster) {}

  async start(): Promise<void> {
    const { c } = this;
    for (const i of c.sids)
      for (const j of c.sids) {
        if (i === j) continue;
        const s = dgram.createSocket({
          type: 'udp4',
          recvBufferSize: 8 << 20,
          sendBufferSize: 8 << 20,
        });
        await new Promise<void>((resolve, reject) => {
          s.once('error', reject);
          s.bind(c.relayPort(i, j), '127.0.0.1', () => resolve());
        });
        s.on('error', () => undefined);
        this.socks.set(`${i}>${j}`, s);
      }
    for (const i of c.sids)
      for (const j of c.sids) {
        if (i === j) continue;
        const inbound = this.socks.get(`${i}>${j}`)!;
        const outbound = this.socks.get(`${j}>${i}`)!;
        inbound.on('message', (buf, rinfo) => {
          if (rinfo.port !== c.servers[i].peerPort) return;
          if (!this.open) {
            this.droppedAfterCut++;
            return;
          }
          this.forwarded++;
          outbound.send(buf, c.servers[j].peerPort, '127.0.0.1');
        });
      }
  }

  /** Drop every peer datagram from now on. */
  cut(): void {
    this.open = false;
  }

  heal(): void {
    this.open = true;
  }

  close(): void {
    for (const s of this.socks.values())
      try {
        s.close();
      } catch {
        // already closed
      }
    this.socks.clear();
  }
}
