// A small SVG line chart: no library, so the bundle stays small.
import type { Point } from './feed';

interface Props {
  points: Point[] | undefined;
  width?: number;
  height?: number;
  label?: string;
  testid?: string;
}

function fmt(v: number): string {
  if (Number.isInteger(v)) return String(v);
  if (Math.abs(v) >= 1000) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return Number(v.toPrecision(3)).toString();
}

export function Chart({ points, width = 260, height = 60, label, testid }: Props) {
  const pts = points ?? [];
  const pad = 2;
  if (pts.length === 0) {
    return (
      <svg className="chart" width={width} height={height} data-testid={testid} data-points="0">
        <text x={width / 2} y={height / 2} textAnchor="middle" className="chart-empty">no data yet</text>
      </svg>
    );
  }
  const t0 = pts[0][0];
  const t1 = Math.max(pts[pts.length - 1][0], t0 + 1);
  let lo = Math.min(...pts.map((p) => p[1]));
  let hi = Math.max(...pts.map((p) => p[1]));
  if (hi === lo) {
    hi += 1;
    lo -= lo === 0 ? 0 : 1;
  }
  const x = (t: number) => pad + ((t - t0) / (t1 - t0)) * (width - 2 * pad);
  const y = (v: number) => height - pad - ((v - lo) / (hi - lo)) * (height - 2 * pad);
  const d = pts.map((p, i) => `${i === 0 ? 'M' : 'L'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ');
  const last = pts[pts.length - 1][1];
  return (
    <svg
      className="chart"
      width={width}
      height={height}
      data-testid={testid}
      data-points={pts.length}
      data-last={last}
      role="img"
      aria-label={label ? `${label}: ${fmt(last)}` : fmt(last)}
    >
      <path d={d} className="chart-line" fill="none" />
      <circle cx={x(pts[pts.length - 1][0])} cy={y(last)} r={2.5} className="chart-dot" />
      <text x={width - pad} y={10} textAnchor="end" className="chart-label">{fmt(hi)}</text>
      <text x={width - pad} y={height - 3} textAnchor="end" className="chart-label">{fmt(lo)}</text>
    </svg>
  );
}
