// A progress line on stderr: done/total, rate, ETA and extra fields; redraws in place on a TTY, prints every few
// seconds otherwise. Silent when PERP_QUIET=1.
export interface ProgressEvent {
  label: string;
  done: number;
  total: number;
  unit: string;
  ratePerS: number;
  etaS: number;
  extra: string;
}

let sink: ((e: ProgressEvent) => void) | null = null;

/** Routes every progress update to `fn` (library users); null restores the stderr line. Returns the previous sink. */
export function setProgressCallback(fn: ((e: ProgressEvent) => void) | null): ((e: ProgressEvent) => void) | null {
  const prev = sink;
  sink = fn;
  return prev;
}

export class Progress {
  private readonly t0 = performance.now();
  private last = 0;
  private done = 0;
  private readonly tty = !!process.stderr.isTTY;
  private readonly quiet = process.env.PERP_QUIET === "1";

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly unit = "it",
  ) {}

  tick(n = 1, extra = ""): void {
    this.done += n;
    const now = performance.now();
    if (sink) {
      const s = (now - this.t0) / 1000;
      const rate = this.done / Math.max(s, 1e-9);
      sink({
        label: this.label,
        done: this.done,
        total: this.total,
        unit: this.unit,
        ratePerS: rate,
        etaS: rate > 0 ? (this.total - this.done) / rate : 0,
        extra,
      });
      return;
    }
    if (this.quiet || (now - this.last < (this.tty ? 100 : 5000) && this.done < this.total)) return;
    this.last = now;
    const s = (now - this.t0) / 1000;
    const rate = this.done / Math.max(s, 1e-9);
    const eta = rate > 0 ? (this.total - this.done) / rate : 0;
    const pct = this.total ? ((100 * this.done) / this.total).toFixed(0) : "?";
    const line = `${this.label} ${this.done}/${this.total} (${pct}%) ${rate.toFixed(1)} ${this.unit}/s ETA ${fmt(eta)}${extra ? ` ${extra}` : ""}`;
    process.stderr.write(this.tty ? `\r\x1b[2K${line}` : `${line}\n`);
  }

  end(): void {
    if (!sink && !this.quiet && this.tty) process.stderr.write("\n");
  }
}

function fmt(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const m = Math.floor(s / 60);
  return m ? `${m}m${Math.round(s % 60)}s` : `${s.toFixed(0)}s`;
}
