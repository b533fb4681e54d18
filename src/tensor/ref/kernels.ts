// Pure-TS twins of every native kernel, same signatures (the spec and the test oracle; PERP_NATIVE=0 runs on them).
// Generic over Float32Array and Float64Array so gradient checks can run the same math in float64.
export type Arr = Float32Array | Float64Array;
export type BType = "f32" | "bf16" | "f16";

function check(op: string, cond: boolean, msg: string): void {
  if (!cond) throw new TypeError(`${op}: ${msg}`);
}

export function bf16ToF32(h: number): number {
  const b = new DataView(new ArrayBuffer(4));
  b.setUint32(0, h << 16);
  return b.getFloat32(0);
}

export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/**
 * C = alpha * (op(A) op(B) + op(A2) op(B2)) + beta * C, row-major; op(A): M x K, op(B): K x N, the optional second
 * product op(A2): M x K2, op(B2): K2 x N. beta == 0 does not read C.
 */
export function gemm(
  C: Arr,
  A: Arr,
  B: Arr | Uint16Array,
  M: number,
  N: number,
  K: number,
  transA: boolean,
  transB: boolean,
  alpha: number,
  beta: number,
  btype: BType = "f32",
  lda?: number,
  ldb?: number,
  ldc?: number,
  A2?: Arr | null,
  B2?: Arr | null,
  K2 = 0,
  transA2 = false,
  transB2 = false,
  _packed?: Float32Array | null, // op(B) pre-packed by the native gemmPack: a speed-up only, the result is the same
): void {
  const la = lda ?? (transA ? M : K);
  const lb = ldb ?? (transB ? K : N);
  const lc = ldc ?? N;
  check("gemm", C.length >= (M - 1) * lc + N || M === 0, "C too short");
  // bf16 / f16 widened once (exactly), so the inner loop reads one array type
  const Bv: Arr =
    btype === "f32"
      ? (B as Arr)
      : Float64Array.from(B as Uint16Array, btype === "bf16" ? (h) => bf16ToF32(h) : (h) => f16ToF32(h));
  // strides of op(A) and op(B) along (row, k) and (k, col)
  const [ai, ak] = transA ? [1, la] : [la, 1];
  const [bk, bj] = transB ? [1, lb] : [lb, 1];
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += A[i * ai + k * ak] * Bv[k * bk + j * bj];
      // optional second product along K: op(A2) (M x K2) · op(B2) (K2 x N), packed leading dimensions
      if (A2 && B2)
        for (let k = 0; k < K2; k++)
          s += (transA2 ? A2[k * M + i] : A2[i * K2 + k]) * (transB2 ? B2[j * K2 + k] : B2[k * N + j]);
      const idx = i * lc + j;
      C[idx] = beta === 0 ? alpha * s : beta * C[idx] + alpha * s;
    }
  }
}

export function biasAdd(y: Arr, b: Arr, M: number, N: number): void {
  for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) y[i * N + j] += b[j];
}

export function biasGrad(db: Arr, dy: Arr, M: number, N: number): void {
  for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) db[j] += dy[i * N + j];
}

export function rmsnormFwd(out: Arr, rstd: Arr | null, x: Arr, w: Arr, M: number, C: number, eps: number): void {
  for (let i = 0; i < M; i++) {
    let ss = 0;
    for (let j = 0; j < C; j++) ss += x[i * C + j] * x[i * C + j];
    const r = 1 / Math.sqrt(ss / C + eps);
    if (rstd) rstd[i] = r;
    for (let j = 0; j < C; j++) out[i * C + j] = w[j] * x[i * C + j] * r;
  }
}

export function rmsnormBwd(
  dx: Arr | null,
  dw: Arr | null,
  dout: Arr,
  x: Arr,
  w: Arr,
  rstd: Arr,
  M: number,
  C: number,
): void {
  for (let i = 0; i < M; i++) {
    const r = rstd[i];
    let dot = 0;
    for (let j = 0; j < C; j++) dot += dout[i * C + j] * w[j] * x[i * C + j] * r;
    const c = dot / C;
    for (let j = 0; j < C; j++) {
      const xh = x[i * C + j] * r;
      if (dx) dx[i * C + j] = r * (dout[i * C + j] * w[j] - xh * c);
      if (dw) dw[j] += dout[i * C + j] * xh;
    }
  }
}

