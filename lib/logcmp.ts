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
  /** slot.index -> the version of that digest (1: a bare "[DIGEST]", N: "[vN:DIGEST]"). */
  versions: Map<string, number>;
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
  const versions = new Map<string, number>();
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
    if (p.digest !== undefined) {
      digests.set(key, p.digest);
      versions.set(key, p.digestVersion ?? 1);
    }
    order.push(key);
    perSlot.set(slot, (perSlot.get(slot) ?? 0) + 1);
  }
  return { file, entries, digests, versions, hashes, order, perSlot, lastSlot: lastCommandSlot };
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
  const notes: string[] = [];
  for (let i = 0; i < parsed.length; i++) {
    for (let j = i + 1; j < parsed.length; j++) {
      const a = parsed[i];
      const b = parsed[j];
      const mixed: VersionMismatch = { lines: 0, first: null };
      const d = firstDivergence(a, b, mixed);
      if (d) return { ok: false, counts, message: d };
      if (mixed.first !== null) notes.push(describeMismatch(a, b, mixed));
      const missing = missingLines(a, b);
      if (missing) return { ok: false, counts, message: `lines missing at ${missing}` };
    }
  }
  const hashed = new Set<number>();
  for (const p of parsed) for (const slot of p.hashes.keys()) hashed.add(slot);
  return {
    ok: true,
    counts,
    message:
      `${logs.length} logs agree (${counts.join(', ')} lines; state hashes at ${hashed.size} slots)` +
      notes.map((n) => `\n${n}`).join(''),
  };
}

/** Lines two logs both have, with digests of different versions (compared by text only). */
interface VersionMismatch {
  lines: number;
  /** The first such line (slot.index). */
  first: string | null;
}

/** Digest suffix of a line as written: " [DIGEST]" (version 1) or " [vN:DIGEST]". */
function digestSuffix(p: Parsed, key: string): string {
  const d = p.digests.get(key);
  if (d === undefined) return '';
  const v = p.versions.get(key) ?? 1;
  return v === 1 ? ` [${d}]` : ` [v${v}:${d}]`;
}

function versionName(p: Parsed, key: string): string {
  return `v${p.versions.get(key) ?? 1}`;
}

/**
 * The OK line's warning: digests of different versions say nothing about each
 * other, so those lines were compared by their readable text only, which
 * misses a difference past a long value's cut.
 */
function describeMismatch(a: Parsed, b: Parsed, m: VersionMismatch): string {
  const k = m.first!;
  return (
    `line digest versions differ (${a.file}: ${versionName(a, k)}, ${b.file}: ${versionName(b, k)}` +
    ` at ${k}) on ${m.lines} lines both have: digests not compared there, only the readable text`
  );
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
function firstDivergence(a: Parsed, b: Parsed, mixed: VersionMismatch): string | null {
  let line: string | null = null;
  let byText = false;
  const [short, long] = a.order.length <= b.order.length ? [a, b] : [b, a];
  for (const key of short.order) {
    const other = long.entries.get(key);
    if (other === undefined) continue;
    const da = short.digests.get(key);
    const db = long.digests.get(key);
    // Digests compare only when both lines have one, of the same version.
    const both = da !== undefined && db !== undefined;
    const comparable = both && short.versions.get(key) === long.versions.get(key);
    if (both && !comparable) {
      mixed.lines++;
      mixed.first ??= key;
    }
    const same = comparable ? da === db : other === short.entries.get(key);
    if (!same) {
      line = key;
      byText = both && !comparable;
      break;
    }
  }
  let hashSlot = Infinity;
  for (const [slot, h] of a.hashes) {
    const other = b.hashes.get(slot);
    if (other !== undefined && other !== h && slot < hashSlot) hashSlot = slot;
  }
  const show = (p: Parsed, key: string): string => `${p.entries.get(key)}${digestSuffix(p, key)}`;
  const how = (key: string): string =>
    byText
      ? ` (texts differ; line digest versions ${versionName(a, key)} and ${versionName(b, key)} are not compared)`
      : '';
  if (line !== null && slotOf(line) <= hashSlot)
    return `first divergence at ${line} (slot ${slotOf(line)})${how(line)}:\n  ${a.file}: ${show(a, line)}\n  ${b.file}: ${show(b, line)}`;
  if (hashSlot !== Infinity)
    return `first divergence at slot ${hashSlot} or before (state hashes differ):\n  ${a.file}: ${a.hashes.get(hashSlot)}\n  ${b.file}: ${b.hashes.get(hashSlot)}`;
  return null;
}
