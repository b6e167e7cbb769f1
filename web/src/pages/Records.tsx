import { useEffect, useState } from 'react';
import { wsUrl } from '../feed';
import type { RecordOut, Snapshot } from '../types';

/** Records kept on screen; older ones scroll away. */
const KEEP = 200;

export function Records({ snap }: { snap: Snapshot | null }) {
  const topics = (snap?.topics ?? []).filter((t) => !t.internal);
  const [topic, setTopic] = useState('');
  const [partition, setPartition] = useState(0);
  const [from, setFrom] = useState<'latest' | 'earliest'>('earliest');
  const [records, setRecords] = useState<RecordOut[]>([]);
  const [status, setStatus] = useState('pick a topic');

  // Default to the first topic once the snapshot names one.
  const first = topics[0]?.name ?? '';
  useEffect(() => {
    if (!topic && first) setTopic(first);
  }, [topic, first]);
  const parts = topics.find((t) => t.name === topic)?.partitions.length ?? 0;

  useEffect(() => {
    if (!topic) return;
    setRecords([]);
    setStatus('connecting…');
    const path = `/v1/topics/${encodeURIComponent(topic)}/partitions/${partition}/stream?offset=${from}`;
    const ws = new WebSocket(wsUrl(path));
    let done = false;
    ws.onopen = () => {
      if (!done) setStatus(`tailing ${topic}/${partition} from ${from}`);
    };
    ws.onmessage = (ev) => {
      let msg: RecordOut | { code: string; message: string };
      try {
        msg = JSON.parse(ev.data as string);
      } catch {
        return;
      }
      if ('code' in msg) {
        setStatus(`error: ${msg.message}`);
        return;
      }
      const rec = msg;
      setRecords((rs) => [rec, ...rs].slice(0, KEEP));
    };
    ws.onclose = () => {
      if (!done) setStatus('stream closed');
    };
    return () => {
      done = true;
      // Closing while connecting makes the browser log a warning: close
      // once open instead, and ignore what arrives meanwhile.
      ws.onmessage = null;
      if (ws.readyState === WebSocket.CONNECTING) ws.onopen = () => ws.close();
      else ws.close();
    };
  }, [topic, partition, from]);

  return (
    <section className="card wide">
      <h2>Record browser</h2>
      <div className="controls">
        <label>
          topic{' '}
          <select data-testid="rec-topic" value={topic} onChange={(e) => { setTopic(e.target.value); setPartition(0); }}>
            {!topic && <option value="">—</option>}
            {topics.map((t) => <option key={t.name} value={t.name}>{t.name}</option>)}
          </select>
        </label>
        <label>
          partition{' '}
          <select data-testid="rec-partition" value={partition} onChange={(e) => setPartition(Number(e.target.value))}>
            {Array.from({ length: Math.max(parts, 1) }, (_, i) => <option key={i} value={i}>{i}</option>)}
          </select>
        </label>
        <label>
          from{' '}
          <select data-testid="rec-from" value={from} onChange={(e) => setFrom(e.target.value as 'latest' | 'earliest')}>
            <option value="earliest">earliest</option>
            <option value="latest">latest (new records only)</option>
          </select>
        </label>
        <span className="muted" data-testid="rec-status">{status}</span>
      </div>
      <table data-testid="records">
        <thead><tr><th>offset</th><th>time</th><th>key</th><th>value</th><th>headers</th></tr></thead>
        <tbody>
          {records.map((r) => (
            <tr key={r.offset} data-testid="record">
              <td className="num">{r.offset}</td>
              <td className="mono">{new Date(r.timestamp_ms).toISOString().replace('T', ' ').replace('Z', '')}</td>
              <td className="mono">{r.key ?? <span className="muted">null</span>}</td>
              <td className="mono value">{r.value ?? <span className="muted">null</span>}{r.encoding === 'base64' && <span className="muted"> (base64)</span>}</td>
              <td className="mono">{Object.entries(r.headers).map(([k, v]) => `${k}=${v}`).join(' ')}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {records.length === 0 && topic && <p className="muted">No records yet; new ones appear here as they are produced.</p>}
    </section>
  );
}
