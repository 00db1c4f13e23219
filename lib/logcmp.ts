import * as fs from 'node:fs';

/** Result of comparing order logs: do they all read as prefixes of one order? */
export interface LogCompare {
  ok: boolean;
  /** Lines (slot.index entries) compared per file. */
  counts: number[];
  message: string;
}

interface Parsed {
  file: string;
  entries: Map<string, string>;
  order: string[];
}

function parse(file: string, text: string): Parsed | string {
  const entries = new Map<string, string>();
  const order: string[] = [];
  let lastSlot = 0;
  let lastIdx = -1;
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n];
    if (line === '') continue;
    const snap = /^# snapshot installed through slot (\d+)/.exec(line);
    if (snap) {
      lastSlot = Number(snap[1]);
      lastIdx = Infinity;
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = /^(\d+)\.(\d+) (.*)$/.exec(line);
    if (!m) {
      // A crash can cut the very last line short.
      if (n >= lines.length - 2) continue;
      return `${file}:${n + 1}: unreadable line`;
    }
    const slot = Number(m[1]);
    const idx = Number(m[2]);
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
    const key = `${slot}.${idx}`;
    entries.set(key, m[3]);
    order.push(key);
  }
  return { file, entries, order };
}

/**
 * Every pair of logs must agree on every slot.index both contain. (Slots may be
 * skipped only for no-ops and where a snapshot was installed; lines present must
 * match exactly.)
 */
export function compareLogs(files: string[]): LogCompare {
  const parsed: Parsed[] = [];
  for (const f of files) {
    const p = parse(f, fs.readFileSync(f, 'utf8'));
    if (typeof p === 'string') return { ok: false, counts: [], message: p };
    parsed.push(p);
  }
  const counts = parsed.map((p) => p.order.length);
  for (let i = 0; i < parsed.length; i++) {
    for (let j = i + 1; j < parsed.length; j++) {
      const a = parsed[i];
      const b = parsed[j];
      const [short, long] = a.order.length <= b.order.length ? [a, b] : [b, a];
      for (const key of short.order) {
        const other = long.entries.get(key);
        const mine = short.entries.get(key);
        if (other !== undefined && other !== mine)
          return {
            ok: false,
            counts,
            message: `first divergence at ${key}:\n  ${a.file}: ${a.entries.get(key)}\n  ${b.file}: ${b.entries.get(key)}`,
          };
      }
    }
  }
  return {
    ok: true,
    counts,
    message: `${files.length} logs agree (${counts.join(', ')} lines)`,
  };
}
