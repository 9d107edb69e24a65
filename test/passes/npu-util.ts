// Seeded uniform numbers for hand-built test graphs.
export function seededRandom(seed: number) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
  return { next, array: (n: number, lo: number, hi: number) => Float32Array.from({ length: n }, () => lo + (hi - lo) * next()) };
}