export function layernormFwd(
  out: Arr,
  mean: Arr | null,
  rstd: Arr | null,
  x: Arr,
  w: Arr | null,
  b: Arr | null,
  M: number,
  C: number,
  eps: number,
): void {
  for (let i = 0; i < M; i++) {
    let s = 0;
    for (let j = 0; j < C; j++) s += x[i * C + j];
    const mu = s / C;
    let v = 0;
    for (let j = 0; j < C; j++) v += (x[i * C + j] - mu) ** 2;
    const r = 1 / Math.sqrt(v / C + eps);
    if (mean) mean[i] = mu;
    if (rstd) rstd[i] = r;
    for (let j = 0; j < C; j++) {
      const n = (x[i * C + j] - mu) * r;
      out[i * C + j] = (w ? n * w[j] : n) + (b ? b[j] : 0);
    }
  }
}

export function layernormBwd(
  dx: Arr | null,
  dw: Arr | null,
  db: Arr | null,
  dout: Arr,
  x: Arr,
  mean: Arr,
  rstd: Arr,
  w: Arr | null,
  M: number,
  C: number,
): void {
  for (let i = 0; i < M; i++) {
    const m = mean[i];
    const r = rstd[i];
    let s1 = 0;
    let s2 = 0;
    for (let j = 0; j < C; j++) {
      const gw = w ? dout[i * C + j] * w[j] : dout[i * C + j];
      s1 += gw;
      s2 += gw * (x[i * C + j] - m) * r;
    }
    for (let j = 0; j < C; j++) {
      const g = dout[i * C + j];
      const xh = (x[i * C + j] - m) * r;
      const gw = w ? g * w[j] : g;
      if (dx) dx[i * C + j] = r * (gw - s1 / C - (xh * s2) / C);
      if (dw) dw[j] += g * xh;
      if (db) db[j] += g;
    }
  }
}

export function rope(
  out: Arr,
  x: Arr,
  cos: Arr,
  sin: Arr,
  B: number,
  T: number,
  H: number,
  D: number,
  R: number,
  interleaved: boolean,
  inverse: boolean,
): void {
  check("rope", R <= D && R % 2 === 0, `rotary dims R must be even and <= D (R=${R}, D=${D})`);
  const half = R / 2;
  const sg = inverse ? -1 : 1;
  for (let bt = 0; bt < B * T; bt++) {
    const t = bt % T;
    for (let h = 0; h < H; h++) {
      const o = (bt * H + h) * D;
      for (let i = 0; i < half; i++) {
        const i0 = interleaved ? 2 * i : i;
        const i1 = interleaved ? 2 * i + 1 : i + half;
        const a = x[o + i0];
        const b = x[o + i1];
        const c = cos[t * half + i];
        const s = sg * sin[t * half + i];
        out[o + i0] = a * c - b * s;
        out[o + i1] = b * c + a * s;
      }
      if (out !== x) for (let i = R; i < D; i++) out[o + i] = x[o + i];
    }
  }
}

/**
 * Rows with cached prefixes of their own (inference): row b's T queries (q, out: (B, T, H·D)) follow past[b] cached
 * keys and values, rows of pk[b] / pv[b] ((past[b], KV·D)), then its T new ones, rows [bT, bT + T) of k / v; each
 * row as attentionFwd over its keys back to back.
 */
