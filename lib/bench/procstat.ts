import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';

// CPU accounting from /proc (Linux): the host's busy time and a process's own.

let clkTck = 100;
try {
  clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // not Linux or no getconf: 100 is the Linux default
}

/** CPU seconds the whole host spent busy (all cores; /proc/stat), or null. */
export function hostBusyS(): number | null {
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0];
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    const busy = f[0] + f[1] + f[2] + (f[5] ?? 0) + (f[6] ?? 0);
    return busy / clkTck;
  } catch {
    return null;
  }
}

/** utime+stime of a process in seconds, or null (not Linux, or it is gone). */
export function procCpuS(pid: number): number | null {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // f[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (Number(f[11]) + Number(f[12])) / clkTck;
  } catch {
    return null;
  }
}
