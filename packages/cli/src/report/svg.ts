/** Tiny helpers to write SVG and HTML as strings (no DOM, no dependencies). */
export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export type Attrs = Readonly<Record<string, string | number | undefined>>;

export function attrs(a: Attrs): string {
  return Object.entries(a)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ` ${k}="${esc(typeof v === 'number' ? String(Math.round(v * 100) / 100) : String(v))}"`)
    .join('');
}

export const el = (tag: string, a: Attrs, body = ''): string => `<${tag}${attrs(a)}>${body}</${tag}>`;
export const leaf = (tag: string, a: Attrs): string => `<${tag}${attrs(a)}/>`;
