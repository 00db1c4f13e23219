/**
 * Prometheus metrics for one node (`paxosd --metrics HOST:PORT`, off by
 * default): the text exposition format 0.0.4 over plain node:http, no client
 * library (the design card allows no runtime dependency for it).
 *
 * The node keeps its own counters (NodeCounters, used by `status` too); this
 * module adds what only metrics need (leader changes, elections, replies by
 * outcome, request latency) and renders everything on each scrape, so a scrape
 * costs the node nothing between scrapes.
 */
import * as http from 'node:http';
import type { ReplicaStatus } from './core/replica';
import type { NodeCounters } from './daemon';
import { TIMED_REQUESTS_MAX } from './limits';

/** Upper bounds (seconds) of the request latency histogram buckets. */
export const LATENCY_BUCKETS_S = [
  0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5,
];

/** What the node's own counters and status provide at scrape time. */
export interface MetricsSource {
  sid: number;
  status(): ReplicaStatus & { dataBytes: number };
  counters: NodeCounters;
}

export class NodeMetrics {
  leaderChanges = 0;
  elections = 0;
  appliedSlots = 0;
  /** Client answers by outcome ('ok', 'failed', 'redirect', 'busy', 'session_expired', ...). */
  readonly replies: Record<string, number> = Object.create(null) as Record<string, number>;
  private readonly latencyCounts = new Array<number>(LATENCY_BUCKETS_S.length + 1).fill(0);
  private latencySum = 0;
  private readonly started = new Map<string, number>();
  private lastLeader: number | null = null;
  private lastRole = '';

  /** Once per turn: count leader changes seen here and campaigns started here. */
  observeRole(role: string, leader: number | null): void {
    if (leader !== null && leader !== this.lastLeader) this.leaderChanges++;
    if (leader !== null) this.lastLeader = leader;
    if (role === 'candidate' && this.lastRole !== 'candidate') this.elections++;
    this.lastRole = role;
  }

  /** A client request entered (the first copy of cid:seq starts its clock). */
  requestIn(key: string, nowMs: number): void {
    if (this.started.has(key)) return;
    if (this.started.size >= TIMED_REQUESTS_MAX) {
      const oldest = this.started.keys().next().value as string;
      this.started.delete(oldest);
    }
    this.started.set(key, nowMs);
  }

  /** A client answer left: count its outcome and, for a timed request, its latency. */
  replyOut(key: string, outcome: string, nowMs: number): void {
    this.replies[outcome] = (this.replies[outcome] ?? 0) + 1;
    const at = this.started.get(key);
    if (at === undefined) return;
    this.started.delete(key);
    const s = Math.max(0, nowMs - at) / 1000;
    this.latencySum += s;
    let i = 0;
    while (i < LATENCY_BUCKETS_S.length && s > LATENCY_BUCKETS_S[i]) i++;
    this.latencyCounts[i]++;
  }