export function attentionFwdRows(
  out: Arr,
  q: Arr,
  k: Arr,
  v: Arr,
  pk: Arr[],
  pv: Arr[],
  past: Int32Array,
  B: number,
  T: number,
  H: number,
  KV: number,
  D: number,
  scale: number,
  window = 0,
): void {
  const w = KV * D;
  const n = T * H * D;
  check("attentionFwdRows", pk.length === B && pv.length === B, "pk / pv need one array per row");
  for (let b = 0; b < B; b++) {
    const p = past[b];
    check("attentionFwdRows", p >= 0 && pk[b].length >= p * w && pv[b].length >= p * w, `row ${b}: short prefix`);
    const kk = new Float64Array((p + T) * w);
    const vv = new Float64Array((p + T) * w);
    kk.set(pk[b].subarray(0, p * w));
    vv.set(pv[b].subarray(0, p * w));
    kk.set(k.subarray(b * T * w, (b + 1) * T * w), p * w);
    vv.set(v.subarray(b * T * w, (b + 1) * T * w), p * w);
    const o = new Float64Array(n);
    attentionFwd(o, null, q.subarray(b * n, (b + 1) * n), kk, vv, 1, T, H, KV, D, scale, window, p);
    out.set(o, b * n);
  }
}

/**
 * Causal attention (GQA, optional sliding window). P (B, H, T, T), when given, receives the probabilities for the
 * backward: every row's entries for keys up to the query itself are written; the native kernel leaves the rest of a
 * row (zeros by causality) past its query panel's diagonal key panel as it was, and its backward never reads it.
 * `past` > 0 (a KV cache): k and v hold past + T positions, query t sits at position past + t, and P must be null.
 */
export function attentionFwd(
  out: Arr,
  P: Arr | null,
  q: Arr,
  k: Arr,
  v: Arr,
  B: number,
  T: number,
  H: number,
  KV: number,
  D: number,
  scale: number,
  window = 0,
  past = 0,
): void {
  check("attentionFwd", KV > 0 && H % KV === 0, `H (${H}) must be a multiple of KV (${KV})`);
  check("attentionFwd", past === 0 || P === null, "P must be null when past > 0");
  const rep = H / KV;
  const S = past + T;
  const row = new Float64Array(S);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / rep);
      for (let tq = 0; tq < T; tq++) {
        const t = past + tq; // the query's position among the keys
        // keys [s0, t]: a sliding window of `window` keys (0: all earlier keys)
        const s0 = window > 0 ? Math.max(0, t + 1 - window) : 0;
        let mx = Number.NEGATIVE_INFINITY;
        for (let s = s0; s <= t; s++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[((b * T + tq) * H + h) * D + d] * k[((b * S + s) * KV + kh) * D + d];
          row[s] = dot * scale;
          mx = Math.max(mx, row[s]);
        }
        let sum = 0;
        for (let s = s0; s <= t; s++) {
          row[s] = Math.exp(row[s] - mx);
          sum += row[s];
        }
        for (let s = 0; s < S; s++) {
          const p = s >= s0 && s <= t ? row[s] / sum : 0;
          if (P) P[((b * H + h) * T + tq) * T + s] = p;
          row[s] = p;
        }
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let s = 0; s <= t; s++) acc += row[s] * v[((b * S + s) * KV + kh) * D + d];
          out[((b * T + tq) * H + h) * D + d] = acc;
        }
      }
    }
}

export function attentionBwd(
  dq: Arr,
  dk: Arr,
  dv: Arr,
  dout: Arr,
  q: Arr,
  k: Arr,
  v: Arr,
  P: Arr,
  B: number,
  T: number,
  H: number,
  KV: number,
  D: number,
  scale: number,
): void {
  const rep = H / KV;
  dk.fill(0);
  dv.fill(0);
  const dp = new Float64Array(T);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / rep);
      for (let t = 0; t < T; t++) {
        const pr = ((b * H + h) * T + t) * T;
        const qo = ((b * T + t) * H + h) * D;
        let dot = 0;
        for (let s = 0; s <= t; s++) {
          const vo = ((b * T + s) * KV + kh) * D;
          let a = 0;
          for (let d = 0; d < D; d++) {
            a += dout[qo + d] * v[vo + d];
            dv[vo + d] += P[pr + s] * dout[qo + d];
          }
          dp[s] = a;
          dot += a * P[pr + s];
        }
        for (let d = 0; d < D; d++) dq[qo + d] = 0;
        for (let s = 0; s <= t; s++) {
          const ds = P[pr + s] * (dp[s] - dot) * scale;
          const ko = ((b * T + s) * KV + kh) * D;
          for (let d = 0; d < D; d++) {
            dq[qo + d] += ds * k[ko + d];
            dk[ko + d] += ds * q[qo + d];
          }
        }
      }
    }
}

