/**
 * CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, as used by iSCSI,
 * ext4, LevelDB/RocksDB and etcd's WAL. Table-driven, slicing-by-8.
 *
 * crc32c(Buffer.from('123456789')) === 0xe3069283
 */

const POLY = 0x82f63b78;

/** 8 tables of 256 entries: TABLE[k * 256 + b]. */
const TABLE: Uint32Array = (() => {
  const t = new Uint32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t[i] = c >>> 0;
  }
  for (let i = 0; i < 256; i++) {
    for (let k = 1; k < 8; k++) {
      const prev = t[(k - 1) * 256 + i];
      t[k * 256 + i] = (prev >>> 8) ^ t[prev & 0xff];
    }
  }
  return t;
})();

/**
 * CRC-32C of `buf[start, end)` (defaults: the whole buffer). Returns an
 * unsigned 32-bit integer.
 */
export function crc32c(buf: Uint8Array, start = 0, end: number = buf.length): number {
  if (
    !Number.isInteger(start) ||
    !Number.isInteger(end) ||
    start < 0 ||
    end > buf.length ||
    start > end
  ) {
    throw new RangeError(`crc32c: bad range [${start}, ${end}) for buffer of ${buf.length} bytes`);
  }
  const t = TABLE;
  let crc = ~0;
  let i = start;
  // Slicing-by-8: process 8 bytes per iteration.
  const end8 = end - ((end - start) & 7);
  while (i < end8) {
    const lo = crc ^ (buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24));
    const hi = buf[i + 4] | (buf[i + 5] << 8) | (buf[i + 6] << 16) | (buf[i + 7] << 24);
    crc =
      t[1792 + (lo & 0xff)] ^
      t[1536 + ((lo >>> 8) & 0xff)] ^
      t[1280 + ((lo >>> 16) & 0xff)] ^
      t[1024 + (lo >>> 24)] ^
      t[768 + (hi & 0xff)] ^
      t[512 + ((hi >>> 8) & 0xff)] ^
      t[256 + ((hi >>> 16) & 0xff)] ^
      t[hi >>> 24];
    i += 8;
  }
  while (i < end) crc = t[(crc ^ buf[i++]) & 0xff] ^ (crc >>> 8);
  return ~crc >>> 0;
}
