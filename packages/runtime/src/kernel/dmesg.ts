/** The kernel log: what a kernel engineer greps for ("disabling KHO revival"). */
export type LogLevel = 'err' | 'warn' | 'notice' | 'info' | 'debug';

export interface LogLine {
  readonly level: LogLevel;
  /** pr_fmt prefix without ": " (e.g. 'KHO', 'liveupdate'). */
  readonly prefix: string;
  readonly text: string;
}

export class Dmesg {
  private readonly buf: LogLine[] = [];
  log(level: LogLevel, prefix: string, text: string): void { this.buf.push({ level, prefix, text }); }
  get entries(): readonly LogLine[] { return this.buf; }
  /** Lines as `dmesg` prints them without timestamps. */
  lines(): string[] { return this.buf.map((l) => (l.prefix ? `${l.prefix}: ${l.text}` : l.text)); }
  text(): string { return this.lines().join('\n'); }
  grep(needle: string | RegExp): string[] {
    return this.lines().filter((l) => (typeof needle === 'string' ? l.includes(needle) : needle.test(l)));
  }
}