export type ActKind = "relu" | "gelu" | "gelu_tanh" | "silu";

/** erf with |error| < 1.2e-7 (Numerical Recipes erfc, Chebyshev), enough for float32 GELU. */
export function erf(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t *
                  (0.09678418 +
                    t *
                      (-0.18628806 +
                        t *
                          (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? 1 - r : r - 1;
}

const S2PI = Math.sqrt(2 / Math.PI);

function actOne(x: number, kind: ActKind): number {
  switch (kind) {
    case "relu":
      return Math.max(x, 0);
    case "gelu":
      return 0.5 * x * (1 + erf(x / Math.SQRT2));
    case "gelu_tanh":
      return 0.5 * x * (1 + Math.tanh(S2PI * (x + 0.044715 * x * x * x)));
    default:
      return x / (1 + Math.exp(-x));
  }
}

function actGrad(x: number, kind: ActKind): number {
  switch (kind) {
    case "relu":
      return x > 0 ? 1 : 0;
    case "gelu":
      return 0.5 * (1 + erf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI);
    case "gelu_tanh": {
      const th = Math.tanh(S2PI * (x + 0.044715 * x * x * x));
      return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * S2PI * (1 + 3 * 0.044715 * x * x);
    }
    default: {
      const s = 1 / (1 + Math.exp(-x));
      return s * (1 + x * (1 - s));
    }
  }
}

export function actFwd(out: Arr, x: Arr, kind: ActKind): void {
  for (let i = 0; i < x.length; i++) out[i] = actOne(x[i], kind);
}

export function actBwd(dx: Arr, dout: Arr, x: Arr, kind: ActKind): void {
  for (let i = 0; i < x.length; i++) dx[i] = dout[i] * actGrad(x[i], kind);
}

export function swigluFwd(out: Arr, g: Arr, u: Arr): void {
  for (let i = 0; i < g.length; i++) out[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
}

export function swigluBwd(dg: Arr | null, du: Arr | null, dout: Arr, g: Arr, u: Arr): void {
  for (let i = 0; i < g.length; i++) {
    const s = 1 / (1 + Math.exp(-g[i]));
    if (du) du[i] = dout[i] * g[i] * s;
    if (dg) dg[i] = dout[i] * u[i] * s * (1 + g[i] * (1 - s));
  }
}

export function xent(
  loss: Arr,
  dlogits: Arr | null,
  logits: Arr,
  targets: Int32Array,
  M: number,
  V: number,
  ignoreIndex: number,
  scale: number,
): void {
  for (let i = 0; i < M; i++) {
    const t = targets[i];
    if (t !== ignoreIndex) check("xent", t >= 0 && t < V, `target ${t} at row ${i} is outside [0, ${V})`);
  }
  for (let i = 0; i < M; i++) {
    const t = targets[i];
    const o = i * V;
    if (t === ignoreIndex) {
      loss[i] = 0;
      if (dlogits) for (let j = 0; j < V; j++) dlogits[o + j] = 0;
      continue;
    }
    let mx = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < V; j++) mx = Math.max(mx, logits[o + j]);
    let sum = 0;
    for (let j = 0; j < V; j++) sum += Math.exp(logits[o + j] - mx);
    const lt = logits[o + t];
    loss[i] = Math.log(sum) + mx - lt;
    if (dlogits) {
      for (let j = 0; j < V; j++) dlogits[o + j] = (scale * Math.exp(logits[o + j] - mx)) / sum;
      dlogits[o + t] -= scale;
    }
  }
}

export function adamw(
  p: Arr,
  g: Arr,
  m: Arr,
  v: Arr,
  lr: number,
  b1: number,
  b2: number,
  eps: number,
  wd: number,
  step: number,
): number {
  let bad = 0;
  for (let i = 0; i < g.length; i++) if (!Number.isFinite(g[i])) bad++;
  if (bad) return bad;
  const bc1 = 1 - b1 ** step;
  const bc2 = 1 - b2 ** step;
  for (let i = 0; i < p.length; i++) {
    p[i] *= 1 - lr * wd;
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    p[i] -= ((lr / bc1) * m[i]) / (Math.sqrt(v[i]) / Math.sqrt(bc2) + eps);
  }
  return 0;
}

export const EW = { add: 0, mul: 1, axpy: 2, scale: 3, mulacc: 4, sub: 5 } as const;

export function ew(op: number, out: Arr, a: Arr, b: Arr | null, alpha: number): void {
  const n = out.length;
  const bb = b as Arr;
  for (let i = 0; i < n; i++) {
    if (op === EW.add) out[i] = a[i] + bb[i];
    else if (op === EW.sub) out[i] = a[i] - bb[i];
    else if (op === EW.mul) out[i] = a[i] * bb[i];
    else if (op === EW.axpy) out[i] += alpha * a[i];
    else if (op === EW.scale) out[i] = alpha * a[i];
    else out[i] += a[i] * bb[i];
  }
}

/** out[j] += Σ_i x[i, j]² over the n rows of x (n x cols), in double, rows in order. */
export function colSumsq(out: Float64Array, x: Arr, n: number, cols: number): void {
  check("colSumsq", out.length === cols && x.length === n * cols, "length mismatch");
  for (let i = 0; i < n; i++) for (let j = 0; j < cols; j++) out[j] += x[i * cols + j] * x[i * cols + j];
}

/** Per row of x (M x V): out[i] = log Σ_j exp(x[i, j]) in double; argmax[i] = the first index of the row's maximum. */
export function rowLogsumexp(out: Float64Array, argmax: Int32Array, x: Arr, M: number, V: number): void {
  check("rowLogsumexp", V > 0 && out.length === M && argmax.length === M && x.length === M * V, "length mismatch");
  for (let i = 0; i < M; i++) {
    let mx = Number.NEGATIVE_INFINITY;
    let am = 0;
    for (let j = 0; j < V; j++)
      if (x[i * V + j] > mx) {
        mx = x[i * V + j];
        am = j;
      }
    let sum = 0;
    for (let j = 0; j < V; j++) sum += Math.exp(x[i * V + j] - mx);
    out[i] = Math.log(sum) + mx;
    argmax[i] = am;
  }
}

/** out = base + s·(x ⊙ mask); base null: s·(x ⊙ mask). */
export function maskedScaleAdd(out: Arr, base: Arr | null, x: Arr, mask: Uint8Array, s: number): void {
  const n = out.length;
  check("maskedScaleAdd", x.length === n && mask.length === n && (!base || base.length === n), "length mismatch");
  for (let i = 0; i < n; i++) {
    const sx = mask[i] ? Math.fround(Math.fround(s) * x[i]) : 0;
    out[i] = base ? base[i] + sx : sx;
  }
}

export function maskApply(w: Arr, mask: Uint8Array): void {
  for (let i = 0; i < w.length; i++) if (!mask[i]) w[i] = 0;
}

function pruneSmallest(mask: Uint8Array, off: number, scores: Arr, n: number, k: number): void {
  const idx = Array.from({ length: n }, (_, i) => i);
  idx.sort((a, b) => scores[off + a] - scores[off + b] || a - b);
  for (let i = 0; i < n; i++) mask[off + i] = 1;
  for (let i = 0; i < k; i++) mask[off + idx[i]] = 0;
}

export function topkPrune(mask: Uint8Array, scores: Arr, rows: number, cols: number, k: number, perRow: boolean): void {
  check("topkPrune", k <= (perRow ? cols : rows * cols), `k=${k} exceeds the group size`);
  if (!perRow) pruneSmallest(mask, 0, scores, rows * cols, k);
  else for (let r = 0; r < rows; r++) pruneSmallest(mask, r * cols, scores, cols, k);
}

export function nmKeep(mask: Uint8Array, scores: Arr, rows: number, cols: number, n: number, m: number): void {
  check("nmKeep", m > 0 && n < m, `N:M needs 0 <= N < M (got ${n}:${m})`);
  check("nmKeep", cols % m === 0, `cols=${cols} is not divisible by M=${m}`);
  for (let r = 0; r < rows; r++) for (let g = 0; g < cols; g += m) pruneSmallest(mask, r * cols + g, scores, m, m - n);
}

export function cholesky(a: Arr, n: number): number {
  for (let j = 0; j < n; j++) {
    let s = a[j * n + j];
    for (let p = 0; p < j; p++) s -= a[j * n + p] * a[j * n + p];
    if (!(s > 0) || !Number.isFinite(s)) return j + 1;
    const d = Math.sqrt(s);
    a[j * n + j] = d;
    for (let i = j + 1; i < n; i++) {
      let t = a[i * n + j];
      for (let p = 0; p < j; p++) t -= a[i * n + p] * a[j * n + p];
      a[i * n + j] = t / d;
    }
  }
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) a[i * n + j] = 0;
  return 0;
}

export function trtriLower(out: Arr, L: Arr, n: number): void {
  for (let i = 0; i < n; i++) check("trtriLower", L[i * n + i] !== 0, `singular: L[${i},${i}] = 0`);
  out.fill(0);
  for (let j = 0; j < n; j++)
    for (let i = j; i < n; i++) {
      let s = i === j ? 1 : 0;
      for (let p = j; p < i; p++) s -= L[i * n + p] * out[p * n + j];
      out[i * n + j] = s / L[i * n + i];
    }
}

/**
 * SparseGPT's in-block OBS pass (see native/kernels.h sparsegpt_obs): column by column, keep or zero each row's weight
 * by mask1 (N:M: chosen per row at each group's first column, the N largest w²/d², lower index on ties), Err1 =
 * (w − q)/d, and w −= err · U[i, j] for the row's later columns (double arithmetic, rounded to float32 per update).
 * Returns the OBS loss Σ (w − q)²/d²/2.
 */
export function sparsegptObs(
  W1: Float32Array,
  Err1: Float32Array,
  mask1: Uint8Array,
  U: Float32Array,
  ldu: number,
  d: Float32Array,
  rows: number,
  bs: number,
  nmN: number,
  nmM: number,
): number {
  check("sparsegptObs", ldu >= bs, `ldu=${ldu} is below bs=${bs}`);
  check("sparsegptObs", !(nmM > 0) || (nmN < nmM && bs % nmM === 0), `N:M ${nmN}:${nmM} does not fit bs=${bs}`);
  for (let i = 0; i < bs; i++) check("sparsegptObs", d[i] !== 0 && !Number.isNaN(d[i]), `d[${i}] is zero or NaN`);
  let loss = 0;
  const vals = new Float64Array(Math.max(nmM, 1));
  const idx = Array.from({ length: Math.max(nmM, 1) }, (_, j) => j);
  for (let i = 0; i < bs; i++) {
    if (nmM > 0 && i % nmM === 0)
      for (let r = 0; r < rows; r++) {
        for (let j = 0; j < nmM; j++) {
          const w = W1[r * bs + i + j];
          vals[j] = (w * w) / (d[i + j] * d[i + j]);
          idx[j] = j;
        }
        idx.sort((a, b) => vals[a] - vals[b] || a - b);
        for (let j = 0; j < nmM; j++) mask1[r * bs + i + j] = 1;
        for (let j = 0; j < nmM - nmN; j++) mask1[r * bs + i + idx[j]] = 0;
      }
    const di = d[i];
    for (let r = 0; r < rows; r++) {
      const o = r * bs;
      const w = W1[o + i];
      const q = mask1[o + i] ? w : 0;
      const err = (w - q) / di;
      loss += ((w - q) * (w - q)) / (di * di) / 2;
      W1[o + i] = q;
      Err1[o + i] = err;
      if (err !== 0) for (let j = i + 1; j < bs; j++) W1[o + j] -= err * U[i * ldu + j];
    }
  }
  return loss;
}