  /** The exposition text for one scrape. */
  render(src: MetricsSource): string {
    const st = src.status();
    const c = src.counters;
    const out: string[] = [];
    const sid = `sid="${src.sid}"`;
    const metric = (name: string, type: string, help: string, lines: string[]): void => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...lines);
    };
    const one = (name: string, type: string, help: string, v: number): void =>
      metric(name, type, help, [`${name}{${sid}} ${v}`]);
    const histogram = (
      name: string,
      help: string,
      bounds: number[],
      counts: number[],
      sum: number,
    ) => metric(name, 'histogram', help, histogramLines(name, sid, bounds, counts, sum));
    one('paxosd_applied_slot', 'gauge', 'Highest slot applied to the state machine.', st.applied);
    one('paxosd_chosen_slot', 'gauge', 'Highest slot of the gapless chosen prefix.', st.chosen);
    one('paxosd_commits_total', 'counter', 'Slots applied by this process.', this.appliedSlots);
    one(
      'paxosd_lag_slots',
      'gauge',
      'Slots known chosen but not yet applied here (catch-up lag).',
      st.known - st.applied,
    );
    one('paxosd_is_leader', 'gauge', '1 while this node leads.', st.role === 'leader' ? 1 : 0);
    one('paxosd_voter', 'gauge', '1 while this node may vote.', st.voter ? 1 : 0);
    one('paxosd_promised_ballot', 'gauge', 'Highest ballot promised.', st.promised);
    one(
      'paxosd_leader_changes_total',
      'counter',
      'Leader changes seen by this node.',
      this.leaderChanges,
    );
    one(
      'paxosd_elections_total',
      'counter',
      'Campaigns (Phase 1) started by this node.',
      this.elections,
    );
    one('paxosd_queued_commands', 'gauge', 'Client commands queued at this leader.', st.queued);
    one('paxosd_inflight_slots', 'gauge', 'Slots proposed and not yet chosen.', st.inflight);
    one('paxosd_data_bytes', 'gauge', 'Bytes in the data directory.', st.dataBytes);
    one('paxosd_syncs_total', 'counter', 'fdatasync calls on the WAL.', c.syncs);
    one('paxosd_records_synced_total', 'counter', 'WAL records made durable.', c.recordsSynced);
    histogram(
      'paxosd_group_commit_records',
      'Records per fdatasync (group commit size).',
      c.groupCommit.map((_, i) => 2 ** (i + 1) - 1),
      c.groupCommit,
      c.recordsSynced,
    );
    metric('paxosd_datagrams_total', 'counter', 'Datagrams by port and direction.', [
      `paxosd_datagrams_total{${sid},port="peer",dir="in"} ${c.peerIn}`,
      `paxosd_datagrams_total{${sid},port="peer",dir="out"} ${c.peerOut}`,
      `paxosd_datagrams_total{${sid},port="client",dir="in"} ${c.clientIn}`,
      `paxosd_datagrams_total{${sid},port="client",dir="out"} ${c.clientOut}`,
    ]);
    metric(
      'paxosd_dropped_total',
      'counter',
      'Datagrams dropped, by reason.',
      Object.entries(c.dropped).map(([r, v]) => `paxosd_dropped_total{${sid},reason="${r}"} ${v}`),
    );
    metric(
      'paxosd_client_replies_total',
      'counter',
      'Client answers sent, by outcome.',
      Object.entries(this.replies).map(
        ([o, v]) => `paxosd_client_replies_total{${sid},outcome="${o}"} ${v}`,
      ),
    );
    histogram(
      'paxosd_request_seconds',
      'Time from a client request to its answer at this node.',
      LATENCY_BUCKETS_S,
      this.latencyCounts,
      this.latencySum,
    );
    return out.join('\n') + '\n';
  }
}

/** Cumulative `_bucket` lines (counts[i] falls at or below bounds[i]; the last is +Inf). */
function histogramLines(
  name: string,
  labels: string,
  bounds: number[],
  counts: number[],
  sum: number,
): string[] {
  const lines: string[] = [];
  let acc = 0;
  for (let i = 0; i < bounds.length; i++) {
    acc += counts[i] ?? 0;
    lines.push(`${name}_bucket{${labels},le="${bounds[i]}"} ${acc}`);
  }
  for (let i = bounds.length; i < counts.length; i++) acc += counts[i] ?? 0;
  lines.push(`${name}_bucket{${labels},le="+Inf"} ${acc}`);
  lines.push(`${name}_sum{${labels}} ${sum}`, `${name}_count{${labels}} ${acc}`);
  return lines;
}

/** Serve `render()` at /metrics; resolves once listening. */
export function serveMetrics(
  host: string,
  port: number,
  render: () => string,
): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '/').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('paxosd: only GET /metrics\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(render());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

/** `HOST:PORT` of --metrics, or an error message. */
export function parseListen(s: string): { host: string; port: number } | string {
  const m = /^([^:\s]+):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535)
    return `--metrics must be HOST:PORT (e.g. 127.0.0.1:9100), not "${s}"`;
  return { host: m[1], port };
}
