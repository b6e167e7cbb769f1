import type { Snapshot } from '../types';

function duration(s: number): string {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return d > 0 ? `${d}d ${h}h ${m}m` : h > 0 ? `${h}h ${m}m ${sec}s` : `${m}m ${sec}s`;
}

interface ClusterStatus {
  node_id: number;
  roles: string[];
  meta_leader: number | null;
  nodes: { id: number; cluster_addr: string | null; native_addr: string | null; roles: string[]; voter: boolean; live: boolean; last_contact_ms: number | null }[];
  partitions: { topic: string; partition: number; replicas: number[]; leader: number | null; in_sync: number[]; high_watermark: number | null }[];
  groups: { group: number; leader: number; term: number; role: string; commit: number }[];
}

function ClusterView({ c }: { c: ClusterStatus }) {
  return (
    <>
      <p>
        this node: <b>{c.node_id}</b> · metadata leader: <b>{c.meta_leader ?? 'unknown'}</b>
      </p>
      <table>
        <thead><tr><th>node</th><th>roles</th><th>voter</th><th>state</th><th>native</th><th>raft</th></tr></thead>
        <tbody>
          {(c.nodes ?? []).map((x) => (
            <tr key={x.id}>
              <td>{x.id}{x.id === c.meta_leader ? ' ★' : ''}</td>
              <td>{(x.roles ?? []).join(', ')}</td>
              <td>{x.voter ? 'yes' : 'learner'}</td>
              <td><span className={`badge ${x.live ? 'ok' : 'bad'}`}>{x.live ? 'live' : 'unreachable'}</span></td>
              <td className="mono">{x.native_addr ?? ''}</td>
              <td className="mono">{x.cluster_addr ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {(c.partitions ?? []).length > 0 && (
        <table>
          <thead><tr><th>partition</th><th>leader</th><th>replicas</th><th>in sync</th><th>high watermark</th></tr></thead>
          <tbody>
            {c.partitions.map((p) => (
              <tr key={`${p.topic}/${p.partition}`}>
                <td>{p.topic}/{p.partition}</td>
                <td>{p.leader ?? '—'}</td>
                <td>{p.replicas.join(', ')}</td>
                <td>{p.in_sync.join(', ')}</td>
                <td>{p.high_watermark ?? '—'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

export function Overview({ snap }: { snap: Snapshot }) {
  const n = snap.node;
  const cluster = snap.cluster;
  const userTopics = snap.topics.filter((t) => !t.internal);
  return (
    <div className="grid">
      <section className="card">
        <h2>Node</h2>
        <dl>
          <dt>name</dt><dd data-testid="node-name">{n.name}</dd>
          <dt>id</dt><dd className="mono">{n.id}</dd>
          <dt>version</dt><dd>{n.version}</dd>
          <dt>uptime</dt><dd>{duration(n.uptime_s)}</dd>
          <dt>mode</dt><dd>{cluster ? 'cluster member' : 'single node'}</dd>
        </dl>
      </section>
      <section className="card">
        <h2>Health <span className={`badge ${n.ready ? 'ok' : 'bad'}`} data-testid="ready">{n.ready ? 'ready' : 'not ready'}</span></h2>
        <table>
          <tbody>
            {n.checks.map((c) => (
              <tr key={c.name}>
                <td>{c.name}</td>
                <td><span className={`badge ${c.ok ? 'ok' : 'bad'}`}>{c.ok ? 'ok' : 'failing'}</span></td>
                <td className="muted">{c.detail}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <section className="card">
        <h2>Listeners</h2>
        <ul className="mono plain">
          {n.listeners.map((l) => <li key={l}>{l}</li>)}
        </ul>
      </section>
      <section className="card">
        <h2>At a glance</h2>
        <dl>
          <dt>topics</dt><dd>{userTopics.length}</dd>
          <dt>partitions</dt><dd>{userTopics.reduce((a, t) => a + t.partitions.length, 0)}</dd>
          <dt>groups</dt><dd>{snap.groups.length}</dd>
          <dt>queues</dt><dd>{snap.queues.length} ({snap.queues.reduce((a, q) => a + q.errors, 0)} in error queues)</dd>
          <dt>PVs</dt><dd>{snap.pvs.length + snap.pvs_omitted}</dd>
        </dl>
      </section>
      {cluster && (
        <section className="card wide" data-testid="cluster">
          <h2>Cluster</h2>
          {'error' in cluster ? (
            <p className="bad">{String(cluster.error)}</p>
          ) : (
            <ClusterView c={cluster as unknown as ClusterStatus} />
          )}
        </section>
      )}
    </div>
  );
}
