import { Chart } from '../Chart';
import type { Point } from '../feed';
import type { Snapshot } from '../types';

function rate(r: number | null): string {
  return r === null ? '—' : `${r >= 100 ? r.toFixed(0) : r.toFixed(1)}/s`;
}

export function Topics({ snap, series }: { snap: Snapshot; series: Map<string, Point[]> }) {
  const topics = snap.topics.filter((t) => !t.internal);
  return (
    <>
      <section className="card wide">
        <h2>Topics</h2>
        {topics.length === 0 && <p className="muted">No topics yet (weft topic create NAME).</p>}
        <table data-testid="topics">
          <thead>
            <tr><th>topic</th><th>partitions</th><th>records</th><th>produce</th><th></th><th>consume</th><th></th></tr>
          </thead>
          <tbody>
            {topics.map((t) => (
              <tr key={t.name} data-testid={`topic-${t.name}`}>
                <td><b>{t.name}</b></td>
                <td>{t.partitions.length}</td>
                <td>{t.partitions.reduce((a, p) => a + (p.high_watermark - p.start_offset), 0)}</td>
                <td className="num">{rate(t.produce_rate)}</td>
                <td><Chart points={series.get(`produce:${t.name}`)} label={`${t.name} produce rate`} width={200} height={40} /></td>
                <td className="num">{rate(t.consume_rate)}</td>
                <td><Chart points={series.get(`consume:${t.name}`)} label={`${t.name} consume rate`} width={200} height={40} /></td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <section className="card wide">
        <h2>Consumer groups</h2>
        {snap.groups.length === 0 && <p className="muted">No consumer groups.</p>}
        {snap.groups.map((g) => (
          <div key={g.group} className="group">
            <h3>{g.group} <span className="muted">{g.state}, {g.members} member{g.members === 1 ? '' : 's'}</span></h3>
            <table>
              <thead><tr><th>partition</th><th>lag</th><th></th></tr></thead>
              <tbody>
                {g.lag.map((l) => (
                  <tr key={`${l.topic}/${l.partition}`}>
                    <td>{l.topic}/{l.partition}</td>
                    <td className="num">{l.lag}</td>
                    <td><Chart points={series.get(`lag:${g.group}:${l.topic}:${l.partition}`)} label="lag" width={200} height={32} /></td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ))}
      </section>
    </>
  );
}
