/**
 * A structural pre-check of CBOR bytes before they reach cbor-x: one linear
 * pass, no allocation. It refuses what our protocol never sends and what makes a
 * general decoder slow or dangerous: tags (tag 1 makes Dates, others make typed
 * arrays or records), indefinite lengths, nesting deeper than `depthMax`, and
 * lengths that claim more items or bytes than the buffer holds. Returns the
 * reason for refusal, or null when the bytes are one well-formed item.
 */
export function scanCbor(buf: Uint8Array, depthMax: number): string | null {
  const end = buf.length;
  let pos = 0;
  // remaining[d] = items still expected at depth d (depth 0: the single top item).
  const remaining: number[] = [1];
  while (remaining.length > 0) {
    if (remaining[remaining.length - 1] === 0) {
      remaining.pop();
      continue;
    }
    remaining[remaining.length - 1]--;
    if (pos >= end) return 'truncated';
    const b = buf[pos++];
    const major = b >> 5;
    const info = b & 31;
    let n: number;
    if (info < 24) n = info;
    else if (info === 24) {
      if (pos + 1 > end) return 'truncated';
      n = buf[pos];
      pos += 1;
    } else if (info === 25) {
      if (pos + 2 > end) return 'truncated';
      n = (buf[pos] << 8) | buf[pos + 1];
      pos += 2;
    } else if (info === 26) {
      if (pos + 4 > end) return 'truncated';
      n = ((buf[pos] << 24) >>> 0) + (buf[pos + 1] << 16) + (buf[pos + 2] << 8) + buf[pos + 3];
      pos += 4;
    } else if (info === 27) {
      if (pos + 8 > end) return 'truncated';
      const hi =
        ((buf[pos] << 24) >>> 0) + (buf[pos + 1] << 16) + (buf[pos + 2] << 8) + buf[pos + 3];
      const lo =
        ((buf[pos + 4] << 24) >>> 0) + (buf[pos + 5] << 16) + (buf[pos + 6] << 8) + buf[pos + 7];
      n = hi * 4294967296 + lo;
      pos += 8;
    } else if (info === 31) return 'indefinite_length';
    else return 'reserved_info';
    switch (major) {
      case 0:
      case 1:
        break;
      case 2:
      case 3:
        if (n > end - pos) return 'length_overrun';
        pos += n;
        break;
      case 4:
      case 5: {
        const items = major === 5 ? n * 2 : n;
        if (items > end - pos) return 'length_overrun';
        if (items > 0) {
          if (remaining.length > depthMax) return 'too_deep';
          remaining.push(items);
        }
        break;
      }
      case 6:
        return 'tag';
      case 7:
        // false, true, null, undefined, and floats (whose bytes were skipped above).
        if (info < 20 || info === 24) return 'simple_value';
        break;
    }
  }
  return pos === end ? null : 'trailing_bytes';
}
