import * as fs from 'node:fs';
import { parseOrderLine } from './io/orderlog';

/** Result of comparing order logs: do they all read as prefixes of one order? */
export interface LogCompare {
  ok: boolean;
  /** Lines (slot.index entries) compared per file. */
  counts: number[];
  message: string;
}

interface Parsed {
  file: string;
  /** slot.index -> readable text (without the digest). */
  entries: Map<string, string>;
  /** slot.index -> digest of the whole command and result (lines that have one). */
  digests: Map<string, string>;
  /** Slot -> rolling state hash after it (the periodic "# state hash" lines). */
  hashes: Map<number, string>;
  order: string[];
  /** Lines per slot. */
  perSlot: Map<number, number>;
  /** Slot of the last command line: the only slot that may be torn (cut short). */
  lastSlot: number;
}

/**
 * Parse one order log. The writer appends whole slots and its restart rule
 * repairs a torn tail, so the only damage tolerated is a partial last line (no
 * "\n" after it: a crash or power loss while writing).
 */
export function parseOrderLog(file: string, text: string): Parsed | string {
  const entries = new Map<string, string>();
  const digests = new Map<string, string>();
  const hashes = new Map<number, string>();
  const order: string[] = [];
  const perSlot = new Map<number, number>();
  let lastSlot = 0;
  let lastIdx = -1;
  let lastCommandSlot = 0;
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n];
    // After the final "\n" comes '' or a partial line (torn write): never read.
    if (n === lines.length - 1) continue;
    const p = parseOrderLine(line);
    if (p === null) return `${file}:${n + 1}: unreadable line`;
    if (p.kind === 'gap') {
      lastSlot = p.slot;
      lastIdx = Infinity;
      continue;
    }
    if (p.kind === 'comment') continue;
    if (p.kind === 'hash') {
      hashes.set(p.slot, p.hash);
      continue;
    }
    const { slot, index: idx } = p;
    // Slots are contiguous (no-ops have a line too); the first line may start anywhere.
    const inOrder =
      lastIdx === -1 && order.length === 0
        ? idx === 0
        : slot === lastSlot + 1
          ? idx === 0
          : slot === lastSlot && idx === lastIdx + 1;
    if (!inOrder)
      return `${file}:${n + 1}: out of order (${slot}.${idx} after ${lastSlot}.${lastIdx})`;
    lastSlot = slot;
    lastIdx = idx;
    lastCommandSlot = slot;
    const key = `${slot}.${idx}`;
    entries.set(key, p.text);
    if (p.digest !== undefined) digests.set(key, p.digest);
    order.push(key);
    perSlot.set(slot, (perSlot.get(slot) ?? 0) + 1);
  }
  return { file, entries, digests, hashes, order, perSlot, lastSlot: lastCommandSlot };
}

/**
 * A slot that is not a log's last slot was written whole; if another log has
 * more lines for it, lines were lost (e.g. a restart that resumed after a slot
 * torn at a line end).
 */
function missingLines(a: Parsed, b: Parsed): string | null {
  for (const [slot, na] of a.perSlot) {
    const nb = b.perSlot.get(slot);
    if (nb === undefined || na === nb) continue;
    const [short, long, ns, nl] = na < nb ? [a, b, na, nb] : [b, a, nb, na];
    if (slot === short.lastSlot) continue; // may be torn: a prefix is fine
    return `slot ${slot}: ${short.file} has ${ns} lines, ${long.file} has ${nl}`;
  }
  return null;
}

/**
 * Every pair of logs must agree on every slot.index both contain, and on the
 * number of lines of every slot both contain whole. (Slots may be skipped only
 * for no-ops and after a gap marker; lines present must match exactly.)
 */
export function compareLogs(files: string[]): LogCompare {
  return compareLogTexts(files.map((file) => ({ file, text: fs.readFileSync(file, 'utf8') })));
}

/** compareLogs on contents already read (`file` only names them in messages). */
export function compareLogTexts(logs: { file: string; text: string }[]): LogCompare {
  const parsed: Parsed[] = [];
  for (const { file, text } of logs) {
    const p = parseOrderLog(file, text);
    if (typeof p === 'string') return { ok: false, counts: [], message: p };
    parsed.push(p);
  }
  const counts = parsed.map((p) => p.order.length);
  for (let i = 0; i < parsed.length; i++) {
    for (let j = i + 1; j < parsed.length; j++) {
      const a = parsed[i];
      const b = parsed[j];
      const d = firstDivergence(a, b);
      if (d) return { ok: false, counts, message: d };
      const missing = missingLines(a, b);
      if (missing) return { ok: false, counts, message: `lines missing at ${missing}` };
    }
  }
  const hashed = new Set<number>();
  for (const p of parsed) for (const slot of p.hashes.keys()) hashed.add(slot);
  return {
    ok: true,
    counts,
    message: `${logs.length} logs agree (${counts.join(', ')} lines; state hashes at ${hashed.size} slots)`,
  };
}

/** Slot of a "slot.index" key. */
function slotOf(key: string): number {
  return Number(key.slice(0, key.indexOf('.')));
}

/**
 * The lowest slot at which two logs differ, as a message, or null: a line both
 * have whose digests differ (or, on lines without digests, whose texts
 * differ), or a state hash both have that differs. The state hash covers every
 * slot before it too, so logs compare by it even where their lines were rotated
 * away.
 */
function firstDivergence(a: Parsed, b: Parsed): string | null {
  let line: string | null = null;
  const [short, long] = a.order.length <= b.order.length ? [a, b] : [b, a];
  for (const key of short.order) {
    const other = long.entries.get(key);
    if (other === undefined) continue;
    const da = short.digests.get(key);
    const db = long.digests.get(key);
    const same =
      da !== undefined && db !== undefined ? da === db : other === short.entries.get(key);
    if (!same) {
      line = key;
      break;
    }
  }
  let hashSlot = Infinity;
  for (const [slot, h] of a.hashes) {
    const other = b.hashes.get(slot);
    if (other !== undefined && other !== h && slot < hashSlot) hashSlot = slot;
  }
  const show = (p: Parsed, key: string): string => {
    const d = p.digests.get(key);
    return `${p.entries.get(key)}${d === undefined ? '' : ` [${d}]`}`;
  };
  if (line !== null && slotOf(line) <= hashSlot)
    return `first divergence at ${line} (slot ${slotOf(line)}):\n  ${a.file}: ${show(a, line)}\n  ${b.file}: ${show(b, line)}`;
  if (hashSlot !== Infinity)
    return `first divergence at slot ${hashSlot} or before (state hashes differ):\n  ${a.file}: ${a.hashes.get(hashSlot)}\n  ${b.file}: ${b.hashes.get(hashSlot)}`;
  return null;
}
