/**
 * Ballots are (round, sid) pairs ordered lexicographically. They are packed into
 * one integer, round * SID_LIMIT + sid, so that plain numeric comparison is that
 * order and the wire carries one number. Ballot 0 is "none" (nothing promised).
 * Every sid must be below SID_LIMIT (lib/limits.ts asserts SID_MAX < SID_LIMIT).
 */
export const SID_LIMIT = 256;

export function makeBallot(round: number, sid: number): number {
  return round * SID_LIMIT + sid;
}

export function ballotRound(ballot: number): number {
  return Math.floor(ballot / SID_LIMIT);
}

export function ballotSid(ballot: number): number {
  return ballot % SID_LIMIT;
}

/** The smallest ballot of `sid` that is greater than `seen`. */
export function nextBallot(seen: number, sid: number): number {
  return makeBallot(ballotRound(seen) + 1, sid);
}

export function formatBallot(ballot: number): string {
  return `${ballotRound(ballot)}.${ballotSid(ballot)}`;
}
