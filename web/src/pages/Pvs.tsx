import { Chart } from '../Chart';
import type { Point } from '../feed';
import type { Snapshot } from '../types';

export function Pvs({ snap, series }: { snap: Snapshot; series: Map<string, Point[]> }) {
  return (
    <section className="card wide">
      <h2>pvAccess PVs served by this node</h2>
      {snap.pvs.length === 0 && <p className="muted">No PVs (pva.enabled, with pva.demo, pva.pvs_file or pva.bridges).</p>}
      <table data-testid="pvs">
        <thead><tr><th>PV</th><th>type</th><th>value</th><th>history</th></tr></thead>
        <tbody>
          {snap.pvs.map((pv) => (
            <tr key={pv.name} data-testid={`pv-${pv.name}`}>
              <td className="mono"><b>{pv.name}</b>{pv.writable && <span className="muted"> (writable)</span>}</td>
              <td className="muted">{pv.type.replace(/^epics:nt\//, '')}</td>
              <td className="mono value" data-testid="pv-value">{pv.display}</td>
              <td>{pv.number !== null ? <Chart points={series.get(`pv:${pv.name}`)} label={pv.name} width={240} height={44} testid="pv-chart" /> : <span className="muted">not a number</span>}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {snap.pvs_omitted > 0 && <p className="muted">{snap.pvs_omitted} more not shown.</p>}
    </section>
  );
}
